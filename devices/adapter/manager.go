package adapter

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-iot/ferry/broker/ratelog"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// Sink takes what the adapters read. Its methods are called from bus
// goroutines and must not wait for the disk: they queue the record and
// return, failing only when it cannot be queued at all.
type Sink interface {
	// Telemetry stores one record for device: its values sampled at ts
	// (milliseconds). bus names the producer, for the commit policy.
	Telemetry(bus string, device Info, ts int64, values []tb.KV) error
	// Attributes stores client attributes read from device.
	Attributes(bus string, device Info, ts int64, attrs []tb.KV) error
}

// Info names a device for the sink and the API.
type Info struct {
	Name, Type, Bus, Kind, Driver string
}

// BusSettings is one bus.
type BusSettings struct {
	Name, Kind string
	// Line is the bus's connection, closed when the manager closes (nil:
	// nothing to close).
	Line io.Closer
	// DegradeAfter failed cycles in a row put a device aside for
	// DegradeFor (0: 3 and 30 s).
	DegradeAfter int
	DegradeFor   time.Duration
}

// DeviceSettings is one adapter device.
type DeviceSettings struct {
	Info
	Poll   time.Duration
	Report Report
	Source Source
}

// Config is what a Manager needs besides its buses and devices.
type Config struct {
	Sink    Sink
	Logger  *slog.Logger
	Metrics *Metrics // nil: not exported
}

// Manager runs every bus and its devices.
type Manager struct {
	cfg     Config
	warn    *ratelog.Limiter // one line a minute per device and kind
	buses   []*bus
	devices map[string]*device
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	started bool
	closed  bool

	onOnline atomic.Pointer[func(device string)]
}

// OnOnline sets fn to be called (on the bus goroutine; it must not block)
// when a device answers again after failing: the commands dispatcher
// retries what waited for it.
func (m *Manager) OnOnline(fn func(device string)) { m.onOnline.Store(&fn) }

// OnlineCount is the number of devices whose polls succeed.
func (m *Manager) OnlineCount() int {
	if m == nil {
		return 0
	}
	n := 0
	for _, d := range m.devices {
		if d.online() {
			n++
		}
	}
	return n
}

// Defaults for BusSettings.
const (
	DefaultDegradeAfter = 3
	DefaultDegradeFor   = 30 * time.Second
)

// New builds a manager; nothing runs before Start.
func New(cfg Config, buses []BusSettings, devices []DeviceSettings) (*Manager, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Sink == nil {
		return nil, fmt.Errorf("%w: no sink", ErrInvalidConfig)
	}
	m := &Manager{cfg: cfg, warn: ratelog.New(), devices: map[string]*device{}}
	byName := map[string]*bus{}
	for _, bs := range buses {
		if _, dup := byName[bs.Name]; dup {
			return nil, fmt.Errorf("%w: bus %q repeated", ErrInvalidConfig, bs.Name)
		}
		if bs.DegradeAfter <= 0 {
			bs.DegradeAfter = DefaultDegradeAfter
		}
		if bs.DegradeFor <= 0 {
			bs.DegradeFor = DefaultDegradeFor
		}
		b := newBus(m, bs)
		byName[bs.Name] = b
		m.buses = append(m.buses, b)
	}
	for _, ds := range devices {
		b := byName[ds.Bus]
		switch {
		case b == nil:
			return nil, fmt.Errorf("%w: device %q names bus %q, which is not configured", ErrInvalidConfig, ds.Name, ds.Bus)
		case m.devices[ds.Name] != nil:
			return nil, fmt.Errorf("%w: device %q repeated", ErrInvalidConfig, ds.Name)
		case ds.Poll <= 0:
			return nil, fmt.Errorf("%w: device %q: poll must be positive", ErrInvalidConfig, ds.Name)
		case ds.Source == nil:
			return nil, fmt.Errorf("%w: device %q has no source", ErrInvalidConfig, ds.Name)
		}
		if err := ds.Report.Validate(); err != nil {
			return nil, fmt.Errorf("%w: device %q: %w", ErrInvalidConfig, ds.Name, err)
		}
		ds.Kind = b.kind
		d := newDevice(b, ds)
		m.devices[ds.Name] = d
		b.devs = append(b.devs, d)
	}
	return m, nil
}

// Start starts every bus.
func (m *Manager) Start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started || m.closed {
		return ErrClosed
	}
	m.started = true
	m.ctx, m.cancel = context.WithCancel(context.Background())
	for _, b := range m.buses {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			b.run(m.ctx)
		}()
		for _, d := range b.devs {
			if w, ok := d.src.(Watcher); ok {
				m.wg.Add(1)
				go func() {
					defer m.wg.Done()
					d.watch(m.ctx, w)
				}()
			}
		}
	}
	return nil
}

// Close stops every bus (a poll in progress finishes first) and closes
// the buses' lines and the sources that are io.Closers.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	if m.cancel != nil {
		m.cancel()
	}
	m.mu.Unlock()
	m.wg.Wait()
	var first error
	for _, b := range m.buses {
		for _, d := range b.devs {
			if c, ok := d.src.(io.Closer); ok {
				if err := c.Close(); err != nil && first == nil {
					first = fmt.Errorf("adapter: device %s: %w", d.info.Name, err)
				}
			}
		}
		if b.line != nil {
			if err := b.line.Close(); err != nil && first == nil {
				first = fmt.Errorf("adapter: bus %s: %w", b.name, err)
			}
		}
	}
	return first
}

// Has reports whether device is an adapter device.
func (m *Manager) Has(device string) bool { return m != nil && m.devices[device] != nil }

// Online reports whether device's last poll succeeded (or, for a device
// only watched, its watch runs).
func (m *Manager) Online(device string) bool {
	if m == nil {
		return false
	}
	if d := m.devices[device]; d != nil {
		return d.online()
	}
	return false
}

// RPC runs method on device through its bus, between polls: an rpc entry
// written with params, or read when the entry is read-only or params are
// absent (the source decides). It returns ErrUnknownDevice,
// ErrNotSupported, or the source's error (ErrUnknownMethod, a Modbus
// exception...).
func (m *Manager) RPC(ctx context.Context, device, method string, params json.RawMessage) (json.RawMessage, error) {
	if !m.Has(device) {
		return nil, fmt.Errorf("%w: %q", ErrUnknownDevice, device)
	}
	d := m.devices[device]
	c, ok := d.src.(Caller)
	if !ok {
		return nil, fmt.Errorf("%w: %s (%s)", ErrNotSupported, device, d.info.Kind)
	}
	var out json.RawMessage
	err := d.bus.do(ctx, func(ctx context.Context) error {
		var err error
		out, err = c.Call(ctx, method, params)
		return err
	})
	d.bus.m.cfg.Metrics.rpc(d, err)
	return out, err
}

// SharedAttributes writes shared attribute updates to device through its
// attribute_updates entries; keys without an entry are ignored. It
// returns the keys written.
func (m *Manager) SharedAttributes(ctx context.Context, device string, kvs []tb.KV) ([]string, error) {
	if !m.Has(device) {
		return nil, fmt.Errorf("%w: %q", ErrUnknownDevice, device)
	}
	d := m.devices[device]
	w, ok := d.src.(AttributeWriter)
	if !ok {
		return nil, nil
	}
	var written []string
	err := d.bus.do(ctx, func(ctx context.Context) error {
		for _, kv := range kvs {
			handled, err := w.WriteAttribute(ctx, kv.Key, kv.Value)
			if err != nil {
				return fmt.Errorf("attribute %s: %w", kv.Key, err)
			}
			if handled {
				written = append(written, kv.Key)
			}
		}
		return nil
	})
	return written, err
}
