package gpio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"
	"periph.io/x/conn/v3/gpio/gpiotest"

	periphgpio "periph.io/x/conn/v3/gpio"

	"github.com/ferry-iot/ferry/devices/adapter"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// testPin is periph's test double with a record of how the driver set the
// line up and drove it: gpiotest.Pin keeps only the last pull and level,
// not the edge In was given, nor how often In and Out were called.
type testPin struct {
	*gpiotest.Pin
	// Guarded by the Pin's mutex, as its L and P are.
	setups []setup
	outs   []periphgpio.Level
}

type setup struct {
	pull periphgpio.Pull
	edge periphgpio.Edge
}

func (p *testPin) In(pull periphgpio.Pull, edge periphgpio.Edge) error {
	p.Lock()
	p.setups = append(p.setups, setup{pull, edge})
	p.Unlock()
	return p.Pin.In(pull, edge)
}

func (p *testPin) Out(l periphgpio.Level) error {
	p.Lock()
	p.outs = append(p.outs, l)
	p.Unlock()
	return p.Pin.Out(l)
}

// checkSetups checks the line was set up as an input once, with pull and
// edge.
func (p *testPin) checkSetups(t *testing.T, pull periphgpio.Pull, edge periphgpio.Edge) {
	t.Helper()
	p.Lock()
	defer p.Unlock()
	if want := []setup{{pull, edge}}; !slices.Equal(p.setups, want) {
		t.Errorf("set up as %v, want %v", p.setups, want)
	}
}

func (p *testPin) driven() []periphgpio.Level {
	p.Lock()
	defer p.Unlock()
	return slices.Clone(p.outs)
}

// set puts the line at l, as the world outside does to an input.
func (p *testPin) set(l periphgpio.Level) {
	p.Lock()
	p.L = l
	p.Unlock()
}

// testBus is a bus on pins GPIO17 and GPIO27 that reads the time, waits
// for edges and waits out debounce on one fake clock, which only the test
// moves.
//
// Its slice is an hour, longer than any test moves the clock, so a wait
// for an edge never times out, and gpiotest's WaitForEdge leaves its
// timer on the clock when an edge comes: each edge the watch takes adds
// one waiter for good. That makes the count of waiters a barrier: once
// the watch has taken its n-th edge there are n+1 waiters, while it waits
// out debounce and when it waits for the next edge.
type testBus struct {
	*Bus
	clock *clockwork.FakeClock
	pins  map[string]*testPin
	idle  int // waiters on the clock while the watch waits for an edge
}

func newTestBus() *testBus {
	clock := clockwork.NewFakeClockAt(t0)
	b := &testBus{clock: clock, pins: map[string]*testPin{}}
	for n, name := range map[int]string{17: "GPIO17", 27: "GPIO27"} {
		b.pins[name] = &testPin{Pin: &gpiotest.Pin{N: name, Num: n, Clock: clock, EdgesChan: make(chan periphgpio.Level)}}
	}
	b.Bus = OpenWith(func(name string) (periphgpio.PinIO, error) {
		if p := b.pins[name]; p != nil {
			return p, nil
		}
		return nil, fmt.Errorf("no line %q", name)
	})
	b.now = clock.Now
	b.slice = time.Hour
	b.sleep = func(ctx context.Context, d time.Duration) error {
		select {
		case <-clock.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return b
}

func (b *testBus) source(t *testing.T, cfg adapter.SensorConfig) adapter.Source {
	t.Helper()
	if cfg.Pin == "" {
		cfg.Pin = "GPIO17"
	}
	src, err := b.Source(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// watch runs src's Watch until the returned stop is called; readings
// arrive on the channel. It returns once the watch waits for its first
// edge.
func (b *testBus) watch(t *testing.T, src adapter.Source) (<-chan adapter.Reading, func()) {
	t.Helper()
	w, ok := src.(adapter.Watcher)
	if !ok {
		t.Fatalf("%T is no Watcher", src)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan adapter.Reading, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Watch(ctx, func(r adapter.Reading) { out <- r }); err != nil {
			t.Error(err)
		}
	}()
	b.idle = 1
	b.waitIdle(t)
	return out, func() {
		cancel()
		// gpiotest's Halt does not end a WaitForEdge: the slice does.
		deadline := time.After(2 * time.Second)
		for {
			b.clock.Advance(b.slice)
			select {
			case <-done:
				return
			case <-deadline:
				t.Fatal("the watch did not end with its context")
			case <-time.After(time.Millisecond):
			}
		}
	}
}

// waitIdle waits until the clock has as many waiters as when the watch
// waits for an edge.
func (b *testBus) waitIdle(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := b.clock.BlockUntilContext(ctx, b.idle); err != nil {
		t.Fatalf("the watch is not waiting for edge %d", b.idle)
	}
}

// at moves the clock to t0+ms and returns once the watch waits for an
// edge (after its debounce wait, if the move ended one).
func (b *testBus) at(t *testing.T, ms int) {
	t.Helper()
	d := t0.Add(time.Duration(ms) * time.Millisecond).Sub(b.clock.Now())
	if d < 0 {
		t.Fatalf("the clock is past %d ms", ms)
	}
	b.clock.Advance(d)
	b.waitIdle(t)
}

// edge plays an edge of p to level at t0+ms; it returns once the watch
// has taken it and waits out its debounce or for the next edge.
func (b *testBus) edge(t *testing.T, p *testPin, level periphgpio.Level, ms int) {
	t.Helper()
	b.at(t, ms)
	select {
	case p.EdgesChan <- level:
	case <-time.After(2 * time.Second):
		t.Fatalf("the watch never took the edge at %d ms", ms)
	}
	b.idle++
	b.waitIdle(t)
}

// emitted checks the readings the watch has emitted since the last check:
// key=levels[i] stamped t0+ms[i], and no more.
func emitted(t *testing.T, ch <-chan adapter.Reading, key string, levels []bool, ms []int) {
	t.Helper()
	var got []adapter.Reading
	for len(ch) > 0 {
		got = append(got, <-ch)
	}
	if len(got) != len(levels) {
		t.Fatalf("readings %v, want %s=%v at %v ms", got, key, levels, ms)
	}
	for i, r := range got {
		at := t0.Add(time.Duration(ms[i]) * time.Millisecond)
		if len(r.Telemetry) != 1 {
			t.Errorf("reading %d: %v, want %s=%v at %v", i, r.Telemetry, key, levels[i], at)
			continue
		}
		if kv := r.Telemetry[0]; kv.Key != key || kv.Value.Kind != tb.KindBool || kv.Value.Bool != levels[i] || !r.Time.Equal(at) {
			t.Errorf("reading %d: %v at %v, want %s=%v at %v", i, r.Telemetry, r.Time, key, levels[i], at)
		}
	}
}

// Both edges with a 20 ms debounce: an edge whose level has bounced back
// by the end of the wait emits nothing; readings carry the edge's time.
func TestInputBothDebounced(t *testing.T) {
	b := newTestBus()
	pin := b.pins["GPIO17"]
	src := b.source(t, adapter.SensorConfig{Driver: DriverInput, Pull: "up", Debounce: 20 * time.Millisecond, Key: "door"})
	// gpiotest pulls an open line up: the poll reads high.
	r, err := src.Read(context.Background())
	if err != nil || r.Telemetry[0].Key != "door" || !r.Telemetry[0].Value.Bool {
		t.Fatalf("poll: %v %v", r, err)
	}
	pin.checkSetups(t, periphgpio.PullUp, periphgpio.BothEdges)
	ch, stop := b.watch(t, src)
	defer stop()
	b.edge(t, pin, periphgpio.Low, 100)
	b.at(t, 120)
	emitted(t, ch, "door", []bool{false}, []int{100})
	b.edge(t, pin, periphgpio.High, 200) // rises,
	pin.set(periphgpio.Low)              // and is back low within 20 ms
	b.at(t, 220)
	b.edge(t, pin, periphgpio.High, 300)
	b.at(t, 320)
	emitted(t, ch, "door", []bool{true}, []int{300})
	b.edge(t, pin, periphgpio.High, 400) // same level again: nothing
	b.at(t, 420)
	b.edge(t, pin, periphgpio.Low, 500)
	b.at(t, 520)
	emitted(t, ch, "door", []bool{false}, []int{500})
	// Polls do not set the line up again (that would pull it back high).
	if r, err := src.Read(context.Background()); err != nil || r.Telemetry[0].Value.Bool {
		t.Errorf("poll after the edges: %v %v", r, err)
	}
	pin.checkSetups(t, periphgpio.PullUp, periphgpio.BothEdges)
}

// Active low, falling edges: a contact closing to ground reads true;
// without debounce every edge emits; with it a glitch is dropped.
func TestInputFalling(t *testing.T) {
	b := newTestBus()
	pin := b.pins["GPIO17"]
	pin.set(periphgpio.High)
	src := b.source(t, adapter.SensorConfig{Driver: DriverInput, Edge: "falling", ActiveLow: true})
	ch, stop := b.watch(t, src)
	b.edge(t, pin, periphgpio.Low, 10)
	b.edge(t, pin, periphgpio.Low, 20)
	emitted(t, ch, "level", []bool{true, true}, []int{10, 20})
	stop()
	pin.checkSetups(t, periphgpio.PullNoChange, periphgpio.FallingEdge)

	b = newTestBus()
	pin = b.pins["GPIO27"]
	pin.set(periphgpio.High)
	src = b.source(t, adapter.SensorConfig{Driver: DriverInput, Pin: "GPIO27", Edge: "falling", ActiveLow: true, Debounce: time.Millisecond})
	ch, stop = b.watch(t, src)
	defer stop()
	b.edge(t, pin, periphgpio.Low, 10) // falls,
	pin.set(periphgpio.High)           // and is back high within 1 ms
	b.at(t, 11)
	b.edge(t, pin, periphgpio.Low, 20)
	b.at(t, 21)
	emitted(t, ch, "level", []bool{true}, []int{20})
	b.edge(t, pin, periphgpio.High, 30)
	b.at(t, 31)
	emitted(t, ch, "level", nil, nil)
}

// 10 pulses 100 ms apart, each followed by a bounce 2 ms later, with a
// 20 ms debounce and 0.5 L per pulse: 10 pulses, 5 L. The next 10 s
// bring 5 more: 15 pulses, 0.5/s, 7.5 L, 0.25 L/s.
func TestCounter(t *testing.T) {
	b := newTestBus()
	pin := b.pins["GPIO17"]
	src := b.source(t, adapter.SensorConfig{Driver: DriverCounter, Pull: "down", Debounce: 20 * time.Millisecond, Scale: 0.5, Key: "water"})
	_, stop := b.watch(t, src)
	defer stop()
	for i := 1; i <= 10; i++ {
		b.edge(t, pin, periphgpio.High, 100*i)
		b.edge(t, pin, periphgpio.High, 100*i+2)
	}
	b.at(t, 10000)
	checkCounter(t, src, 10, 1, 5, 0.5)
	for i := 1; i <= 5; i++ {
		b.edge(t, pin, periphgpio.High, 10000+1000*i)
	}
	b.at(t, 20000)
	checkCounter(t, src, 15, 0.5, 7.5, 0.25)
	pin.checkSetups(t, periphgpio.PullDown, periphgpio.RisingEdge)
}

func checkCounter(t *testing.T, src adapter.Source, count int64, rate, value, valueRate float64) {
	t.Helper()
	r, err := src.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	kv := r.Telemetry
	if len(kv) != 4 || kv[0].Key != "count" || kv[0].Value.Kind != tb.KindLong || kv[0].Value.Long != count ||
		kv[1].Key != "rate" || kv[1].Value.Double != rate || kv[2].Key != "water" || kv[2].Value.Double != value ||
		kv[3].Key != "water_rate" || kv[3].Value.Double != valueRate {
		t.Fatalf("got %v, want count=%d rate=%v water=%v water_rate=%v", kv, count, rate, value, valueRate)
	}
}

func TestCounterUnscaled(t *testing.T) {
	b := newTestBus()
	src := b.source(t, adapter.SensorConfig{Driver: DriverCounter, Edge: "both"})
	b.clock.Advance(time.Second)
	r, err := src.Read(context.Background())
	if err != nil || len(r.Telemetry) != 2 || r.Telemetry[0].Value.Long != 0 || r.Telemetry[1].Value.Double != 0 {
		t.Fatalf("got %v %v", r.Telemetry, err)
	}
	b.pins["GPIO17"].checkSetups(t, periphgpio.PullNoChange, periphgpio.BothEdges)
}

func call(t *testing.T, c adapter.Caller, method, params string) string {
	t.Helper()
	out, err := c.Call(context.Background(), method, json.RawMessage(params))
	if err != nil {
		t.Fatalf("%s %s: %v", method, params, err)
	}
	return string(out)
}

func TestOutput(t *testing.T) {
	b := newTestBus()
	pin := b.pins["GPIO17"]
	pin.set(periphgpio.High) // so that only driving initial reads false
	src := b.source(t, adapter.SensorConfig{Driver: DriverOutput, Initial: "false", Key: "relay"})
	c := src.(adapter.Caller)
	r, err := src.Read(context.Background())
	if err != nil || r.Telemetry[0].Key != "relay" || r.Telemetry[0].Value.Bool {
		t.Fatalf("got %v %v", r, err)
	}
	for _, step := range []struct{ method, params, want string }{
		{"set", "true", `{"value":true}`},
		{"get", "", `{"value":true}`},
		{"set", `{"value":0}`, `{"value":false}`},
		{"toggle", "", `{"value":true}`},
		{"set", `"off"`, `{"value":false}`},
	} {
		if got := call(t, c, step.method, step.params); got != step.want {
			t.Errorf("%s %s: %s, want %s", step.method, step.params, got, step.want)
		}
	}
	want := []periphgpio.Level{periphgpio.Low, periphgpio.High, periphgpio.Low, periphgpio.High, periphgpio.Low}
	if got := pin.driven(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("driven %v, want %v", got, want)
	}
	_, err = c.Call(context.Background(), "blink", nil)
	if !errors.Is(err, adapter.ErrUnknownMethod) || adapter.KindOf(err) != adapter.KindRequest {
		t.Errorf("unknown method: %v", err)
	}
	_, err = c.Call(context.Background(), "set", json.RawMessage(`{"value":2}`))
	if adapter.KindOf(err) != adapter.KindRequest || !strings.Contains(err.Error(), "are not true or false") {
		t.Errorf("bad params: %v", err)
	}
	w := src.(adapter.AttributeWriter)
	if ok, err := w.WriteAttribute(context.Background(), "relay", tb.Value{Kind: tb.KindBool, Bool: true}); !ok || err != nil {
		t.Fatalf("attribute: %v %v", ok, err)
	}
	if ok, _ := w.WriteAttribute(context.Background(), "other", tb.Value{Kind: tb.KindBool}); ok {
		t.Fatal("handled another key")
	}
	// Read back from the pin: its level.
	if r, _ := src.Read(context.Background()); !r.Telemetry[0].Value.Bool || pin.Read() != periphgpio.High {
		t.Fatalf("after the attribute: %v", r.Telemetry)
	}
}

// Active low: true drives the line low.
func TestOutputActiveLow(t *testing.T) {
	b := newTestBus()
	pin := b.pins["GPIO27"]
	pin.set(periphgpio.High) // so that only driving initial reads true
	src := b.source(t, adapter.SensorConfig{Driver: DriverOutput, Pin: "GPIO27", ActiveLow: true, Initial: "true"})
	if got := call(t, src.(adapter.Caller), "get", ""); got != `{"value":true}` {
		t.Fatal(got)
	}
	if got := pin.driven(); len(got) != 1 || got[0] != periphgpio.Low {
		t.Fatalf("driven %v", got)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  adapter.SensorConfig
		want []string
	}{
		{adapter.SensorConfig{Driver: DriverInput, Pin: "GPIO4"}, nil},
		{adapter.SensorConfig{Driver: DriverInput}, []string{"pin: is required"}},
		{adapter.SensorConfig{Driver: "pwm", Pin: "1"}, []string{`driver: "pwm" is not a GPIO driver`}},
		{adapter.SensorConfig{Driver: DriverInput, Pin: "1", Edge: "up", Pull: "sideways", Debounce: -1, Scale: 2}, []string{
			`edge: "up" is not rising, falling or both`, `pull: "sideways" is not up, down or none`, "debounce: -1ns is negative",
			"scale: has no effect with driver input"}},
		{adapter.SensorConfig{Driver: DriverOutput, Pin: "1", Initial: "on", Edge: "both", Keys: map[string]string{"level": "x"}}, []string{
			`initial: "on" is not true or false`, "edge: has no effect with driver output", "keys: has no effect with driver output"}},
	} {
		err := ValidateDevice(tc.cfg)
		var got []string
		if err != nil {
			got = strings.Split(err.Error(), "\n")
		}
		if len(got) != len(tc.want) {
			t.Errorf("%+v: got %q, want %q", tc.cfg, got, tc.want)
			continue
		}
		for i := range got {
			if !strings.HasPrefix(got[i], tc.want[i]) {
				t.Errorf("%+v: got %q, want %q", tc.cfg, got[i], tc.want[i])
			}
		}
	}
	b := newTestBus()
	b.source(t, adapter.SensorConfig{Driver: DriverInput})
	if _, err := b.Source(adapter.SensorConfig{Driver: DriverOutput, Pin: "GPIO17"}); err == nil ||
		!strings.Contains(err.Error(), "pin GPIO17 is already used by an input device") {
		t.Fatalf("shared pin: %v", err)
	}
	if _, err := b.Source(adapter.SensorConfig{Driver: DriverOutput, Pin: "GPIO99"}); err == nil {
		t.Fatal("missing pin")
	}
}

// No chip here: the error names the chip and says none was found.
func TestOpenMissingChip(t *testing.T) {
	_, err := Open(BusConfig{Chip: "gpiochip-nonesuch"})
	if adapter.KindOf(err) != adapter.KindConnection || !strings.Contains(err.Error(), "gpio: no chip gpiochip-nonesuch (found: ") {
		t.Fatalf("got %v", err)
	}
}
