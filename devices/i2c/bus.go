package i2c

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"periph.io/x/conn/v3/i2c/i2creg"
	"periph.io/x/host/v3"

	periphi2c "periph.io/x/conn/v3/i2c"

	"github.com/ferry-iot/ferry/configs"
	"github.com/ferry-iot/ferry/devices/adapter"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// BusConfig is an I²C bus's section.
type BusConfig struct {
	// Bus is the bus: "1" or "/dev/i2c-1" for the kernel's /dev/i2c-1,
	// or the name of a bus periph registers otherwise (a USB adapter).
	Bus string `mapstructure:"bus"`
}

// Validate checks c, naming keys relative to the bus section.
func (c BusConfig) Validate() error {
	var p configs.Problems
	if strings.TrimSpace(c.Bus) == "" {
		p.Add("bus", "is required (the N of /dev/i2c-N, such as \"1\")")
	}
	return p.Err()
}

// Bus is an open I²C bus and the devices read on it.
type Bus struct {
	bus    periphi2c.Bus
	closer periphi2c.BusCloser // nil: the bus was handed in (OpenWith)
	sleep  func(ctx context.Context, d time.Duration) error
	now    func() time.Time

	mu   sync.Mutex
	used map[uint16]string // address → driver, so two devices cannot share one
}

var devNode = regexp.MustCompile(`^(?:/dev/i2c-|I2C)?([0-9]+)$`)

// devicePath is the kernel device node a bus name stands for ("1",
// "I2C1" and "/dev/i2c-1" all name /dev/i2c-1); ok is false for other
// names.
func devicePath(name string) (path string, ok bool) {
	m := devNode.FindStringSubmatch(strings.TrimSpace(name))
	if m == nil {
		return "", false
	}
	return "/dev/i2c-" + m[1], true
}

// stat is os.Stat; tests replace it.
var stat = os.Stat

// Open opens the bus through periph: host.Init, then i2creg.Open. A
// missing /dev/i2c-N fails at once with how to enable the bus; every
// failure is of kind adapter.KindConnection.
func Open(cfg BusConfig) (*Bus, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("i2c: %w", err)
	}
	name := strings.TrimSpace(cfg.Bus)
	if path, ok := devicePath(name); ok {
		name = path
		if _, err := stat(path); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("i2c: %s does not exist; enable I²C (on a Raspberry Pi: "+
				"dtparam=i2c_arm=on in config.txt and the i2c-dev module loaded, "+
				"or raspi-config nonint do_i2c 0, then reboot): %w",
				path, adapter.Errorf(adapter.KindConnection, err))
		}
	}
	if _, err := host.Init(); err != nil {
		return nil, fmt.Errorf("i2c: periph host init: %w", adapter.Errorf(adapter.KindConnection, err))
	}
	bc, err := i2creg.Open(name)
	if err != nil {
		return nil, fmt.Errorf("i2c: open %s: %w", name, adapter.Errorf(adapter.KindConnection, err))
	}
	b := OpenWith(bc)
	b.closer = bc
	return b, nil
}

// OpenWith wraps a bus opened elsewhere (a test double such as
// i2ctest.Playback, or a bus another package opened). Close leaves it
// open.
func OpenWith(bus periphi2c.Bus) *Bus {
	return &Bus{bus: bus, sleep: adapter.Sleep, now: time.Now, used: map[uint16]string{}}
}

// Periph is the periph bus, for drivers of other packages that sit on
// I²C (a DS248x 1-Wire master).
func (b *Bus) Periph() periphi2c.Bus { return b.bus }

// Close closes the bus if Open opened it.
func (b *Bus) Close() error {
	if b.closer == nil {
		return nil
	}
	if err := b.closer.Close(); err != nil {
		return fmt.Errorf("i2c: close %s: %w", b.bus, err)
	}
	return nil
}

// Source makes the source of a device on the bus. Nothing is sent to the
// chip here: the driver is set up at the device's first poll, so a
// sensor that is absent or unplugged at start makes failing polls (which
// the adapter retries with backoff) instead of stopping the daemon. A
// poll that fails drops the driver and the next one sets it up again,
// as after a power cycle of the chip.
func (b *Bus) Source(cfg adapter.SensorConfig) (adapter.Source, error) {
	if err := ValidateDevice(cfg); err != nil {
		return nil, fmt.Errorf("i2c: %w", err)
	}
	m := models[cfg.Driver]
	addr := cfg.Address
	if addr == 0 {
		addr = m.addrs[0]
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if other, dup := b.used[addr]; dup {
		return nil, fmt.Errorf("i2c: address %#02x on %s is already used by a %s device", addr, b.bus, other)
	}
	b.used[addr] = cfg.Driver
	return &device{bus: b, model: m, addr: addr, cfg: cfg}, nil
}

// device is one chip on the bus; its driver is set up lazily.
type device struct {
	bus   *Bus
	model model
	addr  uint16
	cfg   adapter.SensorConfig
	drv   driver // nil: not set up (yet, or again after a failure)
}

// Read reads the chip once, setting its driver up first if needed.
func (d *device) Read(ctx context.Context) (adapter.Reading, error) {
	var attrs []tb.KV
	if d.drv == nil {
		drv, err := d.model.open(ctx, d.bus, d.addr, d.cfg)
		if err != nil {
			return adapter.Reading{}, fmt.Errorf("i2c: %s at %#02x: set up: %w", d.cfg.Driver, d.addr, classify(err))
		}
		d.drv = drv
		if a, ok := drv.(attributer); ok {
			attrs = a.attributes()
		}
	}
	kvs, err := d.drv.read(ctx)
	if err != nil {
		d.closeDriver()
		return adapter.Reading{}, fmt.Errorf("i2c: %s at %#02x: %w", d.cfg.Driver, d.addr, classify(err))
	}
	return adapter.Reading{Telemetry: d.cfg.Rename(kvs), Attributes: attrs}, nil
}

// Close stops a driver that measures on its own (scd4x).
func (d *device) Close() error {
	if err := d.closeDriver(); err != nil {
		return fmt.Errorf("i2c: %s at %#02x: %w", d.cfg.Driver, d.addr, err)
	}
	return nil
}

func (d *device) closeDriver() error {
	drv := d.drv
	d.drv = nil
	if c, ok := drv.(interface{ close() error }); ok {
		return c.close()
	}
	return nil
}

// classify gives a driver's error its kind. An error that has one keeps
// it. The kernel's I²C drivers report a chip that does not acknowledge
// its address as "remote I/O error" (EREMOTEIO, the Raspberry Pi's) or
// "no such device or address" (ENXIO), and periph passes only the text
// on: those are a device that did not answer. Anything else is a device
// failure.
func classify(err error) error {
	var ae *adapter.Error
	switch {
	case errors.As(err, &ae), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return err
	case strings.Contains(err.Error(), "remote I/O error"), strings.Contains(err.Error(), "no such device or address"):
		return adapter.Errorf(adapter.KindTimeout, err)
	default:
		return adapter.Errorf(adapter.KindDevice, err)
	}
}

// DeviceNode is the kernel device node the bus opens ("/dev/i2c-1"); ok
// is false for a bus periph registers under another name.
func (c BusConfig) DeviceNode() (path string, ok bool) { return devicePath(c.Bus) }
