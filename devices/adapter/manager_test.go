package adapter

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// memSink records what the manager stores.
type memSink struct {
	mu    sync.Mutex
	ts    map[string][]int64
	attrs map[string]int
}

func newMemSink() *memSink { return &memSink{ts: map[string][]int64{}, attrs: map[string]int{}} }

func (s *memSink) Telemetry(_ string, d Info, ts int64, _ []tb.KV) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ts[d.Name] = append(s.ts[d.Name], ts)
	return nil
}

func (s *memSink) Attributes(_ string, d Info, _ int64, attrs []tb.KV) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attrs[d.Name] += len(attrs)
	return nil
}

func (s *memSink) count(dev string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ts[dev])
}

// fakeSource counts reads and fails while fail is set.
type fakeSource struct {
	reads atomic.Int64
	fail  atomic.Bool
	calls atomic.Int64
}

func (f *fakeSource) Read(context.Context) (Reading, error) {
	n := f.reads.Add(1)
	if f.fail.Load() {
		return Reading{}, Errorf(KindTimeout, errors.New("no answer"))
	}
	return Reading{Telemetry: []tb.KV{{Key: "n", Value: tb.Value{Kind: tb.KindLong, Long: n}}},
		Attributes: []tb.KV{{Key: "fw", Value: tb.Value{Kind: tb.KindString, Str: "1.0"}}}}, nil
}

func (f *fakeSource) Call(_ context.Context, method string, _ json.RawMessage) (json.RawMessage, error) {
	f.calls.Add(1)
	if method != "ping" {
		return nil, Errorf(KindRequest, ErrUnknownMethod)
	}
	return json.RawMessage(`"pong"`), nil
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestManagerPollsSpreadAndRecord: devices on one bus are polled on their
// period with their phases spread, each poll one record, attributes
// stored once while unchanged, the device online.
func TestManagerPollsSpreadAndRecord(t *testing.T) {
	sink := newMemSink()
	a, b := &fakeSource{}, &fakeSource{}
	m, err := New(Config{Sink: sink}, []BusSettings{{Name: "bus", Kind: "test"}},
		[]DeviceSettings{{Info: Info{Name: "a", Bus: "bus"}, Poll: 100 * time.Millisecond, Source: a},
			{Info: Info{Name: "b", Bus: "bus"}, Poll: 100 * time.Millisecond, Source: b}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	waitUntil(t, "ten polls each", func() bool { return sink.count("a") >= 10 && sink.count("b") >= 10 })
	sink.mu.Lock()
	ta, tbs := append([]int64(nil), sink.ts["a"]...), append([]int64(nil), sink.ts["b"]...)
	attrs := sink.attrs["a"]
	sink.mu.Unlock()
	// b's phase is half a period after a's.
	if d := tbs[0] - ta[0]; d < 25 || d > 80 {
		t.Errorf("second device first polled %d ms after the first, want about 50 (spread)", d)
	}
	for i := 1; i < len(ta); i++ {
		if d := ta[i] - ta[i-1]; d < 70 || d > 180 {
			t.Errorf("poll %d came %d ms after the one before, want about 100", i, d)
		}
	}
	if attrs != 1 {
		t.Errorf("unchanged attributes stored %d times, want once", attrs)
	}
	if st, _ := m.Status("a"); st.State != "ok" || !m.Online("a") || st.Polls < 10 || st.LastPoll == nil || !st.LastPoll.OK {
		t.Errorf("status %+v", st)
	}
}

// TestManagerBackoffThenDegrade: a failing device is retried the next
// period, then two periods later, then left alone for DegradeFor and
// probed once per spell; it is back at the first good poll, and the
// dispatcher's hook hears of it.
func TestManagerBackoffThenDegrade(t *testing.T) {
	sink := newMemSink()
	src := &fakeSource{}
	src.fail.Store(true)
	m, err := New(Config{Sink: sink}, []BusSettings{{Name: "bus", Kind: "test", DegradeAfter: 3, DegradeFor: time.Second}},
		[]DeviceSettings{{Info: Info{Name: "d", Bus: "bus"}, Poll: 20 * time.Millisecond, Source: src}})
	if err != nil {
		t.Fatal(err)
	}
	var back atomic.Int64
	m.OnOnline(func(string) { back.Add(1) })
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	waitUntil(t, "degraded", func() bool { st, _ := m.Status("d"); return st.State == "degraded" })
	start := time.Now()
	time.Sleep(500 * time.Millisecond)
	if n := src.reads.Load(); n != 3 {
		t.Errorf("%d reads %v after the device degraded (at 0, +20 ms, +60 ms), want 3: degraded devices are not polled", n, time.Since(start))
	}
	waitUntil(t, "a probe", func() bool { return src.reads.Load() == 4 })
	st, _ := m.Status("d")
	if st.Errors[KindTimeout] != 4 || st.Skipped == 0 || st.Failures != 4 || m.Online("d") {
		t.Errorf("status after the probe: %+v", st)
	}
	src.fail.Store(false)
	waitUntil(t, "back", func() bool { return m.Online("d") })
	if back.Load() != 1 {
		t.Errorf("OnOnline called %d times", back.Load())
	}
	if st, _ := m.Status("d"); st.Failures != 0 || st.DegradedUntil != nil {
		t.Errorf("status after recovery: %+v", st)
	}
}

// TestManagerRPC: calls run on the bus; unknown devices and sources that
// take no RPC are told apart; a closed manager refuses.
func TestManagerRPC(t *testing.T) {
	sink := newMemSink()
	src := &fakeSource{}
	plain := struct{ Source }{&fakeSource{}} // a Source that is not a Caller
	m, err := New(Config{Sink: sink}, []BusSettings{{Name: "bus", Kind: "test"}},
		[]DeviceSettings{{Info: Info{Name: "d", Bus: "bus"}, Poll: time.Hour, Source: src},
			{Info: Info{Name: "p", Bus: "bus"}, Poll: time.Hour, Source: plain}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := m.RPC(ctx, "d", "ping", nil); !errors.Is(err, ErrClosed) {
		t.Errorf("before Start: %v", err)
	}
	m.Start()
	if out, err := m.RPC(ctx, "d", "ping", nil); err != nil || string(out) != `"pong"` {
		t.Errorf("ping: %s %v", out, err)
	}
	if _, err := m.RPC(ctx, "d", "nope", nil); !errors.Is(err, ErrUnknownMethod) || KindOf(err) != KindRequest {
		t.Errorf("unknown method: %v", err)
	}
	if _, err := m.RPC(ctx, "x", "ping", nil); !errors.Is(err, ErrUnknownDevice) {
		t.Errorf("unknown device: %v", err)
	}
	if _, err := m.RPC(ctx, "p", "ping", nil); !errors.Is(err, ErrNotSupported) {
		t.Errorf("no RPC: %v", err)
	}
	m.Close()
	if _, err := m.RPC(ctx, "d", "ping", nil); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
}

// watchSource emits events on its own.
type watchSource struct{ fakeSource }

func (w *watchSource) Watch(ctx context.Context, emit func(Reading)) error {
	for i := range 5 {
		emit(Reading{Telemetry: []tb.KV{{Key: "edge", Value: tb.Value{Kind: tb.KindLong, Long: int64(i)}}}})
	}
	<-ctx.Done()
	return nil
}

// TestManagerWatcher: a Watcher's events become records like polls.
func TestManagerWatcher(t *testing.T) {
	sink := newMemSink()
	m, err := New(Config{Sink: sink}, []BusSettings{{Name: "gpio", Kind: "test"}},
		[]DeviceSettings{{Info: Info{Name: "door", Bus: "gpio"}, Poll: time.Hour, Source: &watchSource{}}})
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	defer m.Close()
	waitUntil(t, "events and the first poll", func() bool { return sink.count("door") >= 6 })
}

func TestManagerConfigErrors(t *testing.T) {
	for _, c := range []struct {
		buses []BusSettings
		devs  []DeviceSettings
	}{
		{[]BusSettings{{Name: "a"}, {Name: "a"}}, nil},
		{[]BusSettings{{Name: "a"}}, []DeviceSettings{{Info: Info{Name: "d", Bus: "b"}, Poll: time.Second, Source: &fakeSource{}}}},
		{[]BusSettings{{Name: "a"}}, []DeviceSettings{{Info: Info{Name: "d", Bus: "a"}, Source: &fakeSource{}}}},
		{[]BusSettings{{Name: "a"}}, []DeviceSettings{{Info: Info{Name: "d", Bus: "a"}, Poll: time.Second}}},
		{[]BusSettings{{Name: "a"}}, []DeviceSettings{{Info: Info{Name: "d", Bus: "a"}, Poll: time.Second, Source: &fakeSource{},
			Report: Report{Strategy: "never"}}}},
	} {
		if _, err := New(Config{Sink: newMemSink()}, c.buses, c.devs); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%+v %+v: %v", c.buses, c.devs, err)
		}
	}
}
