package streams

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/testkit"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// t0 is a minute boundary, so window bounds read as offsets from it.
var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC).UnixMilli()

func sec(s float64) int64 { return t0 + int64(s*1000) }

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func openLog(t *testing.T, dir string) *commitlog.Log {
	t.Helper()
	l, err := commitlog.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// put appends one telemetry record as a device's publish would be stored.
func put(t *testing.T, l *commitlog.Log, topic, key string, ts int64, values string) {
	t.Helper()
	top, err := l.EnsureTopic(topic, commitlog.TopicConfig{Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	rec := commitlog.Record{Key: []byte(key), Timestamp: ts,
		Value:   []byte(fmt.Sprintf(`{"ts":%d,"values":{%s}}`, ts, values)),
		Headers: []commitlog.Header{{Key: "device", Value: []byte(key)}, {Key: "device_type", Value: []byte("boiler")}}}
	if _, err := top.Append(context.Background(), []commitlog.Record{rec}).Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// drain runs a task until it has read everything there is and committed,
// then stops it cleanly.
func drain(t *testing.T, l *commitlog.Log, top *Topology, opts ...Options) Status {
	t.Helper()
	o := Options{CommitInterval: 10 * time.Millisecond, Logger: testLogger(t)}
	if len(opts) > 0 {
		o = opts[0]
		o.Logger = testLogger(t)
	}
	task := NewTask(l, top, o)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { task.Run(ctx); close(done) }()
	testkit.Eventually(t, 10*time.Second, func() bool {
		s := task.Status()
		if s.State != "running" {
			return false
		}
		for _, lag := range s.Lag {
			if lag > 0 {
				return false
			}
		}
		return len(s.Lag) > 0
	}, "the pipeline catches up")
	if s := task.Status(); s.LastError != "" && !strings.Contains(s.LastError, "step ") {
		t.Fatalf("pipeline error: %s", s.LastError)
	}
	time.Sleep(30 * time.Millisecond) // a commit interval: the last batch committed
	cancel()
	<-done
	return task.Status()
}

// out is an output record, decoded.
type out struct {
	key     string
	ts      int64
	values  map[string]tb.Value
	headers map[string]string
}

func readTopic(t *testing.T, l *commitlog.Log, topic string) []out {
	t.Helper()
	top, err := l.Topic(topic)
	if err != nil {
		t.Fatal(err)
	}
	var outs []out
	for _, p := range top.Partitions() {
		recs, _, _, err := p.ReadRecords(0, 64<<20)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			o := out{key: string(r.Key), ts: r.Timestamp, values: map[string]tb.Value{}, headers: map[string]string{}}
			ents, err := tb.ParseTelemetry(r.Value)
			if err != nil {
				t.Fatalf("%s: %q: %v", topic, r.Value, err)
			}
			for _, e := range ents {
				for _, kv := range e.Values {
					o.values[kv.Key] = kv.Value
				}
			}
			for _, h := range r.Headers {
				o.headers[h.Key] = string(h.Value)
			}
			outs = append(outs, o)
		}
	}
	return outs
}

func num(t *testing.T, o out, key string) float64 {
	t.Helper()
	v, ok := o.values[key]
	if !ok {
		t.Fatalf("output %s@%d has no %s: %v", o.key, o.ts, key, o.values)
	}
	f, ok := v.Number()
	if !ok {
		t.Fatalf("%s is %v", key, v)
	}
	return f
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// TestTumblingWindow: one-minute windows with 10 s grace over records
// out of order and late, against results computed by hand.
func TestTumblingWindow(t *testing.T) {
	l := openLog(t, t.TempDir())
	defer l.Close()
	for _, r := range []struct {
		ts     float64
		values string
	}{
		{5, `"temperature":10,"pressure":1`},
		{20, `"temperature":20,"pressure":3`},
		{65, `"temperature":30`},                 // window [60,120); stream time 65
		{50, `"temperature":40,"pressure":2`},    // out of order, within grace (closes at 70)
		{75, `"temperature":50`},                 // stream time 75: [0,60) closes
		{30, `"temperature":99,"pressure":9`},    // late: [0,60) closed
		{130, `"temperature":60`},                // [60,120) closes at 130
		{185, `"temperature":70,"pressure":4.5`}, // [120,180) closes at 190: still open
	} {
		put(t, l, "telemetry", "boiler-1", sec(r.ts), r.values)
	}
	b := New("boiler-minute")
	b.Stream("telemetry").
		Filter(func(r *Record) (bool, error) { return r.Header("device_type") == "boiler", nil }).
		Aggregate(Tumbling(time.Minute, 10*time.Second), FieldAggs{"temperature": {Avg, Min, Max, Count}, "pressure": {Last}}, OnWindowClose).
		To("telemetry_1m")
	top, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	st := drain(t, l, top)
	outs := readTopic(t, l, "telemetry_1m")
	if len(outs) != 2 {
		t.Fatalf("outputs %+v, want 2", outs)
	}
	w1, w2 := outs[0], outs[1]
	if w1.key != "boiler-1" || w1.ts != sec(60) || w1.headers["ferry.window.start"] != fmt.Sprint(sec(0)) || w1.headers["device_type"] != "boiler" {
		t.Fatalf("first window %+v", w1)
	}
	if !near(num(t, w1, "temperature_avg"), 70.0/3) || num(t, w1, "temperature_min") != 10 || num(t, w1, "temperature_max") != 40 ||
		num(t, w1, "temperature_count") != 3 || num(t, w1, "pressure_last") != 2 {
		t.Fatalf("first window values %v", w1.values)
	}
	if w2.ts != sec(120) || num(t, w2, "temperature_avg") != 40 || num(t, w2, "temperature_count") != 2 {
		t.Fatalf("second window %+v", w2)
	}
	if _, ok := w2.values["pressure_last"]; ok {
		t.Fatalf("a window with no pressure has pressure_last: %v", w2.values)
	}
	late := readTopic(t, l, "boiler-minute.late")
	if len(late) != 1 || late[0].ts != sec(30) || num(t, late[0], "temperature") != 99 ||
		late[0].headers["ferry.source.topic"] != "telemetry" {
		t.Fatalf("late %+v", late)
	}
	if st.Late != 1 || st.RecordsIn != 8 || st.RecordsOut != 3 {
		t.Fatalf("status %+v", st)
	}
}

// TestHoppingWindow: one-minute windows every 30 s with 20 s grace; each
// record is in two windows; one comes out of order within grace, one
// after both its windows closed.
func TestHoppingWindow(t *testing.T) {
	l := openLog(t, t.TempDir())
	defer l.Close()
	for _, r := range []struct {
		ts float64
		v  int
	}{
		{10, 1}, {40, 2}, {70, 3},
		{55, 4},  // stream time 70: [0,60) closes at 80, [30,90) at 110: both take it
		{100, 5}, // closes [-30,30) and [0,60)
		{130, 6}, // closes [30,90)
		{45, 7},  // [0,60) and [30,90) closed: late
		{200, 8}, // closes [60,120), [90,150), [120,180)
	} {
		put(t, l, "telemetry", "m", sec(r.ts), fmt.Sprintf(`"v":%d`, r.v))
	}
	b := New("hop")
	b.Stream("telemetry").Aggregate(Hopping(time.Minute, 30*time.Second, 20*time.Second), FieldAggs{"v": {Sum, Count}}, OnWindowClose).To("out")
	top, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	st := drain(t, l, top)
	outs := readTopic(t, l, "out")
	want := []struct {
		end        float64
		sum, count float64
	}{{30, 1, 1}, {60, 1 + 2 + 4, 3}, {90, 2 + 3 + 4, 3}, {120, 3 + 5, 2}, {150, 5 + 6, 2}, {180, 6, 1}}
	if len(outs) != len(want) {
		t.Fatalf("outputs %+v", outs)
	}
	for i, w := range want {
		if outs[i].ts != sec(w.end) || num(t, outs[i], "v_sum") != w.sum || num(t, outs[i], "v_count") != w.count {
			t.Fatalf("window %d: %+v, want %+v", i, outs[i], w)
		}
	}
	if late := readTopic(t, l, "hop.late"); st.Late != 1 || len(late) != 1 || num(t, late[0], "v") != 7 {
		t.Fatalf("late %d: %+v", st.Late, late)
	}
}

// TestSessionWindow: a 30 s inactivity gap and 20 s grace; a record
// between two sessions merges them; a record for a closed session is
// late.
func TestSessionWindow(t *testing.T) {
	l := openLog(t, t.TempDir())
	defer l.Close()
	for _, r := range []struct {
		ts float64
		v  int
	}{{0, 1}, {10, 2}, {50, 3}, {35, 4}, {200, 5}, {60, 6}} {
		put(t, l, "telemetry", "s", sec(r.ts), fmt.Sprintf(`"v":%d`, r.v))
	}
	b := New("sess")
	b.Stream("telemetry").Aggregate(Session(30*time.Second, 20*time.Second), FieldAggs{"v": {Sum, Count, First, Last}}, OnWindowClose).To("out")
	top, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	st := drain(t, l, top)
	outs := readTopic(t, l, "out")
	// 0,10 | 50 are two sessions (stream time 50 has not passed 10+30+20)
	// until 35 bridges them: [0,50] with 1+2+3+4. 200 closes it
	// (50+30+20 < 200); 60 would open a session ending before 200−30−20:
	// late. The session at 200 stays open.
	if len(outs) != 1 || outs[0].ts != sec(50) || outs[0].headers["ferry.window.start"] != fmt.Sprint(sec(0)) ||
		num(t, outs[0], "v_sum") != 10 || num(t, outs[0], "v_count") != 4 || num(t, outs[0], "v_first") != 1 || num(t, outs[0], "v_last") != 3 {
		t.Fatalf("sessions %+v", outs)
	}
	if st.Late != 1 {
		t.Fatalf("late %d, want 1", st.Late)
	}
}

// TestOnUpdate: every record updates its window's result.
func TestOnUpdate(t *testing.T) {
	l := openLog(t, t.TempDir())
	defer l.Close()
	for i, ts := range []float64{1, 2, 3} {
		put(t, l, "telemetry", "k", sec(ts), fmt.Sprintf(`"v":%d`, i+1))
	}
	b := New("upd")
	b.Stream("telemetry").Aggregate(Tumbling(time.Minute, 0), FieldAggs{"v": {Max}}, OnUpdate).To("out")
	top, _ := b.Build()
	drain(t, l, top)
	outs := readTopic(t, l, "out")
	if len(outs) != 3 || num(t, outs[2], "v_max") != 3 || outs[2].ts != sec(60) {
		t.Fatalf("updates %+v", outs)
	}
}

// TestAlertHysteresis: raised above 90, cleared below 85; one event per
// transition, carrying the values that caused it.
func TestAlertHysteresis(t *testing.T) {
	l := openLog(t, t.TempDir())
	defer l.Close()
	for i, temp := range []float64{80, 95, 96, 91, 84, 86, 92, 88} {
		put(t, l, "telemetry", "boiler-1", sec(float64(i)), fmt.Sprintf(`"temperature":%v`, temp))
	}
	b := New("overheat")
	b.Stream("telemetry").Alert("overheat",
		func(r *Record) (bool, error) { v, _ := r.Number("temperature"); return v > 90, nil },
		func(r *Record) (bool, error) { v, _ := r.Number("temperature"); return v < 85, nil }).
		To("alerts")
	top, _ := b.Build()
	drain(t, l, top)
	outs := readTopic(t, l, "alerts")
	want := []struct {
		state string
		temp  float64
		ts    float64
	}{{"raised", 95, 1}, {"cleared", 84, 4}, {"raised", 92, 6}}
	if len(outs) != len(want) {
		t.Fatalf("alerts %+v", outs)
	}
	for i, w := range want {
		o := outs[i]
		if o.values["state"].Str != w.state || o.values["alert"].Str != "overheat" || num(t, o, "temperature") != w.temp || o.ts != sec(w.ts) {
			t.Fatalf("alert %d: %+v, want %+v", i, o, w)
		}
	}
}

// TestJoin: telemetry joined with the device's latest attributes as of
// each record (by timestamp across the two topics).
func TestJoin(t *testing.T) {
	l := openLog(t, t.TempDir())
	defer l.Close()
	put(t, l, "attributes", "b1", sec(1), `"location":"cellar","max":90`)
	put(t, l, "telemetry", "b1", sec(2), `"temperature":70`)
	put(t, l, "attributes", "b1", sec(3), `"location":"attic"`)
	put(t, l, "telemetry", "b1", sec(4), `"temperature":71`)
	put(t, l, "telemetry", "b2", sec(5), `"temperature":72`)
	b := New("enrich")
	attrs := b.Table("attributes")
	b.Stream("telemetry").Join(attrs, JoinValues("attr_", false)).To("enriched")
	top, _ := b.Build()
	drain(t, l, top)
	outs := readTopic(t, l, "enriched")
	byTs := map[int64]out{}
	for _, o := range outs {
		byTs[o.ts] = o
	}
	if len(outs) != 3 || byTs[sec(2)].values["attr_location"].Str != "cellar" || num(t, byTs[sec(2)], "attr_max") != 90 ||
		byTs[sec(4)].values["attr_location"].Str != "attic" || num(t, byTs[sec(4)], "attr_max") != 90 ||
		len(byTs[sec(5)].values) != 1 {
		t.Fatalf("joined %+v", outs)
	}
}

// TestRestoreFromChangelog: a window open at a clean stop is restored
// from the changelog by the next run, which does not read its input
// again.
func TestRestoreFromChangelog(t *testing.T) {
	dir := t.TempDir()
	build := func() *Topology {
		b := New("boiler-minute")
		b.Stream("telemetry").Aggregate(Tumbling(time.Minute, 0), FieldAggs{"temperature": {Avg, Count}}, OnWindowClose).To("telemetry_1m")
		top, err := b.Build()
		if err != nil {
			t.Fatal(err)
		}
		return top
	}
	l := openLog(t, dir)
	put(t, l, "telemetry", "b1", sec(5), `"temperature":10`)
	put(t, l, "telemetry", "b1", sec(20), `"temperature":20`)
	if st := drain(t, l, build()); st.RecordsIn != 2 {
		t.Fatalf("first run %+v", st)
	}
	if outs := readTopic(t, l, "telemetry_1m"); len(outs) != 0 {
		t.Fatalf("output before the window closed: %+v", outs)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l = openLog(t, dir)
	defer l.Close()
	put(t, l, "telemetry", "b1", sec(61), `"temperature":30`)
	st := drain(t, l, build())
	if st.RecordsIn != 1 {
		t.Fatalf("second run read %d records, want only the new one", st.RecordsIn)
	}
	outs := readTopic(t, l, "telemetry_1m")
	if len(outs) != 1 || num(t, outs[0], "temperature_avg") != 15 || num(t, outs[0], "temperature_count") != 2 {
		t.Fatalf("after restore %+v", outs)
	}
}

// TestChangedPipelineStartsFresh: a pipeline whose steps changed does not
// restore state that is not its own, and says so.
func TestChangedPipelineStartsFresh(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir)
	defer l.Close()
	put(t, l, "telemetry", "b1", sec(5), `"temperature":10`)
	b := New("p")
	b.Stream("telemetry").Aggregate(Tumbling(time.Minute, 0), FieldAggs{"temperature": {Avg}}, OnWindowClose).To("o")
	top, _ := b.Build()
	drain(t, l, top)

	put(t, l, "telemetry", "b1", sec(6), `"temperature":20`)
	put(t, l, "telemetry", "b1", sec(61), `"temperature":30`)
	b = New("p")
	b.Stream("telemetry").Aggregate(Tumbling(time.Minute, 0), FieldAggs{"temperature": {Max}}, OnWindowClose).To("o")
	top, _ = b.Build()
	drain(t, l, top)
	outs := readTopic(t, l, "o")
	// The first run's window (10) is not restored into the changed step:
	// the closed window holds only what the new run read.
	if len(outs) != 1 || num(t, outs[0], "temperature_max") != 20 {
		t.Fatalf("outputs %+v", outs)
	}
}

// TestDeadLetter: a step that fails on a record sends it, with where it
// came from, to <name>.dlq, and the pipeline goes on.
func TestDeadLetter(t *testing.T) {
	l := openLog(t, t.TempDir())
	defer l.Close()
	put(t, l, "telemetry", "a", sec(1), `"v":1`)
	put(t, l, "telemetry", "a", sec(2), `"v":"text"`)
	put(t, l, "telemetry", "a", sec(3), `"v":3`)
	b := New("strict")
	b.Stream("telemetry").Filter(func(r *Record) (bool, error) {
		if _, ok := r.Number("v"); !ok {
			return false, fmt.Errorf("v is not a number")
		}
		return true, nil
	}).To("out")
	top, _ := b.Build()
	st := drain(t, l, top)
	if outs := readTopic(t, l, "out"); len(outs) != 2 {
		t.Fatalf("outputs %+v", outs)
	}
	dlq := readTopic(t, l, "strict.dlq")
	if len(dlq) != 1 || dlq[0].headers["ferry.error"] != "v is not a number" || dlq[0].headers["ferry.source.offset"] == "" ||
		!strings.Contains(dlq[0].headers["ferry.step"], "filter") || st.DeadLetter != 1 || !strings.Contains(st.LastError, "not a number") {
		t.Fatalf("dead letters %+v, status %+v", dlq, st)
	}
}

// TestRunningAggregate: an aggregate without a window, per key over
// everything read, emitted on every update with the latest record's ts
// (configured: aggregate without window).
func TestRunningAggregate(t *testing.T) {
	l := openLog(t, t.TempDir())
	defer l.Close()
	for i, v := range []float64{5, 1, 9} {
		put(t, l, "telemetry", "k", sec(float64(i*100)), fmt.Sprintf(`"v":%v`, v))
	}
	put(t, l, "telemetry", "j", sec(1), `"v":7`)
	top, err := Compile(Config{Name: "totals", From: []string{"telemetry"}, Aggregate: map[string][]string{"v": {"sum", "max", "count"}}, To: "totals"})
	if err != nil {
		t.Fatal(err)
	}
	drain(t, l, top)
	last := map[string]out{}
	n := 0
	for _, o := range readTopic(t, l, "totals") {
		if prev, ok := last[o.key]; !ok || o.ts >= prev.ts {
			last[o.key] = o
		}
		n++
	}
	k, j := last["k"], last["j"]
	if n != 4 || num(t, k, "v_sum") != 15 || num(t, k, "v_max") != 9 || num(t, k, "v_count") != 3 || k.ts != sec(200) ||
		num(t, j, "v_sum") != 7 || k.headers["ferry.window.start"] != "" {
		t.Fatalf("running aggregates: %d outputs, last %+v %+v", n, k, j)
	}
	if _, err := Compile(Config{Name: "x", From: []string{"t"}, Aggregate: map[string][]string{"v": {"sum"}}, Emit: "on_window_close", To: "o"}); err == nil ||
		!strings.Contains(err.Error(), "on_window_close needs a window") {
		t.Fatalf("on_window_close without a window: %v", err)
	}
}
