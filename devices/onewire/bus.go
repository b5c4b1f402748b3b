package onewire

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"periph.io/x/devices/v3/ds248x"

	periphonewire "periph.io/x/conn/v3/onewire"

	"github.com/ferry-iot/ferry/configs"
	"github.com/ferry-iot/ferry/devices/adapter"
	"github.com/ferry-iot/ferry/devices/i2c"
)

// DefaultSysfs is where the kernel's w1 bus lists its devices.
const DefaultSysfs = "/sys/bus/w1/devices"

// ds248xAddrs are the addresses periph's ds248x driver takes; the first
// is the default.
var ds248xAddrs = []uint16{0x18, 0x19, 0x20, 0x21}

// BusConfig is a 1-Wire bus's section: the kernel's w1 sysfs (the
// default), or a DS2482/DS2483 master on an I²C bus.
type BusConfig struct {
	// Sysfs is the w1 devices folder (default /sys/bus/w1/devices).
	Sysfs string `mapstructure:"sysfs"`
	// I2CBus is the I²C bus of a DS248x master ("1" for /dev/i2c-1);
	// when set, the bus is that master's instead of the kernel's.
	I2CBus string `mapstructure:"i2c_bus"`
	// Address is the DS248x's I²C address (0: 0x18).
	Address uint16 `mapstructure:"address"`
}

// Validate checks c, naming keys relative to the bus section.
func (c BusConfig) Validate() error {
	var p configs.Problems
	if c.I2CBus != "" && c.Sysfs != "" {
		p.Add("sysfs", "has no effect with i2c_bus (a DS248x master)")
	}
	if c.I2CBus == "" && c.Address != 0 {
		p.Add("address", "has no effect without i2c_bus (the kernel's w1 bus)")
	}
	if c.Address != 0 && !slices.Contains(ds248xAddrs, c.Address) {
		p.Add("address", "%#02x is not a DS248x address (0x18, 0x19, 0x20, 0x21)", c.Address)
	}
	return p.Err()
}

// Bus is a 1-Wire bus: the kernel's (sysfs set) or a master periph
// drives (master set).
type Bus struct {
	sysfs string
	sleep func(ctx context.Context, d time.Duration) error // conversion waits; tests replace it
	i2c   *i2c.Bus                                         // the DS248x's I²C bus, closed with the Bus; nil otherwise

	mu     sync.Mutex
	master periphonewire.Bus                  // nil: not set up yet (or sysfs)
	open   func() (periphonewire.Bus, error)  // sets the master up
	used   map[periphonewire.Address]struct{} // one source per device
}

// Open opens the bus. For the kernel's bus it checks the sysfs folder
// exists (the w1 modules are loaded); for a DS248x it opens the I²C bus
// (package i2c) and sets the master up at the first poll, so an absent
// master makes failing polls, not a failed start. Failures are of kind
// adapter.KindConnection.
func Open(cfg BusConfig) (*Bus, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("onewire: %w", err)
	}
	if cfg.I2CBus == "" {
		root := cfg.Sysfs
		if root == "" {
			root = DefaultSysfs
		}
		if _, err := os.Stat(root); err != nil {
			return nil, fmt.Errorf("onewire: %s: the kernel's 1-Wire bus is not loaded (on a Raspberry Pi: "+
				"dtoverlay=w1-gpio in config.txt, data on GPIO4 with a 4.7 kΩ pull-up, then reboot): %w",
				root, adapter.Errorf(adapter.KindConnection, err))
		}
		return &Bus{sysfs: root, sleep: adapter.Sleep, used: map[periphonewire.Address]struct{}{}}, nil
	}
	ib, err := i2c.Open(i2c.BusConfig{Bus: cfg.I2CBus})
	if err != nil {
		return nil, fmt.Errorf("onewire: ds248x: %w", err)
	}
	addr := cfg.Address
	if addr == 0 {
		addr = ds248xAddrs[0]
	}
	b := &Bus{sleep: adapter.Sleep, i2c: ib, used: map[periphonewire.Address]struct{}{}}
	b.open = func() (periphonewire.Bus, error) {
		m, err := ds248x.New(ib.Periph(), addr, &ds248x.DefaultOpts)
		if err != nil {
			return nil, fmt.Errorf("ds248x at %#02x: %w", addr, err)
		}
		return m, nil
	}
	return b, nil
}

// OpenWith makes a bus on a 1-Wire master set up elsewhere (a test
// double such as onewiretest.Playback, or a DS248x).
func OpenWith(master periphonewire.Bus) *Bus {
	return &Bus{master: master, sleep: adapter.Sleep, used: map[periphonewire.Address]struct{}{}}
}

// Close closes the DS248x's I²C bus if Open opened one.
func (b *Bus) Close() error {
	if b.i2c == nil {
		return nil
	}
	if err := b.i2c.Close(); err != nil {
		return fmt.Errorf("onewire: %w", err)
	}
	return nil
}

// masterBus is the 1-Wire master, set up on first use.
func (b *Bus) masterBus() (periphonewire.Bus, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.master == nil {
		m, err := b.open()
		if err != nil {
			return nil, err
		}
		b.master = m
	}
	return b.master, nil
}

// dropMaster makes the next use set the master up again (after a
// failure that may have been a reset of the chip). A master handed in
// (OpenWith) is kept.
func (b *Bus) dropMaster() {
	b.mu.Lock()
	if b.open != nil {
		b.master = nil
	}
	b.mu.Unlock()
}

// ValidateDevice checks a device's sensor settings, naming keys relative
// to its source section.
func ValidateDevice(c adapter.SensorConfig) error {
	var p configs.Problems
	if c.Driver != "ds18b20" {
		p.Add("driver", "%q is not a 1-Wire driver (ds18b20)", c.Driver)
		return p.Err()
	}
	if c.ID == "" {
		p.Add("id", "is required (the id the kernel lists, such as 28-0000057e4c1b)")
	} else if _, err := ParseID(c.ID); err != nil {
		p.Add("id", "%v", err)
	}
	if c.Resolution != 0 && (c.Resolution < 9 || c.Resolution > 12) {
		p.Add("resolution", "%d is not 9 to 12 bits", c.Resolution)
	}
	c.CheckSensor(&p, []string{KeyTemperature}, "id", "resolution", "keys")
	return p.Err()
}

// KeyTemperature is the DS18B20's telemetry key, in °C.
const KeyTemperature = "temperature"

var idRE = regexp.MustCompile(`^([0-9a-f]{2})-([0-9a-f]{12})$`)

// ParseID turns the kernel's id of a device ("28-0000057e4c1b": family,
// then the 48-bit serial number, most significant byte first) into its
// 64-bit ROM code as periph holds it: family in the low byte, then the
// serial, then the CRC-8 of those 7 bytes in the high byte.
func ParseID(id string) (periphonewire.Address, error) {
	m := idRE.FindStringSubmatch(strings.ToLower(id))
	if m == nil {
		return 0, fmt.Errorf("%q is not a 1-Wire id (two hex digits of family, '-', twelve of serial: 28-0000057e4c1b)", id)
	}
	family, _ := strconv.ParseUint(m[1], 16, 8)
	serial, _ := strconv.ParseUint(m[2], 16, 48)
	rom := make([]byte, 7)
	rom[0] = byte(family)
	for i := range 6 {
		rom[1+i] = byte(serial >> (8 * i))
	}
	crc := periphonewire.CalcCRC(rom)
	return periphonewire.Address(uint64(crc)<<56 | serial<<8 | family), nil
}

// Source makes the source of a DS18B20 on the bus. Nothing is read here;
// a probe absent at start makes failing polls.
func (b *Bus) Source(cfg adapter.SensorConfig) (adapter.Source, error) {
	if err := ValidateDevice(cfg); err != nil {
		return nil, fmt.Errorf("onewire: %w", err)
	}
	addr, _ := ParseID(cfg.ID)
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, dup := b.used[addr]; dup {
		return nil, fmt.Errorf("onewire: %s has a device already", cfg.ID)
	}
	b.used[addr] = struct{}{}
	if b.sysfs != "" {
		return &sysfsProbe{bus: b, id: strings.ToLower(cfg.ID), cfg: cfg}, nil
	}
	res := cfg.Resolution
	if res == 0 {
		res = 12
	}
	return &masterProbe{bus: b, addr: addr, id: cfg.ID, res: res, cfg: cfg}, nil
}

// errNotPresent: the device is not on the bus.
var errNotPresent = errors.New("not on the bus")

// presentIDs lists the device ids under the sysfs root, for errors.
func (b *Bus) presentIDs() string {
	ents, err := os.ReadDir(b.sysfs)
	if err != nil {
		return err.Error()
	}
	var ids []string
	for _, e := range ents {
		if idRE.MatchString(e.Name()) {
			ids = append(ids, e.Name())
		}
	}
	if len(ids) == 0 {
		return "none"
	}
	return strings.Join(ids, ", ")
}

// isNotExist reports a file that is not there.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// I2CNode is the device node of a DS248x master's I²C bus
// ("/dev/i2c-1"); ok is false for the kernel's bus (read through /sys)
// and for an I²C bus periph registers under another name.
func (c BusConfig) I2CNode() (path string, ok bool) {
	if c.I2CBus == "" {
		return "", false
	}
	return i2c.BusConfig{Bus: c.I2CBus}.DeviceNode()
}
