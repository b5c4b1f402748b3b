package modbus

import (
	"sync"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/devices/adapter"
	"github.com/ferry-iot/ferry/devices/modbus/modbustest"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// captureSink records what the adapters store.
type captureSink struct {
	mu   sync.Mutex
	recs map[string][]int64 // sample times by device
}

func newCaptureSink() *captureSink { return &captureSink{recs: map[string][]int64{}} }

func (s *captureSink) Telemetry(_ string, d adapter.Info, ts int64, _ []tb.KV) error {
	s.mu.Lock()
	s.recs[d.Name] = append(s.recs[d.Name], ts)
	s.mu.Unlock()
	return nil
}

func (s *captureSink) Attributes(string, adapter.Info, int64, []tb.KV) error { return nil }

func (s *captureSink) times(dev string) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.recs[dev]...)
}

func unitTables(v int) modbustest.Tables {
	return modbustest.Tables{HR: map[int]int{0: v, 1: v + 1}}
}

func pollDevice(name string, unit int, bus string, poll time.Duration, line *Line, t *testing.T) adapter.DeviceSettings {
	t.Helper()
	dev, err := NewDevice(line, DeviceConfig{Unit: unit, Timeseries: []Point{
		{Key: "a", Register: "holding", Address: 0, Type: "uint16"}, {Key: "b", Register: "holding", Address: 1, Type: "uint16"}}})
	if err != nil {
		t.Fatal(err)
	}
	return adapter.DeviceSettings{Info: adapter.Info{Name: name, Bus: bus}, Poll: poll, Source: dev}
}

// TestPymodbusRTUDeadUnitDoesNotStallLine: three units on one RTU line
// (pymodbus on a socat pty pair); unit 3 stops answering. Units 1 and 2
// keep their one-second period — no poll of theirs is lost — while unit 3
// is retried with backoff, then degraded and probed once per spell, and
// comes back when it answers again.
func TestPymodbusRTUDeadUnitDoesNotStallLine(t *testing.T) {
	slave := modbustest.StartRTU(t, map[int]modbustest.Tables{1: unitTables(10), 2: unitTables(20), 3: unitTables(30)}, 9600)
	line, err := NewLine(BusConfig{URL: "rtu://" + slave.Port, Baud: 9600, Timeout: 300 * time.Millisecond,
		DelayBetweenRequests: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sink := newCaptureSink()
	poll := 500 * time.Millisecond
	m, err := adapter.New(adapter.Config{Sink: sink},
		[]adapter.BusSettings{{Name: "line-1", Kind: "modbus", Line: line, DegradeAfter: 3, DegradeFor: 2 * time.Second}},
		[]adapter.DeviceSettings{pollDevice("u1", 1, "line-1", poll, line, t), pollDevice("u2", 2, "line-1", poll, line, t),
			pollDevice("u3", 3, "line-1", poll, line, t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	waitFor(t, "first polls of all three", func() bool { return len(sink.times("u3")) >= 2 && len(sink.times("u1")) >= 2 })
	slave.Cmd("dead 3")
	deadAt := time.Now()
	time.Sleep(6 * time.Second)
	window := time.Since(deadAt)
	st3, _ := m.Status("u3")
	if st3.Errors[adapter.KindTimeout] < 3 || st3.Skipped == 0 {
		t.Errorf("dead unit: %d timeouts, %d skipped polls; want ≥ 3 timeouts then skips", st3.Errors[adapter.KindTimeout], st3.Skipped)
	}
	// Timeouts in 6 s: at most the backoff (3 cycles) plus a probe per
	// 2 s spell, not one per period (12).
	if n := st3.Errors[adapter.KindTimeout]; n > 6 {
		t.Errorf("dead unit timed out %d times in %v: not degraded", n, window)
	}
	for _, name := range []string{"u1", "u2"} {
		var in []int64
		for _, ts := range sink.times(name) {
			if ts >= deadAt.UnixMilli() {
				in = append(in, ts)
			}
		}
		want := int(window / poll)
		if len(in) < want-1 {
			t.Errorf("%s: %d polls while unit 3 was dead, want ≥ %d (period kept)", name, len(in), want-1)
		}
		for i := 1; i < len(in); i++ {
			// A poll may wait for one timeout of the dead unit: never more.
			if gap := time.Duration(in[i]-in[i-1]) * time.Millisecond; gap > poll+400*time.Millisecond {
				t.Errorf("%s: %v between polls", name, gap)
			}
		}
		if st, _ := m.Status(name); st.State != "ok" || st.Failures != 0 {
			t.Errorf("%s: state %s, %d failures", name, st.State, st.Failures)
		}
	}
	if st3.State != "degraded" || m.Online("u3") {
		t.Errorf("dead unit state %q, online %v", st3.State, m.Online("u3"))
	}
	slave.Cmd("alive 3")
	before := len(sink.times("u3"))
	waitFor(t, "unit 3 polled again", func() bool { return len(sink.times("u3")) > before+1 })
	if st, _ := m.Status("u3"); st.State != "ok" || !m.Online("u3") {
		t.Errorf("revived unit state %q", st.State)
	}
}

// TestPymodbusTCPPeerRestart: the TCP slave is killed and restarted on
// the same port mid-run; the line reconnects by itself and polls resume.
func TestPymodbusTCPPeerRestart(t *testing.T) {
	slave := modbustest.StartTCP(t, map[int]modbustest.Tables{1: unitTables(1)})
	line, err := NewLine(BusConfig{URL: "tcp://" + slave.Addr, Timeout: 500 * time.Millisecond, ReconnectMax: 400 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sink := newCaptureSink()
	m, err := adapter.New(adapter.Config{Sink: sink},
		[]adapter.BusSettings{{Name: "plc", Kind: "modbus", Line: line, DegradeAfter: 1000}},
		[]adapter.DeviceSettings{pollDevice("meter", 1, "plc", 100*time.Millisecond, line, t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	waitFor(t, "polls", func() bool { return len(sink.times("meter")) >= 5 })
	slave.Kill()
	waitFor(t, "connection errors", func() bool {
		st, _ := m.Status("meter")
		return st.Errors[adapter.KindConnection] >= 3
	})
	slave.Restart()
	before := len(sink.times("meter"))
	waitFor(t, "polls after the restart", func() bool { return len(sink.times("meter")) >= before+5 })
	if st := line.Stats(); st.Connects < 2 || st.ConnectFailures == 0 {
		t.Errorf("line stats %+v: want a reconnect after failed attempts", st)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
