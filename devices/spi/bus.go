package spi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strings"
	"sync"

	"periph.io/x/conn/v3/physic"
	"periph.io/x/conn/v3/spi/spireg"
	"periph.io/x/devices/v3/bmxx80"
	"periph.io/x/host/v3"

	periphspi "periph.io/x/conn/v3/spi"

	"github.com/ferry-iot/ferry/configs"
	"github.com/ferry-iot/ferry/devices/adapter"
	"github.com/ferry-iot/ferry/devices/i2c"
)

// BusConfig is an SPI port's section.
type BusConfig struct {
	// Port is the bus and chip select: "0.0" or "/dev/spidev0.0" for the
	// kernel's /dev/spidev0.0, or the name of a port periph registers
	// otherwise.
	Port string `mapstructure:"port"`
	// Speed caps the clock in Hz (0: the driver's own, 10 MHz for the
	// BMx280).
	Speed int64 `mapstructure:"speed"`
}

// Validate checks c, naming keys relative to the bus section.
func (c BusConfig) Validate() error {
	var p configs.Problems
	if strings.TrimSpace(c.Port) == "" {
		p.Add("port", "is required (the B.C of /dev/spidevB.C, such as \"0.0\")")
	}
	if c.Speed < 0 {
		p.Add("speed", "%d Hz is negative", c.Speed)
	}
	return p.Err()
}

var devNode = regexp.MustCompile(`^(?:/dev/spidev|SPI)?([0-9]+\.[0-9]+)$`)

// devicePath is the device node a port name stands for ("0.0", "SPI0.0"
// and "/dev/spidev0.0" all name /dev/spidev0.0); ok is false for other
// names.
func devicePath(name string) (path string, ok bool) {
	m := devNode.FindStringSubmatch(strings.TrimSpace(name))
	if m == nil {
		return "", false
	}
	return "/dev/spidev" + m[1], true
}

// stat is os.Stat; tests replace it.
var stat = os.Stat

// Bus is an open SPI port.
type Bus struct {
	port   *oncePort
	closer periphspi.PortCloser // nil: the port was handed in (OpenWith)

	mu   sync.Mutex
	used bool // a port has one chip select, so one device
}

// Open opens the port through periph: host.Init, then spireg.Open. A
// missing /dev/spidevB.C fails at once with how to enable SPI; every
// failure is of kind adapter.KindConnection.
func Open(cfg BusConfig) (*Bus, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("spi: %w", err)
	}
	name := strings.TrimSpace(cfg.Port)
	if path, ok := devicePath(name); ok {
		name = path
		if _, err := stat(path); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("spi: %s does not exist; enable SPI (on a Raspberry Pi: "+
				"dtparam=spi=on in config.txt, or raspi-config nonint do_spi 0, then reboot): %w",
				path, adapter.Errorf(adapter.KindConnection, err))
		}
	}
	if _, err := host.Init(); err != nil {
		return nil, fmt.Errorf("spi: periph host init: %w", adapter.Errorf(adapter.KindConnection, err))
	}
	pc, err := spireg.Open(name)
	if err != nil {
		return nil, fmt.Errorf("spi: open %s: %w", name, adapter.Errorf(adapter.KindConnection, err))
	}
	if cfg.Speed > 0 {
		if err := pc.LimitSpeed(physic.Frequency(cfg.Speed) * physic.Hertz); err != nil {
			_ = pc.Close()
			return nil, fmt.Errorf("spi: %s: speed %d Hz: %w", name, cfg.Speed, adapter.Errorf(adapter.KindConnection, err))
		}
	}
	b := OpenWith(pc)
	b.closer = pc
	return b, nil
}

// OpenWith wraps a port opened elsewhere (a test double such as
// spitest.Playback). Close leaves it open.
func OpenWith(port periphspi.Port) *Bus { return &Bus{port: &oncePort{Port: port}} }

// Close closes the port if Open opened it.
func (b *Bus) Close() error {
	if b.closer == nil {
		return nil
	}
	if err := b.closer.Close(); err != nil {
		return fmt.Errorf("spi: close %s: %w", b.port, err)
	}
	return nil
}

// drivers are the chips this package reads, with their keys.
var drivers = map[string][]string{
	"bme280": {i2c.KeyTemperature, i2c.KeyHumidity, i2c.KeyPressure},
	"bmp280": {i2c.KeyTemperature, i2c.KeyPressure},
}

// ValidateDevice checks a device's sensor settings, naming keys relative
// to its source section.
func ValidateDevice(c adapter.SensorConfig) error {
	var p configs.Problems
	keys, ok := drivers[c.Driver]
	if !ok {
		p.Add("driver", "%q is not an SPI driver (bme280, bmp280)", c.Driver)
		return p.Err()
	}
	c.CheckSensor(&p, keys, "keys")
	return p.Err()
}

// Source makes the source of the chip on the port. Nothing is sent here:
// see the package doc.
func (b *Bus) Source(cfg adapter.SensorConfig) (adapter.Source, error) {
	if err := ValidateDevice(cfg); err != nil {
		return nil, fmt.Errorf("spi: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used {
		return nil, fmt.Errorf("spi: %s already has its device (one per chip select)", b.port)
	}
	b.used = true
	return &device{port: b.port, driver: cfg.Driver, cfg: cfg}, nil
}

// device is the chip on the port; dev is set up lazily.
type device struct {
	port   *oncePort
	driver string
	cfg    adapter.SensorConfig
	dev    *bmxx80.Dev // nil: not set up (yet, or again after a failure)
}

// Read reads the chip once, setting it up first if needed.
func (d *device) Read(context.Context) (adapter.Reading, error) {
	if d.dev == nil {
		dev, err := bmxx80.NewSPI(d.port, &bmxx80.DefaultOpts)
		if err == nil {
			err = i2c.CheckBMx280(dev, d.driver)
		}
		if err != nil {
			return adapter.Reading{}, fmt.Errorf("spi: %s on %s: set up: %w", d.driver, d.port, classify(err))
		}
		d.dev = dev
	}
	kvs, err := i2c.SenseBMx280(d.dev)
	if err != nil {
		d.dev = nil
		return adapter.Reading{}, fmt.Errorf("spi: %s on %s: %w", d.driver, d.port, classify(err))
	}
	return adapter.Reading{Telemetry: d.cfg.Rename(kvs)}, nil
}

// classify keeps an error's kind, or makes it adapter.KindDevice: SPI
// has no acknowledgement, so an absent chip shows as a wrong chip id.
func classify(err error) error {
	var ae *adapter.Error
	if errors.As(err, &ae) {
		return err
	}
	return adapter.Errorf(adapter.KindDevice, err)
}

// oncePort connects once and hands the same connection to every later
// Connect: periph's ports refuse a second Connect, and a chip set up
// again after a failure connects again.
type oncePort struct {
	periphspi.Port

	mu   sync.Mutex
	conn periphspi.Conn
}

func (p *oncePort) Connect(f physic.Frequency, mode periphspi.Mode, bits int) (periphspi.Conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil {
		return p.conn, nil
	}
	c, err := p.Port.Connect(f, mode, bits)
	if err != nil {
		return nil, err
	}
	p.conn = c
	return c, nil
}

// DeviceNode is the kernel device node the port opens
// ("/dev/spidev0.0"); ok is false for a port periph registers under
// another name.
func (c BusConfig) DeviceNode() (path string, ok bool) { return devicePath(c.Port) }
