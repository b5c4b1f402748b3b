package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ferry-iot/ferry/broker/commands"
	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/mqtt"
	"github.com/ferry-iot/ferry/broker/ratelog"
	"github.com/ferry-iot/ferry/broker/registry"
	"github.com/ferry-iot/ferry/configs"
	"github.com/ferry-iot/ferry/devices/adapter"
	"github.com/ferry-iot/ferry/devices/gpio"
	"github.com/ferry-iot/ferry/devices/i2c"
	"github.com/ferry-iot/ferry/devices/iio"
	"github.com/ferry-iot/ferry/devices/modbus"
	"github.com/ferry-iot/ferry/devices/onewire"
	"github.com/ferry-iot/ferry/devices/spi"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// BusConfig is one entry of buses: a line the adapters serialize their
// requests on. Exactly one kind is set.
type BusConfig struct {
	Name    string             `mapstructure:"name"`
	Modbus  *modbus.BusConfig  `mapstructure:"modbus"`
	I2C     *i2c.BusConfig     `mapstructure:"i2c"`
	SPI     *spi.BusConfig     `mapstructure:"spi"`
	OneWire *onewire.BusConfig `mapstructure:"onewire"`
	GPIO    *gpio.BusConfig    `mapstructure:"gpio"`
	IIO     *iio.BusConfig     `mapstructure:"iio"`
}

// SourceConfig is a device's source section: the device is read by an
// adapter on a bus instead of connecting over MQTT. A Modbus unit's
// settings and a sensor's sit side by side; the bus's kind says which
// apply.
type SourceConfig struct {
	Bus    string         `mapstructure:"bus"`
	Poll   time.Duration  `mapstructure:"poll"`
	Report adapter.Report `mapstructure:"report"`

	modbus.DeviceConfig  `mapstructure:",squash"`
	adapter.SensorConfig `mapstructure:",squash"`
}

// busKind is one kind of bus: its key, whether a BusConfig sets it, its
// validation, and how its devices are checked and opened.
type busKind struct {
	name     string
	set      func(b BusConfig) bool
	validate func(b BusConfig) error
	device   func(s adapter.SensorConfig) error // sensor kinds: ValidateDevice
	open     func(b BusConfig) (sensorBus, error)
}

// sensorBus is an open sensor bus (every kind but Modbus).
type sensorBus interface {
	Source(cfg adapter.SensorConfig) (adapter.Source, error)
	Close() error
}

var busKinds = []busKind{
	{name: "modbus", set: func(b BusConfig) bool { return b.Modbus != nil },
		validate: func(b BusConfig) error { return b.Modbus.Validate() }},
	{name: "i2c", set: func(b BusConfig) bool { return b.I2C != nil },
		validate: func(b BusConfig) error { return b.I2C.Validate() }, device: i2c.ValidateDevice,
		open: func(b BusConfig) (sensorBus, error) { return i2c.Open(*b.I2C) }},
	{name: "spi", set: func(b BusConfig) bool { return b.SPI != nil },
		validate: func(b BusConfig) error { return b.SPI.Validate() }, device: spi.ValidateDevice,
		open: func(b BusConfig) (sensorBus, error) { return spi.Open(*b.SPI) }},
	{name: "onewire", set: func(b BusConfig) bool { return b.OneWire != nil },
		validate: func(b BusConfig) error { return b.OneWire.Validate() }, device: onewire.ValidateDevice,
		open: func(b BusConfig) (sensorBus, error) { return onewire.Open(*b.OneWire) }},
	{name: "gpio", set: func(b BusConfig) bool { return b.GPIO != nil },
		validate: func(b BusConfig) error { return b.GPIO.Validate() }, device: gpio.ValidateDevice,
		open: func(b BusConfig) (sensorBus, error) { return gpio.Open(*b.GPIO) }},
	{name: "iio", set: func(b BusConfig) bool { return b.IIO != nil },
		validate: func(b BusConfig) error { return b.IIO.Validate() }, device: iio.ValidateDevice,
		open: func(b BusConfig) (sensorBus, error) { return iio.Open(*b.IIO) }},
}

// kinds are the bus kinds b sets.
func (b BusConfig) kinds() []*busKind {
	var out []*busKind
	for i := range busKinds {
		if busKinds[i].set(b) {
			out = append(out, &busKinds[i])
		}
	}
	return out
}

// kind is b's kind (validated: exactly one).
func (b BusConfig) kind() *busKind { return b.kinds()[0] }

// validateAdapters checks buses and the devices' source sections.
func (c *Config) validateAdapters(p *configs.Problems) {
	buses := map[string]int{}
	for i, b := range c.Buses {
		key := fmt.Sprintf("buses[%d]", i)
		if err := checkDeviceName(b.Name); err != nil {
			p.Add(key+".name", "%v", err)
		} else if j, dup := buses[b.Name]; dup {
			p.Add(key+".name", "%q repeats buses[%d]", b.Name, j)
		} else {
			buses[b.Name] = i
		}
		kinds := b.kinds()
		switch len(kinds) {
		case 0:
			p.Add(key, "names no bus kind (modbus, i2c, spi, onewire, gpio or iio)")
		case 1:
		default:
			p.Add(key, "sets %s and %s: one bus kind per entry", kinds[0].name, kinds[1].name)
		}
		for _, k := range kinds {
			p.Nest(key+"."+k.name, k.validate(b))
		}
	}
	for i, d := range c.Devices {
		if d.Source == nil {
			continue
		}
		key := fmt.Sprintf("devices[%d].source", i)
		s := d.Source
		j, ok := buses[s.Bus]
		switch {
		case s.Bus == "":
			p.Add(key+".bus", "is required")
			continue
		case !ok:
			p.Add(key+".bus", "%q is not in buses", s.Bus)
			continue
		}
		if s.Poll <= 0 {
			p.Add(key+".poll", "is required: how often the device is read (poll: 5s)")
		}
		p.Nest(key+".report", s.Report.Validate())
		b := c.Buses[j]
		if len(b.kinds()) != 1 {
			continue // reported with the bus
		}
		switch k := b.kind(); {
		case b.Modbus != nil:
			p.Nest(key, s.DeviceConfig.Validate(*b.Modbus))
			if s.Driver != "" {
				p.Add(key+".driver", "applies to sensor buses; %q is a Modbus bus (name registers in timeseries)", s.Bus)
			}
		default:
			p.Nest(key, k.device(s.SensorConfig))
			if s.DeviceConfig.IsModbus() || s.ByteOrder != "" || s.MaxRegistersPerRequest != 0 || s.MaxReadGap != 0 {
				p.Add(key, "unit, timeseries, attributes, rpc, attribute_updates and the other register settings apply to Modbus buses; %q is a bus of kind %s", s.Bus, k.name)
			}
		}
	}
}

// startAdapters builds the buses and devices of the configuration and
// starts polling (nothing configured: nothing runs). On an error the
// buses it opened are closed again.
func (d *Daemon) startAdapters() (err error) {
	if len(d.cfg.Buses) == 0 {
		return nil
	}
	sink, err := newAdapterSink(d)
	if err != nil {
		return err
	}
	var buses []adapter.BusSettings
	defer func() {
		if err != nil && d.adapters == nil {
			for _, bs := range buses {
				if bs.Line != nil {
					_ = bs.Line.Close()
				}
			}
		}
	}()
	lines := map[string]*modbus.Line{}
	sensors := map[string]sensorBus{}
	openErr := map[string]error{}
	for i, b := range d.cfg.Buses {
		k := b.kind()
		bs := adapter.BusSettings{Name: b.Name, Kind: k.name}
		if b.Modbus != nil {
			line, err := modbus.NewLine(*b.Modbus)
			if err != nil {
				return fmt.Errorf("buses[%d] (%s): %w", i, b.Name, err)
			}
			lines[b.Name] = line
			bs.Line = line
			bs.DegradeAfter, bs.DegradeFor = b.Modbus.DegradeAfter, b.Modbus.DegradeFor
		} else {
			// A missing bus (I²C not enabled, no such chip) must not stop
			// the daemon: its devices fail every poll with the reason, in
			// the API, the metrics and /healthz, until it is fixed and
			// Ferry restarted.
			sb, err := k.open(b)
			if err != nil {
				openErr[b.Name] = err
				d.logger.Error("adapter bus not opened: its devices will report this at every poll", "bus", b.Name,
					"key", fmt.Sprintf("buses[%d].%s", i, k.name), "err", err)
			} else {
				sensors[b.Name] = sb
				bs.Line = sb
			}
		}
		buses = append(buses, bs)
	}
	d.adapterBusErrs = openErr
	var devs []adapter.DeviceSettings
	for i, dc := range d.cfg.Devices {
		if dc.Source == nil {
			continue
		}
		s := dc.Source
		ds := adapter.DeviceSettings{Info: adapter.Info{Name: dc.Name, Type: dc.Type, Bus: s.Bus},
			Poll: s.Poll, Report: s.Report}
		switch {
		case lines[s.Bus] != nil:
			dev, err := modbus.NewDevice(lines[s.Bus], s.DeviceConfig)
			if err != nil {
				return fmt.Errorf("devices[%d].source (%s): %w", i, dc.Name, err)
			}
			ds.Source, ds.Driver = dev, "modbus"
		case sensors[s.Bus] != nil:
			src, err := sensors[s.Bus].Source(s.SensorConfig)
			if err != nil {
				return fmt.Errorf("devices[%d].source (%s): %w", i, dc.Name, err)
			}
			ds.Source, ds.Driver = src, s.Driver
		default:
			ds.Source, ds.Driver = failedSource{openErr[s.Bus]}, s.Driver
		}
		sink.addDevice(dc)
		devs = append(devs, ds)
	}
	d.adapters, err = adapter.New(adapter.Config{Sink: sink, Logger: d.logger, Metrics: d.adapterM}, buses, devs)
	if err != nil {
		return err
	}
	sink.start()
	d.adapterSink = sink
	return d.adapters.Start()
}

// failedSource stands for a device whose bus could not be opened: every
// poll fails with the reason.
type failedSource struct{ err error }

func (f failedSource) Read(context.Context) (adapter.Reading, error) { return adapter.Reading{}, f.err }

// adapterWarnings are the buses that could not be opened, for /healthz.
func (d *Daemon) adapterWarnings() []string {
	var out []string
	for i, b := range d.cfg.Buses {
		if err := d.adapterBusErrs[b.Name]; err != nil {
			out = append(out, fmt.Sprintf("buses[%d] (%s) not opened: %v", i, b.Name, err))
		}
	}
	return out
}

// closeAdapters stops polling, then waits for the records already queued.
func (d *Daemon) closeAdapters() error {
	if d.adapters == nil {
		return nil
	}
	err := d.adapters.Close()
	d.adapterSink.close()
	return err
}

// adapterSink stores what the adapters read: telemetry and client
// attributes in the same topics, with the same keys and headers, as an
// MQTT device's, attributes in the registry too. It never waits for the
// disk on a bus goroutine: appends are queued and one goroutine waits for
// their futures, counting and logging what the log refused.
type adapterSink struct {
	d          *Daemon
	telemetry  *commitlog.Topic
	attributes *commitlog.Topic
	headers    map[string][]commitlog.Header
	buses      map[string]*sinkBus
	pending    chan pendingAppend
	done       chan struct{}
	warn       *ratelog.Limiter
}

// sinkBus is one bus's producer and scratch space: appends copy their
// records, so one buffer serves every record of the bus (a bus goroutine
// and its devices' watches append, hence the lock).
type sinkBus struct {
	src  commitlog.Source // detached
	ctx  context.Context  // carries src
	mu   sync.Mutex
	buf  []byte
	recs [1]commitlog.Record
}

type pendingAppend struct {
	bus, device string
	fut         *commitlog.Future
	reg         *registry.Write
}

func newAdapterSink(d *Daemon) (*adapterSink, error) {
	s := &adapterSink{d: d, headers: map[string][]commitlog.Header{}, buses: map[string]*sinkBus{},
		pending: make(chan pendingAppend, 1024), done: make(chan struct{}), warn: ratelog.New()}
	var err error
	if s.telemetry, err = d.log.Topic("telemetry"); err != nil {
		return nil, fmt.Errorf("adapters: %w", err)
	}
	if s.attributes, err = d.log.Topic("attributes"); err != nil {
		return nil, fmt.Errorf("adapters: %w", err)
	}
	for _, b := range d.cfg.Buses {
		sb := &sinkBus{src: commitlog.Source{Detached: true}}
		sb.ctx = commitlog.WithSource(context.Background(), &sb.src)
		s.buses[b.Name] = sb
	}
	return s, nil
}

func (s *adapterSink) addDevice(dc DeviceConfig) {
	s.headers[dc.Name] = mqtt.RecordHeaders(registry.Device{Name: dc.Name, Type: dc.Type}, "")
}

func (s *adapterSink) start() { go s.wait() }

// close waits until every queued append is decided.
func (s *adapterSink) close() {
	close(s.pending)
	<-s.done
	for _, sb := range s.buses {
		sb.src.Close()
	}
}

// appendOne appends one record of dev's with the bus's producer.
func (s *adapterSink) appendOne(topic *commitlog.Topic, bus string, dev adapter.Info, ts int64, kvs []tb.KV) *commitlog.Future {
	sb := s.buses[bus]
	sb.mu.Lock()
	defer sb.mu.Unlock()
	sb.buf = tb.AppendRecordValue(sb.buf[:0], ts, kvs)
	sb.recs[0] = commitlog.Record{Key: []byte(dev.Name), Value: sb.buf, Timestamp: ts, Headers: s.headers[dev.Name]}
	return topic.Append(sb.ctx, sb.recs[:])
}

func (s *adapterSink) Telemetry(bus string, dev adapter.Info, ts int64, values []tb.KV) error {
	s.pending <- pendingAppend{bus: bus, device: dev.Name, fut: s.appendOne(s.telemetry, bus, dev, ts, values)}
	return nil
}

func (s *adapterSink) Attributes(bus string, dev adapter.Info, ts int64, attrs []tb.KV) error {
	ra := make([]registry.Attribute, len(attrs))
	for i, kv := range attrs {
		ra[i] = registry.Attribute{Key: kv.Key, Value: kv.Value.AppendJSON(nil), UpdatedMs: ts}
	}
	w, err := s.d.reg.SetAttributesAsync(dev.Name, registry.ScopeClient, ra)
	if err != nil {
		return fmt.Errorf("adapters: attributes of %s: %w", dev.Name, err)
	}
	s.pending <- pendingAppend{bus: bus, device: dev.Name, fut: s.appendOne(s.attributes, bus, dev, ts, attrs), reg: w}
	return nil
}

// wait decides the queued appends in order.
func (s *adapterSink) wait() {
	defer close(s.done)
	for p := range s.pending {
		_, err := p.fut.Wait(context.Background())
		if err == nil && p.reg != nil {
			err = p.reg.Wait()
		}
		if err != nil {
			s.d.adapterM.SinkFailed.WithLabelValues(p.bus, p.device).Inc()
			s.warn.Warn(s.d.logger, p.device, "adapter record not stored", "device", p.device, "bus", p.bus, "err", err)
		}
	}
}

// deviceSender delivers commands to adapter devices through their bus and
// to every other device over MQTT.
type deviceSender struct {
	mqtt     mqttSender
	adapters *adapter.Manager
}

func (s deviceSender) RPC(ctx context.Context, r commands.Request) (json.RawMessage, error) {
	if !s.adapters.Has(r.Device) {
		return s.mqtt.RPC(ctx, r)
	}
	if r.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.Timeout)
		defer cancel()
	}
	resp, err := s.adapters.RPC(ctx, r.Device, r.Method, r.Params)
	return resp, adapterCommandError(err)
}

// adapterCommandError maps an adapter RPC's error onto the ones the
// dispatcher acts on.
func adapterCommandError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, adapter.ErrClosed):
		return fmt.Errorf("%w: %w", commands.ErrOffline, err)
	case errors.Is(err, adapter.ErrUnknownDevice):
		return fmt.Errorf("%w: %w", commands.ErrUnknownDevice, err)
	}
	switch adapter.KindOf(err) {
	case adapter.KindConnection:
		// Not sent: the line is down. Retried until the command expires.
		return fmt.Errorf("%w: %w", commands.ErrOffline, err)
	case adapter.KindTimeout:
		// Sent, no answer: the device may have acted on it.
		return fmt.Errorf("%w: %w", commands.ErrTimeout, err)
	}
	return err // an exception, an unknown method, bad params: answered "error"
}
