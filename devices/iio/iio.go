package iio

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/ferry-iot/ferry/configs"
	"github.com/ferry-iot/ferry/devices/adapter"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// DefaultRoot is where the kernel lists IIO devices.
const DefaultRoot = "/sys/bus/iio/devices"

// BusConfig is an IIO bus's section.
type BusConfig struct {
	// Root is the IIO devices folder (default /sys/bus/iio/devices).
	Root string `mapstructure:"root"`
}

// Validate checks c, naming keys relative to the bus section.
func (c BusConfig) Validate() error {
	var p configs.Problems
	if c.Root != "" && !filepath.IsAbs(c.Root) {
		p.Add("root", "%q is not an absolute path", c.Root)
	}
	return p.Err()
}

// Bus is an IIO sysfs root.
type Bus struct {
	root string
}

// Open checks the root exists (the kernel's IIO core is loaded); a
// missing one is an error of kind adapter.KindConnection.
func Open(cfg BusConfig) (*Bus, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("iio: %w", err)
	}
	root := cfg.Root
	if root == "" {
		root = DefaultRoot
	}
	return open(root)
}

func open(root string) (*Bus, error) {
	if _, err := os.Stat(root); err != nil {
		return nil, fmt.Errorf("iio: %s: no IIO devices (load a sensor's kernel driver; on a Raspberry Pi "+
			"an overlay such as dtoverlay=i2c-sensor,bme280): %w", root, adapter.Errorf(adapter.KindConnection, err))
	}
	return &Bus{root: root}, nil
}

// Close releases nothing.
func (b *Bus) Close() error { return nil }

var channelRE = regexp.MustCompile(`^[a-z]+[a-z0-9_-]*$`)

// ValidateDevice checks a device's settings, naming keys relative to its
// source section.
func ValidateDevice(c adapter.SensorConfig) error {
	var p configs.Problems
	if c.Driver != "iio" {
		p.Add("driver", "%q is not iio", c.Driver)
		return p.Err()
	}
	if c.ID == "" {
		p.Add("id", "is required (the device's name, such as bme280, or iio:device0)")
	} else if strings.ContainsAny(c.ID, "/\n") {
		p.Add("id", "%q is not a device name", c.ID)
	}
	for i, ch := range c.Channels {
		if !channelRE.MatchString(ch) {
			p.Add(fmt.Sprintf("channels[%d]", i), "%q is not a channel name (temp, voltage0...)", ch)
		}
	}
	c.CheckSensor(&p, nil, "id", "channels", "keys")
	return p.Err()
}

// Source makes the source of a device; it is looked up at the first
// poll.
func (b *Bus) Source(cfg adapter.SensorConfig) (adapter.Source, error) {
	if err := ValidateDevice(cfg); err != nil {
		return nil, fmt.Errorf("iio: %w", err)
	}
	return &device{bus: b, cfg: cfg}, nil
}

// device is an IIO device; dir is found lazily.
type device struct {
	bus *Bus
	cfg adapter.SensorConfig
	dir string // "": not found yet, or lost after a failed poll
}

// errNotPresent: no IIO device or channel by that name.
var errNotPresent = errors.New("not present")

// Read reads every channel once.
func (d *device) Read(context.Context) (adapter.Reading, error) {
	if d.dir == "" {
		dir, err := d.bus.find(d.cfg.ID)
		if err != nil {
			return adapter.Reading{}, fmt.Errorf("iio: %s: %w", d.cfg.ID, err)
		}
		d.dir = dir
	}
	kvs, err := d.read()
	if err != nil {
		dir := d.dir
		d.dir = ""
		return adapter.Reading{}, fmt.Errorf("iio: %s (%s): %w", d.cfg.ID, filepath.Base(dir), err)
	}
	return adapter.Reading{Telemetry: d.cfg.Rename(kvs)}, nil
}

// find is the folder of the device named id: the folder itself, or the
// first iio:device* whose name file holds id.
func (b *Bus) find(id string) (string, error) {
	if dir := filepath.Join(b.root, id); strings.HasPrefix(id, "iio:device") {
		if _, err := os.Stat(filepath.Join(dir, "name")); err == nil {
			return dir, nil
		}
	}
	ents, err := os.ReadDir(b.root)
	if err != nil {
		return "", adapter.Errorf(adapter.KindConnection, err)
	}
	var seen []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "iio:device") {
			continue
		}
		name, err := os.ReadFile(filepath.Join(b.root, e.Name(), "name"))
		if err != nil {
			continue
		}
		n := strings.TrimSpace(string(name))
		if n == id {
			return filepath.Join(b.root, e.Name()), nil
		}
		seen = append(seen, fmt.Sprintf("%s (%s)", e.Name(), n))
	}
	if len(seen) == 0 {
		seen = []string{"none"}
	}
	return "", fmt.Errorf("%w (devices: %s)", adapter.Errorf(adapter.KindTimeout, errNotPresent), strings.Join(seen, ", "))
}

var inputRE = regexp.MustCompile(`^in_(.+)_(input|raw)$`)

// channels lists the device's channels and whether each has a processed
// (input) file, sorted by name.
func channels(dir string) (map[string]bool, []string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	has := map[string]bool{}
	for _, e := range ents {
		m := inputRE.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		has[m[1]] = has[m[1]] || m[2] == "input"
	}
	var names []string
	for n := range has {
		names = append(names, n)
	}
	sort.Strings(names)
	return has, names, nil
}

func (d *device) read() ([]tb.KV, error) {
	has, names, err := channels(d.dir)
	if err != nil {
		return nil, adapter.Errorf(adapter.KindTimeout, err)
	}
	if len(d.cfg.Channels) > 0 {
		for _, ch := range d.cfg.Channels {
			if _, ok := has[ch]; !ok {
				return nil, fmt.Errorf("channel %s: %w (channels: %s)", ch, adapter.Errorf(adapter.KindTimeout, errNotPresent), strings.Join(names, ", "))
			}
		}
		names = d.cfg.Channels
	}
	if len(names) == 0 {
		return nil, adapter.Errorf(adapter.KindDevice, errors.New("no in_*_input or in_*_raw channel"))
	}
	kvs := make([]tb.KV, 0, len(names))
	for _, ch := range names {
		v, err := channelValue(d.dir, ch, has[ch])
		if err != nil {
			return nil, fmt.Errorf("channel %s: %w", ch, err)
		}
		kvs = append(kvs, adapter.Double(ch, round12(v*unitFactor(channelType(ch)))))
	}
	return kvs, nil
}

// channelType is a channel's type: its leading letters (voltage for
// voltage0, temp for temp_ambient).
func channelType(ch string) string {
	i := strings.IndexFunc(ch, func(r rune) bool { return r < 'a' || r > 'z' })
	if i < 0 {
		return ch
	}
	return ch[:i]
}

// unitFactor turns the kernel's unit of a channel type into ours.
func unitFactor(typ string) float64 {
	switch typ {
	case "temp", "humidityrelative", "voltage", "current", "power":
		return 1e-3
	case "pressure":
		return 10
	}
	return 1
}

// channelValue is the channel in the kernel's unit: input, or (raw +
// offset) × scale.
func channelValue(dir, ch string, processed bool) (float64, error) {
	if processed {
		return readNumber(filepath.Join(dir, "in_"+ch+"_input"))
	}
	raw, err := readNumber(filepath.Join(dir, "in_"+ch+"_raw"))
	if err != nil {
		return 0, err
	}
	offset, err := attribute(dir, ch, "offset", 0)
	if err != nil {
		return 0, err
	}
	scale, err := attribute(dir, ch, "scale", 1)
	if err != nil {
		return 0, err
	}
	return (raw + offset) * scale, nil
}

// attribute reads in_<ch>_<attr>, else in_<type>_<attr>, else def.
func attribute(dir, ch, attr string, def float64) (float64, error) {
	for _, name := range slices.Compact([]string{ch, channelType(ch)}) {
		v, err := readNumber(filepath.Join(dir, "in_"+name+"_"+attr))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		return v, err
	}
	return def, nil
}

// readNumber reads a sysfs number. A missing file is returned as is
// (os.ErrNotExist); a read failure is adapter.KindDevice, text that is no
// number adapter.KindProtocol.
func readNumber(path string) (float64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, adapter.Errorf(adapter.KindTimeout, err)
	}
	if err != nil {
		return 0, adapter.Errorf(adapter.KindDevice, err)
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, adapter.Errorf(adapter.KindProtocol, fmt.Errorf("%s: %q is not a number", filepath.Base(path), strings.TrimSpace(string(b))))
	}
	return v, nil
}

// round12 keeps 12 significant digits, dropping the noise of the
// conversions' last bit.
func round12(v float64) float64 {
	r, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 12, 64), 64)
	return r
}
