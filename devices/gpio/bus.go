package gpio

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"periph.io/x/host/v3"
	"periph.io/x/host/v3/gpioioctl"

	periphgpio "periph.io/x/conn/v3/gpio"

	"github.com/ferry-iot/ferry/configs"
	"github.com/ferry-iot/ferry/devices/adapter"
)

// DefaultChip is the chip whose lines are the Raspberry Pi's header pins
// (on a Pi 5 as well, where the kernel links gpiochip0 to the RP1's).
const DefaultChip = "gpiochip0"

// BusConfig is a GPIO chip's section.
type BusConfig struct {
	// Chip is the GPIO chip: its name ("gpiochip0", the default), its
	// device node ("/dev/gpiochip0") or its label ("pinctrl-bcm2835").
	Chip string `mapstructure:"chip"`
}

// Validate checks c, naming keys relative to the bus section.
func (c BusConfig) Validate() error {
	var p configs.Problems
	if strings.ContainsAny(c.Chip, " \t\n") {
		p.Add("chip", "%q is not a chip name (gpiochip0)", c.Chip)
	}
	return p.Err()
}

// Bus is a GPIO chip and the lines its devices use.
type Bus struct {
	lookup func(pin string) (periphgpio.PinIO, error)
	now    func() time.Time
	sleep  func(ctx context.Context, d time.Duration) error
	// slice bounds one WaitForEdge, so a watch notices its context
	// ending even on a pin whose Halt cannot interrupt a wait.
	slice time.Duration

	mu   sync.Mutex
	used map[string]string // pin → driver, so two devices cannot share a line
}

// Open finds the chip through periph's character-device driver
// (gpioioctl, after host.Init). A missing chip is an error of kind
// adapter.KindConnection that lists the chips there are.
func Open(cfg BusConfig) (*Bus, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("gpio: %w", err)
	}
	name := cfg.Chip
	if name == "" {
		name = DefaultChip
	}
	if _, err := host.Init(); err != nil {
		return nil, fmt.Errorf("gpio: periph host init: %w", adapter.Errorf(adapter.KindConnection, err))
	}
	var found []string
	for _, c := range gpioioctl.Chips {
		if c.Name() == name || c.Path() == name || c.Label() == name {
			return OpenWith(chipLookup(c)), nil
		}
		found = append(found, fmt.Sprintf("%s (%s)", c.Name(), c.Label()))
	}
	if len(found) == 0 {
		found = []string{"none: is /dev/gpiochip* there and readable?"}
	}
	return nil, fmt.Errorf("gpio: no chip %s (found: %s): %w", name, strings.Join(found, ", "),
		adapter.Errorf(adapter.KindConnection, errors.New("chip not found")))
}

// chipLookup finds a line of c by name ("GPIO17") or offset ("17").
func chipLookup(c *gpioioctl.GPIOChip) func(string) (periphgpio.PinIO, error) {
	return func(pin string) (periphgpio.PinIO, error) {
		if l := c.ByName(pin); l != nil {
			return l, nil
		}
		if n, err := strconv.Atoi(pin); err == nil && n >= 0 && n < c.LineCount() {
			return c.ByNumber(n), nil
		}
		return nil, fmt.Errorf("%s has no line %q (a line name such as GPIO17, or an offset 0-%d)", c.Name(), pin, c.LineCount()-1)
	}
}

// OpenWith makes a bus whose pins lookup finds (tests hand in fakes;
// gpioreg.ByName fits once wrapped).
func OpenWith(lookup func(pin string) (periphgpio.PinIO, error)) *Bus {
	return &Bus{lookup: lookup, now: time.Now, sleep: adapter.Sleep, slice: time.Second, used: map[string]string{}}
}

// Close releases nothing: periph keeps the chip's lines; the outputs
// stay at their level.
func (b *Bus) Close() error { return nil }

// Drivers.
const (
	DriverInput   = "input"
	DriverCounter = "counter"
	DriverOutput  = "output"
)

// settings each driver reads besides driver and pin.
var used = map[string][]string{
	DriverInput:   {"edge", "pull", "debounce", "active_low", "key"},
	DriverCounter: {"edge", "pull", "debounce", "active_low", "scale", "key"},
	DriverOutput:  {"active_low", "initial", "key"},
}

var (
	edges = map[string]periphgpio.Edge{"rising": periphgpio.RisingEdge, "falling": periphgpio.FallingEdge, "both": periphgpio.BothEdges}
	pulls = map[string]periphgpio.Pull{"": periphgpio.PullNoChange, "up": periphgpio.PullUp, "down": periphgpio.PullDown, "none": periphgpio.Float}
)

// ValidateDevice checks a device's settings, naming keys relative to its
// source section.
func ValidateDevice(c adapter.SensorConfig) error {
	var p configs.Problems
	u, ok := used[c.Driver]
	if !ok {
		p.Add("driver", "%q is not a GPIO driver (input, counter, output)", c.Driver)
		return p.Err()
	}
	if c.Pin == "" {
		p.Add("pin", "is required (a line name such as GPIO17, or an offset)")
	}
	if _, ok := edges[c.Edge]; !ok && c.Edge != "" {
		p.Add("edge", "%q is not rising, falling or both", c.Edge)
	}
	if _, ok := pulls[c.Pull]; !ok {
		p.Add("pull", "%q is not up, down or none", c.Pull)
	}
	if c.Debounce < 0 {
		p.Add("debounce", "%v is negative", c.Debounce)
	}
	switch c.Initial {
	case "", "true", "false":
	default:
		p.Add("initial", "%q is not true or false", c.Initial)
	}
	c.CheckSensor(&p, nil, append([]string{"pin"}, u...)...)
	return p.Err()
}

// Source makes the source of a device on the bus: it finds the line but
// configures it only at the first poll or watch.
func (b *Bus) Source(cfg adapter.SensorConfig) (adapter.Source, error) {
	if err := ValidateDevice(cfg); err != nil {
		return nil, fmt.Errorf("gpio: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if other, dup := b.used[cfg.Pin]; dup {
		return nil, fmt.Errorf("gpio: pin %s is already used by an %s device", cfg.Pin, other)
	}
	pin, err := b.lookup(cfg.Pin)
	if err != nil {
		return nil, fmt.Errorf("gpio: %w", err)
	}
	b.used[cfg.Pin] = cfg.Driver
	l := &line{pin: pin, name: cfg.Pin, activeLow: cfg.ActiveLow, pull: pulls[cfg.Pull]}
	switch cfg.Driver {
	case DriverInput:
		return &input{line: l, bus: b, key: cfg.KeyOr("level"), edge: edgeOr(cfg.Edge, periphgpio.BothEdges), debounce: cfg.Debounce}, nil
	case DriverCounter:
		return newCounter(b, l, cfg), nil
	default:
		return newOutput(l, cfg), nil
	}
}

func edgeOr(s string, def periphgpio.Edge) periphgpio.Edge {
	if e, ok := edges[s]; ok {
		return e
	}
	return def
}

// line is a pin and how a device sees it.
type line struct {
	pin       periphgpio.PinIO
	name      string
	activeLow bool
	pull      periphgpio.Pull

	mu  sync.Mutex
	set bool // configured as an input (In called)
}

// in configures the line as an input reacting to edge, once.
func (l *line) in(edge periphgpio.Edge) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.set {
		return nil
	}
	if err := l.pin.In(l.pull, edge); err != nil {
		return adapter.Errorf(adapter.KindDevice, fmt.Errorf("gpio: %s: set up as input: %w", l.name, err))
	}
	l.set = true
	return nil
}

// level is the line's logical level (inverted when active low).
func (l *line) level() bool { return bool(l.pin.Read()) != l.activeLow }

// waitEdge waits for an edge for at most slice; it returns false when
// none came.
func (l *line) waitEdge(slice time.Duration) bool { return l.pin.WaitForEdge(slice) }

// watchHalt interrupts the pin's wait when ctx ends; call the returned
// stop when the watch returns.
func (l *line) watchHalt(ctx context.Context) (stop func() bool) {
	return context.AfterFunc(ctx, func() { _ = l.pin.Halt() })
}

// DeviceNode is the chip's device node ("/dev/gpiochip0"); ok is false
// when the chip is named by its label, found only by looking.
func (c BusConfig) DeviceNode() (path string, ok bool) {
	name := c.Chip
	if name == "" {
		name = DefaultChip
	}
	switch {
	case strings.HasPrefix(name, "/dev/"):
		return name, true
	case strings.HasPrefix(name, "gpiochip"):
		return "/dev/" + name, true
	}
	return "", false
}
