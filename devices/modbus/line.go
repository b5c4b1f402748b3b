package modbus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	mb "github.com/simonvetter/modbus"

	"github.com/ferry-iot/ferry/devices/adapter"
)

// Line is one Modbus bus's connection. Its units' requests run one at a
// time (the adapter's bus goroutine calls it; the mutex keeps that true
// for any other caller), with the configured silence between them.
//
// Failures are classified once, here: a Modbus exception is the device's
// answer and leaves the connection alone; anything else — a timeout, a
// garbled or mismatched frame, an I/O error — closes the connection, so a
// late answer still on its way cannot be taken for the next request's
// (reopening a serial port discards its input; a TCP peer that went
// silent is usually gone), and the next request reconnects — at once after a working connection
// failed, then with backoff doubling to ReconnectMax, forever.
type Line struct {
	cfg BusConfig

	mu       sync.Mutex
	client   *mb.ModbusClient
	open     bool
	backoff  time.Duration
	nextDial time.Time
	lastEnd  time.Time // when the last answer (or timeout) ended
	dialErr  error
	stats    LineStats
}

// LineStats counts a line's connections.
type LineStats struct {
	Connects, ConnectFailures, Resyncs uint64
}

// NewLine prepares a line; it connects on the first request.
func NewLine(cfg BusConfig) (*Line, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("modbus: %w", err)
	}
	cfg = cfg.WithDefaults()
	parity := mb.PARITY_NONE
	switch strings.ToUpper(cfg.Parity) {
	case "E":
		parity = mb.PARITY_EVEN
	case "O":
		parity = mb.PARITY_ODD
	}
	client, err := mb.NewClient(&mb.ClientConfiguration{
		URL: cfg.URL, Speed: uint(cfg.Baud), DataBits: uint(cfg.DataBits), Parity: parity,
		StopBits: uint(cfg.StopBits), Timeout: cfg.Timeout,
		Logger: log.New(io.Discard, "", 0), // errors are returned and counted, not printed
	})
	if err != nil {
		return nil, fmt.Errorf("modbus: %s: %w", cfg.URL, err)
	}
	return &Line{cfg: cfg, client: client}, nil
}

// Stats returns the line's connection counters.
func (l *Line) Stats() LineStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// Close closes the connection.
func (l *Line) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.open {
		return nil
	}
	l.open = false
	return l.client.Close()
}

// do runs one request for unit with the line held.
func (l *Line) do(ctx context.Context, unit uint8, req func(c *mb.ModbusClient) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.connectLocked(); err != nil {
		return err
	}
	if wait := time.Until(l.lastEnd.Add(l.cfg.DelayBetweenRequests)); wait > 0 {
		if err := adapter.Sleep(ctx, wait); err != nil {
			return err
		}
	}
	if err := l.client.SetUnitId(unit); err != nil {
		return adapter.Errorf(adapter.KindDevice, err)
	}
	err := req(l.client)
	l.lastEnd = time.Now()
	if err == nil {
		return nil
	}
	kind := classify(err)
	if kind != adapter.KindException {
		// Resync: drop the connection (and whatever is in flight on it).
		l.stats.Resyncs++
		l.open = false
		_ = l.client.Close()
		l.nextDial = time.Time{} // reconnect at once; backoff if that fails
	}
	return adapter.Errorf(kind, fmt.Errorf("modbus: unit %d: %w", unit, err))
}

// connectLocked opens the connection if needed, within the backoff.
func (l *Line) connectLocked() error {
	if l.open {
		return nil
	}
	if now := time.Now(); now.Before(l.nextDial) {
		return adapter.Errorf(adapter.KindConnection,
			fmt.Errorf("modbus: %s is down (next attempt in %v): %w", l.cfg.URL, l.nextDial.Sub(now).Round(time.Millisecond), l.dialErr))
	}
	if err := l.client.Open(); err != nil {
		l.stats.ConnectFailures++
		l.backoff = min(max(2*l.backoff, 250*time.Millisecond), l.cfg.ReconnectMax)
		// ±20 % jitter so lines restarted together do not retry together.
		jit := time.Duration(float64(l.backoff) * (0.8 + 0.4*rand.Float64()))
		l.nextDial = time.Now().Add(jit)
		l.dialErr = err
		return adapter.Errorf(adapter.KindConnection, fmt.Errorf("modbus: connect %s: %w", l.cfg.URL, err))
	}
	l.stats.Connects++
	l.open = true
	l.backoff = 0
	l.lastEnd = time.Time{}
	return nil
}

// classify is the one place that decides what a library error means.
func classify(err error) string {
	switch {
	case errors.Is(err, mb.ErrRequestTimedOut), errors.Is(err, context.DeadlineExceeded):
		return adapter.KindTimeout
	case errors.Is(err, mb.ErrIllegalFunction), errors.Is(err, mb.ErrIllegalDataAddress),
		errors.Is(err, mb.ErrIllegalDataValue), errors.Is(err, mb.ErrServerDeviceFailure),
		errors.Is(err, mb.ErrAcknowledge), errors.Is(err, mb.ErrServerDeviceBusy),
		errors.Is(err, mb.ErrMemoryParityError), errors.Is(err, mb.ErrGWPathUnavailable),
		errors.Is(err, mb.ErrGWTargetFailedToRespond):
		// The device (or its gateway) answered: an exception response.
		return adapter.KindException
	case errors.Is(err, mb.ErrBadCRC), errors.Is(err, mb.ErrShortFrame), errors.Is(err, mb.ErrProtocolError),
		errors.Is(err, mb.ErrBadUnitId), errors.Is(err, mb.ErrBadTransactionId),
		errors.Is(err, mb.ErrUnknownProtocolId), errors.Is(err, mb.ErrUnexpectedParameters):
		return adapter.KindProtocol
	}
	return adapter.KindConnection // EOF, reset, broken pipe: the connection is gone
}
