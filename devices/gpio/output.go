package gpio

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"periph.io/x/host/v3/gpioioctl"

	periphgpio "periph.io/x/conn/v3/gpio"

	"github.com/ferry-iot/ferry/devices/adapter"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// output is a line the server drives: RPC set, get and toggle, and the
// shared attribute named key.
type output struct {
	*line
	key     string
	initial string
	// readBack: the pin reads its driven level. periph's character-device
	// lines do not: their Read turns an output into an input, so for
	// those the level last driven is reported.
	readBack bool

	mu     sync.Mutex // the level; calls and polls come from the bus goroutine, Close from the manager
	driven bool       // Out was called
	level  bool       // logical level last driven
}

func newOutput(l *line, c adapter.SensorConfig) *output {
	_, chardev := l.pin.(*gpioioctl.GPIOLine)
	return &output{line: l, key: c.KeyOr("level"), initial: c.Initial, readBack: !chardev}
}

// drive sets the logical level.
func (d *output) drive(level bool) error {
	if err := d.pin.Out(periphgpio.Level(level != d.activeLow)); err != nil {
		return adapter.Errorf(adapter.KindDevice, fmt.Errorf("gpio: %s: drive %v: %w", d.name, level, err))
	}
	d.driven, d.level = true, level
	return nil
}

// setupLocked drives the initial level at the first use.
func (d *output) setupLocked() error {
	if d.driven || d.initial == "" {
		return nil
	}
	return d.drive(d.initial == "true")
}

// current is the logical level: read back, or the one last driven (an
// output never driven reads as an input does).
func (d *output) currentLocked() bool {
	if d.driven && !d.readBack {
		return d.level
	}
	return d.line.level()
}

// Read reports the level.
func (d *output) Read(context.Context) (adapter.Reading, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.setupLocked(); err != nil {
		return adapter.Reading{}, err
	}
	return adapter.Reading{Telemetry: []tb.KV{{Key: d.key, Value: tb.Value{Kind: tb.KindBool, Bool: d.currentLocked()}}}}, nil
}

// Call answers RPC: set (params true/false, 1/0, "on"/"off" or
// {"value": ...}), toggle and get; each answers {"value": level}.
func (d *output) Call(_ context.Context, method string, params json.RawMessage) (json.RawMessage, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.setupLocked(); err != nil {
		return nil, err
	}
	switch method {
	case "set":
		v, err := parseLevel(params)
		if err != nil {
			return nil, adapter.Errorf(adapter.KindRequest, fmt.Errorf("gpio: %s: set: %w", d.name, err))
		}
		if err := d.drive(v); err != nil {
			return nil, err
		}
	case "toggle":
		if err := d.drive(!d.currentLocked()); err != nil {
			return nil, err
		}
	case "get":
	default:
		return nil, adapter.Errorf(adapter.KindRequest, fmt.Errorf("gpio: %s: %q (set, toggle, get): %w", d.name, method, adapter.ErrUnknownMethod))
	}
	return json.Marshal(map[string]bool{"value": d.currentLocked()})
}

// WriteAttribute drives the line from the shared attribute named key (a
// bool, or a number: 0 is false).
func (d *output) WriteAttribute(_ context.Context, key string, v tb.Value) (bool, error) {
	if key != d.key {
		return false, nil
	}
	var level bool
	switch v.Kind {
	case tb.KindBool:
		level = v.Bool
	case tb.KindLong:
		level = v.Long != 0
	case tb.KindDouble:
		level = v.Double != 0
	default:
		return true, adapter.Errorf(adapter.KindRequest, fmt.Errorf("gpio: %s: attribute %s: %v is not a bool", d.name, key, v.Kind))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return true, d.drive(level)
}

// parseLevel reads set's params.
func parseLevel(params json.RawMessage) (bool, error) {
	var v any
	if err := json.Unmarshal(params, &v); err != nil {
		return false, fmt.Errorf("params %s: %w", params, err)
	}
	if m, ok := v.(map[string]any); ok {
		if v, ok = m["value"]; !ok {
			return false, fmt.Errorf("params %s have no value", params)
		}
	}
	switch x := v.(type) {
	case bool:
		return x, nil
	case float64:
		if x == 0 || x == 1 {
			return x == 1, nil
		}
	case string:
		switch strings.ToLower(x) {
		case "true", "on", "1", "high":
			return true, nil
		case "false", "off", "0", "low":
			return false, nil
		}
	}
	return false, fmt.Errorf("params %s are not true or false", params)
}
