package gpio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	periphgpio "periph.io/x/conn/v3/gpio"

	"github.com/ferry-iot/ferry/devices/adapter"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// testBus is a bus on fake pins GPIO17 and GPIO27 whose debounce waits
// return at once, after the bounce of an edge sent with one.
type testBus struct {
	*Bus
	clock *fakeClock
	pins  map[string]*fakePin
}

func newTestBus() *testBus {
	clock := &fakeClock{t: t0}
	tb := &testBus{clock: clock, pins: map[string]*fakePin{}}
	for _, n := range []string{"GPIO17", "GPIO27"} {
		tb.pins[n] = newFakePin(n, clock)
	}
	tb.Bus = OpenWith(func(name string) (periphgpio.PinIO, error) {
		if p := tb.pins[name]; p != nil {
			return p, nil
		}
		return nil, fmt.Errorf("no line %q", name)
	})
	tb.now = clock.now
	tb.slice = 10 * time.Millisecond
	tb.sleep = func(ctx context.Context, _ time.Duration) error {
		for _, p := range tb.pins {
			p.bounceBack()
		}
		return ctx.Err()
	}
	return tb
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
// arrive on the channel.
func watch(t *testing.T, src adapter.Source) (<-chan adapter.Reading, func()) {
	t.Helper()
	w, ok := src.(adapter.Watcher)
	if !ok {
		t.Fatalf("%T is no Watcher", src)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan adapter.Reading, 16)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := w.Watch(ctx, func(r adapter.Reading) { out <- r }); err != nil {
			t.Error(err)
		}
	}()
	return out, func() { cancel(); wg.Wait() }
}

// send plays an edge to level at t0+ms; it returns once the watch has
// taken it.
func (p *fakePin) send(level periphgpio.Level, ms int) {
	p.edges <- edge{level: level, at: t0.Add(time.Duration(ms) * time.Millisecond)}
}

// sendBounce plays an edge whose level is back where it was by the end
// of the debounce wait.
func (p *fakePin) sendBounce(level periphgpio.Level, ms int) {
	p.edges <- edge{level: level, at: t0.Add(time.Duration(ms) * time.Millisecond), bounce: true}
}

// expect takes the readings the watch emits, failing on a missing one.
func expect(t *testing.T, ch <-chan adapter.Reading, key string, levels []bool, ms []int) {
	t.Helper()
	for i, want := range levels {
		select {
		case r := <-ch:
			kv := r.Telemetry[0]
			at := t0.Add(time.Duration(ms[i]) * time.Millisecond)
			if len(r.Telemetry) != 1 || kv.Key != key || kv.Value.Kind != tb.KindBool || kv.Value.Bool != want || !r.Time.Equal(at) {
				t.Errorf("reading %d: %v at %v, want %s=%v at %v", i, r.Telemetry, r.Time, key, want, at)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("reading %d (%v) never came", i, want)
		}
	}
}

// nothing checks no reading is pending once the watch has taken one more
// edge (the unbuffered edge channel makes that a barrier).
func nothing(t *testing.T, ch <-chan adapter.Reading) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("unexpected reading %v", r)
	default:
	}
}

// Both edges with a 20 ms debounce: an edge whose level has bounced back
// by the end of the wait emits nothing; readings carry the edge's time.
func TestInputBothDebounced(t *testing.T) {
	b := newTestBus()
	pin := b.pins["GPIO17"]
	src := b.source(t, adapter.SensorConfig{Driver: DriverInput, Pull: "up", Debounce: 20 * time.Millisecond, Key: "door"})
	r, err := src.Read(context.Background())
	if err != nil || r.Telemetry[0].Key != "door" || r.Telemetry[0].Value.Bool {
		t.Fatalf("poll: %v %v", r, err)
	}
	if pin.ins != 1 || pin.pull != periphgpio.PullUp || pin.edge != periphgpio.BothEdges {
		t.Fatalf("configured %d times, %v %v", pin.ins, pin.pull, pin.edge)
	}
	ch, stop := watch(t, src)
	defer stop()
	pin.send(periphgpio.High, 100)
	expect(t, ch, "door", []bool{true}, []int{100})
	pin.sendBounce(periphgpio.Low, 200) // falls, and is back high after 20 ms
	pin.send(periphgpio.Low, 300)
	expect(t, ch, "door", []bool{false}, []int{300})
	pin.send(periphgpio.Low, 400) // same level again: nothing
	pin.send(periphgpio.High, 500)
	expect(t, ch, "door", []bool{true}, []int{500})
	nothing(t, ch)
	if pin.ins != 1 {
		t.Errorf("configured %d times", pin.ins)
	}
}

// Active low, falling edges: a contact closing to ground reads true;
// without debounce every edge emits; with it a glitch is dropped.
func TestInputFalling(t *testing.T) {
	b := newTestBus()
	pin := b.pins["GPIO17"]
	pin.setLevel(periphgpio.High)
	src := b.source(t, adapter.SensorConfig{Driver: DriverInput, Edge: "falling", ActiveLow: true})
	ch, stop := watch(t, src)
	pin.send(periphgpio.Low, 10)
	pin.send(periphgpio.Low, 20)
	expect(t, ch, "level", []bool{true, true}, []int{10, 20})
	stop()

	b = newTestBus()
	pin = b.pins["GPIO27"]
	src = b.source(t, adapter.SensorConfig{Driver: DriverInput, Pin: "GPIO27", Edge: "falling", ActiveLow: true, Debounce: time.Millisecond})
	ch, stop = watch(t, src)
	defer stop()
	pin.sendBounce(periphgpio.Low, 10)
	pin.send(periphgpio.Low, 20)
	expect(t, ch, "level", []bool{true}, []int{20})
	pin.send(periphgpio.High, 30)
	nothing(t, ch)
}

// 10 pulses 100 ms apart, each followed by a bounce 2 ms later, with a
// 20 ms debounce and 0.5 L per pulse: 10 pulses, 5 L. The next 10 s
// bring 5 more: 15 pulses, 0.5/s, 7.5 L, 0.25 L/s.
func TestCounter(t *testing.T) {
	b := newTestBus()
	pin := b.pins["GPIO17"]
	src := b.source(t, adapter.SensorConfig{Driver: DriverCounter, Pull: "down", Debounce: 20 * time.Millisecond, Scale: 0.5, Key: "water"})
	c := src.(*counter)
	_, stop := watch(t, src)
	defer stop()
	for i := 1; i <= 10; i++ {
		pin.send(periphgpio.High, 100*i)
		pin.send(periphgpio.High, 100*i+2)
	}
	waitCount(t, c, 10)
	b.clock.set(t0.Add(10 * time.Second))
	checkCounter(t, src, 10, 1, 5, 0.5)
	for i := 1; i <= 5; i++ {
		pin.send(periphgpio.High, 10000+1000*i)
	}
	waitCount(t, c, 15)
	b.clock.set(t0.Add(20 * time.Second))
	checkCounter(t, src, 15, 0.5, 7.5, 0.25)
	if pin.edge != periphgpio.RisingEdge || pin.pull != periphgpio.PullDown {
		t.Errorf("configured %v %v", pin.edge, pin.pull)
	}
}

func waitCount(t *testing.T, c *counter, n int64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for c.count.Load() != n {
		if time.Now().After(deadline) {
			t.Fatalf("count %d, want %d", c.count.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
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
	b.clock.set(t0.Add(time.Second))
	r, err := src.Read(context.Background())
	if err != nil || len(r.Telemetry) != 2 || r.Telemetry[0].Value.Long != 0 || r.Telemetry[1].Value.Double != 0 {
		t.Fatalf("got %v %v", r.Telemetry, err)
	}
	if b.pins["GPIO17"].edge != periphgpio.BothEdges {
		t.Fatal("edge")
	}
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
