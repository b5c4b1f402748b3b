package modbussim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/simonvetter/modbus"
)

// TCPServer is a Modbus TCP server of a Slave, started by StartTCP.
type TCPServer struct {
	s      *Slave
	url    string
	srv    *modbus.ModbusServer
	ctx    context.Context // cancelled by Close: releases held requests
	cancel context.CancelFunc
	once   sync.Once
	err    error
}

// StartTCP serves Modbus TCP on url ("tcp://host:port"; port 0 picks a
// free port, see URL) with simonvetter/modbus's server, and returns once
// it listens. Close or Slave.Close stops it.
//
// The server reads one request at a time per connection, at most 10
// connections, closing one idle for 2 minutes. A request it cannot
// decode (a quantity out of range, a bad byte count) closes the
// connection, as simonvetter's server does; exceptions otherwise are as
// on the RTU slave. A request for a unit not served is answered with
// exception 0x0A (gateway path unavailable); one for a dead unit is held
// for Config.DeadHold, then answered with exception 0x0B (gateway target
// device failed to respond), both as a Modbus TCP gateway would.
func (s *Slave) StartTCP(url string) (*TCPServer, error) {
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.wg.Done() // only StartTCP itself: the server is stopped by Close
	var lastErr error
	for range 3 { // a free port picked for port 0 may be taken before the server binds it
		resolved, err := resolveTCP(url)
		if err != nil {
			return nil, err
		}
		t := &TCPServer{s: s, url: resolved}
		t.ctx, t.cancel = context.WithCancel(s.ctx)
		t.srv, err = modbus.NewServer(&modbus.ServerConfiguration{
			URL:    resolved,
			Logger: slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelDebug),
		}, &tcpHandler{s: s, ctx: t.ctx})
		if err != nil {
			t.cancel()
			return nil, fmt.Errorf("modbussim: tcp server %s: %w", url, err)
		}
		if lastErr = t.srv.Start(); lastErr != nil {
			t.cancel()
			if resolved != url {
				continue
			}
			break
		}
		s.mu.Lock()
		closed := s.mu.closed
		if !closed {
			s.mu.servers[t] = struct{}{}
		}
		s.mu.Unlock()
		if closed {
			t.cancel()
			return nil, errors.Join(ErrClosed, t.srv.Stop())
		}
		s.cfg.Logger.Info("modbussim: serving Modbus TCP", "url", resolved, "units", s.unitList())
		return t, nil
	}
	return nil, fmt.Errorf("modbussim: tcp server %s: %w", url, lastErr)
}

// ServeTCP serves Modbus TCP on url like StartTCP until ctx ends or the
// slave closes; it returns nil then.
func (s *Slave) ServeTCP(ctx context.Context, url string) error {
	t, err := s.StartTCP(url)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-t.ctx.Done():
	}
	return t.Close()
}

// resolveTCP checks url and, for port 0, picks a free port.
func resolveTCP(url string) (string, error) {
	hostport, ok := strings.CutPrefix(url, "tcp://")
	if !ok {
		return "", fmt.Errorf("modbussim: tcp url %q: want tcp://host:port", url)
	}
	_, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", fmt.Errorf("modbussim: tcp url %q: %w", url, err)
	}
	if port != "0" {
		return url, nil
	}
	ln, err := net.Listen("tcp", hostport)
	if err != nil {
		return "", fmt.Errorf("modbussim: tcp url %q: %w", url, err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return "", fmt.Errorf("modbussim: tcp url %q: %w", url, err)
	}
	return "tcp://" + addr, nil
}

// URL is where the server listens, with the port it picked for port 0.
func (t *TCPServer) URL() string { return t.url }

// Close stops the server: it closes the listener and every connection
// and releases held requests. simonvetter's connection goroutines end as
// their sockets close; its server gives no way to wait for them.
func (t *TCPServer) Close() error {
	t.once.Do(func() {
		t.cancel()
		t.s.mu.Lock()
		delete(t.s.mu.servers, t)
		t.s.mu.Unlock()
		if err := t.srv.Stop(); err != nil {
			t.err = fmt.Errorf("modbussim: stop tcp server %s: %w", t.url, err)
		}
		t.s.cfg.Logger.Info("modbussim: stopped Modbus TCP", "url", t.url)
	})
	return t.err
}

// tcpHandler is the simonvetter RequestHandler of one TCPServer.
type tcpHandler struct {
	s   *Slave
	ctx context.Context
}

func (h *tcpHandler) HandleCoils(r *modbus.CoilsRequest) ([]bool, error) {
	res, err := h.do(&request{unit: r.UnitId, table: Coils, write: r.IsWrite, addr: r.Addr, qty: r.Quantity, bools: r.Args})
	return res.bools, err
}

func (h *tcpHandler) HandleDiscreteInputs(r *modbus.DiscreteInputsRequest) ([]bool, error) {
	res, err := h.do(&request{unit: r.UnitId, table: DiscreteInputs, addr: r.Addr, qty: r.Quantity})
	return res.bools, err
}

func (h *tcpHandler) HandleHoldingRegisters(r *modbus.HoldingRegistersRequest) ([]uint16, error) {
	res, err := h.do(&request{unit: r.UnitId, table: HoldingRegisters, write: r.IsWrite, addr: r.Addr, qty: r.Quantity, regs: r.Args})
	return res.regs, err
}

func (h *tcpHandler) HandleInputRegisters(r *modbus.InputRegistersRequest) ([]uint16, error) {
	res, err := h.do(&request{unit: r.UnitId, table: InputRegisters, addr: r.Addr, qty: r.Quantity})
	return res.regs, err
}

// do runs one request: the errors it returns are simonvetter's, which
// its server turns into exception codes.
func (h *tcpHandler) do(req *request) (result, error) {
	st := h.s.state(req.unit)
	if !st.served {
		h.s.stats.exceptions.Add(1)
		return result{}, modbus.ErrGWPathUnavailable
	}
	h.s.stats.requests.Add(1)
	if st.dead {
		h.s.stats.silent.Add(1)
		h.hold(st.revived)
		return result{}, modbus.ErrGWTargetFailedToRespond
	}
	if !h.s.sleep(h.ctx, st.delay) {
		return result{}, modbus.ErrServerDeviceBusy // the server is closing: nobody reads this
	}
	res := h.s.apply(req)
	if res.exc != 0 {
		return result{}, exceptionErrors[res.exc]
	}
	return res, nil
}

// hold waits Config.DeadHold, or until the unit comes back or the server
// stops.
func (h *tcpHandler) hold(revived <-chan struct{}) {
	t := time.NewTimer(h.s.cfg.DeadHold)
	defer t.Stop()
	select {
	case <-t.C:
	case <-revived:
	case <-h.ctx.Done():
	}
}
