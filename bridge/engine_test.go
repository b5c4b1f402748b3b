package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/state"
	"github.com/ferry-iot/ferry/broker/testkit"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// fakeTarget is the scripted upstream: it records what it was sent, and
// its behaviour per Connect and Send is scripted by functions. Its
// sessions have only the optional interfaces asked for (limits: Limiter,
// upstream: Checkpointer), so it stands for the targets to come — an MQTT
// or ThingsBoard one keeps no checkpoints upstream and wants small
// batches.
type fakeTarget struct {
	connect func(n int) error                                // n: Connect number, from 1
	send    func(ctx context.Context, n int, b *Batch) error // n: Send number, from 1
	limits  *Limits                                          // non-nil: sessions are Limiters
	// upstream non-nil: sessions are Checkpointers returning it, and
	// acknowledged batches' progress is stored in it.
	upstream map[TP]Progress

	wire atomic.Int64 // WireBytes: 10 per item sent, acknowledged or not

	mu       sync.Mutex
	got      map[TP][]int64 // delivered offsets per partition, in order
	batches  []*Batch       // acknowledged batches
	sends    int
	connects int
	failed   int // items of Sends that failed
}

func newFake() *fakeTarget { return &fakeTarget{got: map[TP][]int64{}} }

type fakeConn struct{ f *fakeTarget }

func (c fakeConn) Send(ctx context.Context, b *Batch) error { return c.f.doSend(ctx, b) }
func (c fakeConn) Close() error                             { return nil }

type limitedConn struct{ fakeConn }

func (c limitedConn) Limits() Limits { return *c.f.limits }

type checkpointConn struct{ fakeConn }

func (c checkpointConn) Checkpoints(context.Context, []TP) (map[TP]Progress, error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	out := map[TP]Progress{}
	for tp, p := range c.f.upstream {
		out[tp] = p
	}
	return out, nil
}

func (f *fakeTarget) Connect(context.Context) (Conn, error) {
	f.mu.Lock()
	f.connects++
	n := f.connects
	f.mu.Unlock()
	if f.connect != nil {
		if err := f.connect(n); err != nil {
			return nil, err
		}
	}
	switch {
	case f.limits != nil:
		return limitedConn{fakeConn{f}}, nil
	case f.upstream != nil:
		return checkpointConn{fakeConn{f}}, nil
	}
	return fakeConn{f}, nil
}

func (f *fakeTarget) WireBytes() int64 { return f.wire.Load() }

func (f *fakeTarget) doSend(ctx context.Context, b *Batch) error {
	f.mu.Lock()
	f.sends++
	n := f.sends
	f.mu.Unlock()
	f.wire.Add(10 * int64(len(b.Items)))
	if f.send != nil {
		err := f.send(ctx, n, b)
		if err == nil {
			err = ctx.Err()
		}
		if err != nil {
			f.mu.Lock()
			f.failed += len(b.Items)
			f.mu.Unlock()
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, it := range b.Items {
		f.got[it.TP] = append(f.got[it.TP], it.Record.Offset)
	}
	f.batches = append(f.batches, b)
	if f.upstream != nil {
		for tp, p := range b.Progress {
			f.upstream[tp] = p
		}
	}
	return nil
}

func (f *fakeTarget) delivered() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, l := range f.got {
		n += len(l)
	}
	return n
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func setup(t *testing.T, records, size int) (*commitlog.Log, *state.Store) {
	t.Helper()
	lg, st, tp := openEdge(t, commitlog.TopicConfig{Partitions: 2})
	appendRecs(t, tp, 0, records, size)
	return lg, st
}

// openEdge opens a log and a state store in a temporary directory, closed
// when the test ends, with topic "t" of cfg.
func openEdge(t *testing.T, cfg commitlog.TopicConfig) (*commitlog.Log, *state.Store, *commitlog.Topic) {
	t.Helper()
	dir := t.TempDir()
	st, err := state.Open(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	lg, err := commitlog.Open(filepath.Join(dir, "log"), commitlog.WithLogger(quietLog()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close(); st.Close() })
	tp, err := lg.EnsureTopic("t", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return lg, st, tp
}

func appendRecs(t *testing.T, tp *commitlog.Topic, from, n, size int) {
	t.Helper()
	appendSized(t, tp, from, n, func(int) int { return size })
}

// appendSized appends records from..from+n-1 keyed k<i%7>, of size(i)
// value bytes, and waits for them.
func appendSized(t *testing.T, tp *commitlog.Topic, from, n int, size func(i int) int) {
	t.Helper()
	fs := make([]*commitlog.Future, 0, n)
	for i := from; i < from+n; i++ {
		fs = append(fs, tp.Append(context.Background(), []commitlog.Record{{Key: []byte(fmt.Sprintf("k%d", i%7)), Value: make([]byte, size(i))}}))
	}
	for _, f := range fs { // each partition completes in order, not the partitions together
		if _, err := f.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// newEngine is New for tests, with the name "x" and topic "t" unless
// cfg says otherwise. The engine is closed when the test ends, if the
// test did not get that far.
func newEngine(t *testing.T, cfg Config, lg *commitlog.Log, st *state.Store, target Target) *Engine {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "x"
	}
	if cfg.Topics == nil {
		cfg.Topics = []string{"t"}
	}
	en, err := New(cfg, lg, st, target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := en.Close(); err != nil && !t.Failed() {
			t.Errorf("closing the engine at the end of the test: %v", err)
		}
	})
	return en
}

// closeEngine closes en and fails the test if Close fails.
func closeEngine(t *testing.T, en *Engine) {
	t.Helper()
	if err := en.Close(); err != nil {
		t.Fatal(err)
	}
}

// runUntil starts en, waits up to d for ok (what names it), and closes
// en, failing the test if Close fails.
func runUntil(t *testing.T, en *Engine, what string, d time.Duration, ok func() bool) {
	t.Helper()
	en.Start()
	testkit.Eventually(t, d, ok, "%s", what)
	closeEngine(t, en)
}

// checkDense asserts every record of topic t was delivered once, in
// order, except the offsets in skip.
func checkDense(t *testing.T, f *fakeTarget, lg *commitlog.Log, skip map[TP]map[int64]bool) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	tp, _ := lg.Topic("t")
	for _, p := range tp.Partitions() {
		k := TP{"t", p.ID()}
		got := f.got[k]
		want := int64(0)
		for _, off := range got {
			for skip[k][want] {
				want++
			}
			if off != want {
				t.Fatalf("partition %d: delivered offset %d where %d was due", p.ID(), off, want)
			}
			want++
		}
		for skip[k][want] {
			want++
		}
		if want != p.HighWatermark() {
			t.Fatalf("partition %d: delivered up to %d, log holds %d", p.ID(), want, p.HighWatermark())
		}
	}
}

// checkOnce asserts every record of topic t was delivered exactly once,
// in any order.
func checkOnce(t *testing.T, f *fakeTarget, lg *commitlog.Log) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	tp, _ := lg.Topic("t")
	for _, p := range tp.Partitions() {
		seen := map[int64]bool{}
		for _, off := range f.got[TP{"t", p.ID()}] {
			if seen[off] || off < 0 || off >= p.HighWatermark() {
				t.Fatalf("partition %d: offset %d delivered twice or out of range", p.ID(), off)
			}
			seen[off] = true
		}
		if int64(len(seen)) != p.HighWatermark() {
			t.Fatalf("partition %d: %d of %d delivered", p.ID(), len(seen), p.HighWatermark())
		}
	}
}

// TestFailuresResendAndBackOff: failed sends are retried after a backoff
// and deliver every record once, in order; the records handed again are
// exactly those of the failed sends (Status.RecordsResent); checkpoints
// survive a restart.
func TestFailuresResendAndBackOff(t *testing.T) {
	lg, st := setup(t, 3000, 100)
	f := newFake()
	f.send = func(_ context.Context, n int, _ *Batch) error {
		if n%3 == 0 {
			return errors.New("link down")
		}
		return nil
	}
	reg := prometheus.NewRegistry()
	en := newEngine(t, Config{MaxBatchRecords: 100, Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		Metrics: NewMetrics(reg)}, lg, st, f)
	runUntil(t, en, "delivery", 20*time.Second, func() bool { return en.Status().Lag == 0 && f.delivered() == 3000 })
	checkDense(t, f, lg, nil)
	if n := testutil.ToFloat64(en.metrics.Records.WithLabelValues("x")); n != 3000 {
		t.Fatalf("records metric %v", n)
	}
	if n := testutil.ToFloat64(en.metrics.Failures.WithLabelValues("x", "send")); n == 0 {
		t.Fatal("no send failures counted")
	}
	st1 := en.Status()
	if st1.Reconnects == 0 || st1.RecordsSent != 3000 {
		t.Fatalf("status %+v", st1)
	}
	if f.failed == 0 || st1.RecordsResent != int64(f.failed) || testutil.ToFloat64(en.metrics.Resent.WithLabelValues("x")) != float64(f.failed) {
		t.Fatalf("resent: status %d, metric %v; items of failed sends %d", st1.RecordsResent,
			testutil.ToFloat64(en.metrics.Resent.WithLabelValues("x")), f.failed)
	}
	// Restarted: the local checkpoints say everything is upstream.
	f2 := newFake()
	en2 := newEngine(t, Config{}, lg, st, f2)
	en2.Start()
	tp, _ := lg.Topic("t")
	appendRecs(t, tp, 3000, 10, 100)
	testkit.Eventually(t, 10*time.Second, func() bool { return f2.delivered() == 10 }, "new records")
	closeEngine(t, en2)
	if st := en2.Status(); st.RecordsResent != 0 {
		t.Fatalf("a clean run counted %d resent", st.RecordsResent)
	}
}

// TestStallWatchdog: a Send that never returns is abandoned after
// StallTimeout; the engine reports "stalled", reconnects and delivers.
func TestStallWatchdog(t *testing.T) {
	lg, st := setup(t, 200, 100)
	block := make(chan struct{})
	f := newFake()
	f.send = func(ctx context.Context, n int, _ *Batch) error {
		if n == 1 {
			select { // the link "looks up" but nothing comes back
			case <-block:
			case <-ctx.Done():
			}
			return errors.New("gave up")
		}
		return nil
	}
	en := newEngine(t, Config{StallTimeout: 200 * time.Millisecond, Backoff: time.Millisecond}, lg, st, f)
	en.Start()
	testkit.Eventually(t, 10*time.Second, func() bool { return en.Status().Reconnects > 0 }, "stall detected")
	close(block)
	testkit.Eventually(t, 10*time.Second, func() bool { return f.delivered() == 200 }, "delivery")
	closeEngine(t, en)
	if n := testutil.ToFloat64(en.metrics.Failures.WithLabelValues("x", "stalled")); n != 1 {
		t.Fatalf("stalled failures %v, want 1", n)
	}
}

// TestRateLimit: a byte-rate limit paces the sends (a lower bound only:
// the limiter can never be faster than its rate).
func TestRateLimit(t *testing.T) {
	lg, st := setup(t, 300, 1000) // ~300 KB
	f := newFake()
	en := newEngine(t, Config{RateLimit: 200 << 10, MaxBatchBytes: 64 << 10}, lg, st, f)
	start := time.Now()
	en.Start()
	testkit.Eventually(t, 20*time.Second, func() bool { return f.delivered() == 300 }, "delivery")
	el := time.Since(start)
	closeEngine(t, en)
	// The burst is max(rate, batch) = 200 KiB: the rest (~90 KiB) waits.
	if el < 300*time.Millisecond {
		t.Fatalf("300 KB at 200 KiB/s took %v", el)
	}
}

// sleeps records the engine's backoff sleeps and the status at each.
type sleeps struct {
	mu     sync.Mutex
	d      []time.Duration
	states []Status
	hook   func(i int) // after recording sleep i (from 0), on the run goroutine
}

func (s *sleeps) install(en *Engine) {
	en.wait = func(ctx context.Context, d time.Duration) {
		st := en.Status()
		s.mu.Lock()
		s.d = append(s.d, d)
		s.states = append(s.states, st)
		i := len(s.d) - 1
		s.mu.Unlock()
		if s.hook != nil {
			s.hook(i)
		}
	}
}

func (s *sleeps) n() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.d)
}

// TestBackoffDoubles: each failed connect doubles the delay up to
// MaxBackoff, with the jitter factor 0.8 + 0.4·U[0,1) applied on top
// (±20 %); a session that delivered something starts again from Backoff.
func TestBackoffDoubles(t *testing.T) {
	lg, st := setup(t, 10, 10)
	const fails = 9
	f := newFake()
	f.connect = func(n int) error {
		if n <= fails {
			return fmt.Errorf("dial %d refused", n)
		}
		return nil
	}
	f.send = func(_ context.Context, n int, _ *Batch) error {
		if n == 2 {
			return errors.New("link dropped after a delivery")
		}
		return nil
	}
	en := newEngine(t, Config{Backoff: 100 * time.Millisecond, MaxBackoff: 3 * time.Second, MaxBatchRecords: 5}, lg, st, f)
	jitters := []float64{0, 0.999, 0.5, 0.25}
	var ji int
	en.jitter = func() float64 { j := jitters[ji%len(jitters)]; ji++; return j }
	var s sleeps
	s.install(en)
	runUntil(t, en, "delivery", 10*time.Second, func() bool { return f.delivered() == 10 })
	if s.n() != fails+1 {
		t.Fatalf("%d sleeps, want %d (one per failed connect, one after the dropped session)", s.n(), fails+1)
	}
	nominal := 100 * time.Millisecond
	for i, d := range s.d {
		want := nominal
		if i == fails {
			want = 100 * time.Millisecond // the session delivered a batch first: back to Backoff
		}
		j := jitters[i%len(jitters)]
		if exact := time.Duration(float64(want) * (0.8 + 0.4*j)); d != exact {
			t.Fatalf("sleep %d: %v, want %v (nominal %v, jitter %.3f)", i, d, exact, want, j)
		}
		nominal = min(2*nominal, 3*time.Second)
		if st := s.states[i]; st.State != StateBackingOff {
			t.Fatalf("sleep %d: state %q, want %s", i, st.State, StateBackingOff)
		}
	}
	if got := s.d[fails-1]; got != time.Duration(float64(3*time.Second)*(0.8+0.4*jitters[(fails-1)%len(jitters)])) {
		t.Fatalf("the last connect backoff %v did not reach the 3 s cap", got)
	}
	if !strings.Contains(s.states[0].LastError, "dial 1 refused") {
		t.Fatalf("last error %q", s.states[0].LastError)
	}
	// And with the real jitter: within ±20 % of the doubling sequence.
	lg2, st2 := setup(t, 1, 1)
	f2 := newFake()
	f2.connect = func(int) error { return errors.New("refused") }
	en2 := newEngine(t, Config{Name: "y", Backoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}, lg2, st2, f2)
	var s2 sleeps
	s2.install(en2)
	runUntil(t, en2, "12 sleeps", 10*time.Second, func() bool { return s2.n() >= 12 })
	nominal = 10 * time.Millisecond
	distinct := map[time.Duration]bool{}
	for i, d := range s2.d[:12] {
		if float64(d) < 0.8*float64(nominal) || float64(d) >= 1.2*float64(nominal) {
			t.Fatalf("sleep %d: %v outside ±20%% of %v", i, d, nominal)
		}
		if nominal == 200*time.Millisecond {
			distinct[d] = true
		}
		nominal = min(2*nominal, 200*time.Millisecond)
	}
	if len(distinct) < 2 {
		t.Fatalf("no jitter at the cap: %v", s2.d)
	}
}

// TestStatusStates: the state is backing_off while the upstream is
// unreachable, stalled after the watchdog gave up on a silent link (for
// the whole backoff that follows), and connected once a session works.
func TestStatusStates(t *testing.T) {
	lg, st := setup(t, 100, 10)
	f := newFake()
	f.connect = func(n int) error {
		if n == 1 {
			return errors.New("no route to host")
		}
		return nil
	}
	f.send = func(ctx context.Context, n int, _ *Batch) error {
		if n == 1 {
			<-ctx.Done() // up but silent: the watchdog fires
			return ctx.Err()
		}
		return nil
	}
	en := newEngine(t, Config{StallTimeout: 100 * time.Millisecond, Backoff: time.Millisecond}, lg, st, f)
	var s sleeps
	s.install(en)
	en.Start()
	var final Status
	testkit.Eventually(t, 10*time.Second, func() bool { final = en.Status(); return final.RecordsSent == 100 }, "delivery")
	closeEngine(t, en)
	if s.n() != 2 {
		t.Fatalf("%d backoffs, want 2", s.n())
	}
	if got := s.states[0]; got.State != StateBackingOff || !strings.Contains(got.LastError, "no route to host") {
		t.Fatalf("while unreachable: %q (%s)", got.State, got.LastError)
	}
	if got := s.states[1]; got.State != StateStalled || !strings.Contains(got.LastError, "stalled") {
		t.Fatalf("after the watchdog: %q (%s)", got.State, got.LastError)
	}
	if final.State != StateConnected || final.LastError != "" || final.Reconnects != 2 {
		t.Fatalf("after recovery: %+v", final)
	}
	if n := testutil.ToFloat64(en.metrics.State.WithLabelValues("x", StateStopped)); n != 1 {
		t.Fatalf("state gauge after Close: stopped=%v", n)
	}
}

// TestMisconfiguredBacksOffAtMax: an error marked ErrMisconfigured (wrong
// password, untrusted certificate) is retried at MaxBackoff at once and
// logged once per distinct cause, not once per retry.
func TestMisconfiguredBacksOffAtMax(t *testing.T) {
	lg, st := setup(t, 10, 10)
	f := newFake()
	f.connect = func(n int) error {
		if n <= 4 {
			return fmt.Errorf("sasl: %w: authentication failed for user ferry", ErrMisconfigured)
		}
		return nil
	}
	var logs syncBuf
	en := newEngine(t, Config{Backoff: time.Millisecond, MaxBackoff: time.Second,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}, lg, st, f)
	var s sleeps
	s.install(en)
	runUntil(t, en, "delivery", 10*time.Second, func() bool { return f.delivered() == 10 })
	if s.n() != 4 {
		t.Fatalf("%d backoffs, want 4", s.n())
	}
	for i, d := range s.d {
		if d < 800*time.Millisecond {
			t.Fatalf("backoff %d after a misconfiguration: %v, want MaxBackoff (1 s ±20%%)", i, d)
		}
		if !strings.Contains(s.states[i].LastError, "authentication failed") || s.states[i].State != StateBackingOff {
			t.Fatalf("status while misconfigured: %+v", s.states[i])
		}
	}
	if n := testutil.ToFloat64(en.metrics.Failures.WithLabelValues("x", "misconfigured")); n != 4 {
		t.Fatalf("misconfigured failures %v, want 4", n)
	}
	if n := strings.Count(logs.String(), "refuses the configuration"); n != 1 {
		t.Fatalf("%d log lines for 4 identical misconfiguration failures, want 1:\n%s", n, logs.String())
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestWireBytes: a target's WireBytes reaches Status and
// ferry_bridge_wire_bytes_total, failed sends included.
func TestWireBytes(t *testing.T) {
	lg, st := setup(t, 500, 10)
	f := newFake()
	f.send = func(_ context.Context, n int, _ *Batch) error {
		if n == 2 {
			return errors.New("lost")
		}
		return nil
	}
	en := newEngine(t, Config{MaxBatchRecords: 50, Backoff: time.Millisecond}, lg, st, f)
	runUntil(t, en, "delivery", 10*time.Second, func() bool { return f.delivered() == 500 })
	stat := en.Status()
	if w := f.WireBytes(); w != 10*(500+int64(f.failed)) || stat.WireBytes != w ||
		testutil.ToFloat64(en.metrics.Wire.WithLabelValues("x")) != float64(w) {
		t.Fatalf("wire bytes: target %d, status %d, metric %v", w, stat.WireBytes, testutil.ToFloat64(en.metrics.Wire.WithLabelValues("x")))
	}
}

// TestUpstreamCheckpointsWin: a session that is a Checkpointer resumes
// from the upstream's progress (ahead of the local one after a crash),
// one that is not relies on the local checkpoints.
func TestUpstreamCheckpointsWin(t *testing.T) {
	lg, st := setup(t, 400, 10)
	f := newFake()
	f.upstream = map[TP]Progress{{"t", 0}: {Next: 50}, {"t", 1}: {Next: 70}}
	en := newEngine(t, Config{}, lg, st, f)
	runUntil(t, en, "delivery", 10*time.Second, func() bool { return en.Status().Lag == 0 })
	tp, _ := lg.Topic("t")
	for _, p := range tp.Partitions() {
		got := f.got[TP{"t", p.ID()}]
		if want := f.upstream[TP{"t", p.ID()}]; len(got) == 0 || got[0] != map[int32]int64{0: 50, 1: 70}[p.ID()] || want.Next != p.HighWatermark() {
			t.Fatalf("partition %d: first delivered %v, upstream checkpoint %+v, end %d", p.ID(), got[:min(len(got), 1)], want, p.HighWatermark())
		}
	}
	// A target keeping no checkpoints upstream: the local ones (all
	// delivered) rule; only new records go.
	f2 := newFake()
	en2 := newEngine(t, Config{}, lg, st, f2)
	en2.Start()
	appendRecs(t, tp, 400, 20, 10)
	testkit.Eventually(t, 10*time.Second, func() bool { return en2.Status().Lag == 0 && f2.delivered() == 20 }, "new records")
	closeEngine(t, en2)
}

// TestTargetLimits: a session's Limits cap every batch (a future MQTT
// target: few records per Send, as many as it keeps in flight).
func TestTargetLimits(t *testing.T) {
	lg, st := setup(t, 1000, 50)
	f := newFake()
	f.limits = &Limits{MaxBatchRecords: 7, MaxBatchBytes: 300}
	en := newEngine(t, Config{}, lg, st, f)
	runUntil(t, en, "delivery", 20*time.Second, func() bool { return f.delivered() == 1000 })
	checkDense(t, f, lg, nil)
	for i, b := range f.batches {
		if len(b.Items) > 7 || b.Bytes > 300 {
			t.Fatalf("batch %d: %d records, %d bytes over the target's limits", i, len(b.Items), b.Bytes)
		}
	}
}

// TestBatchBytesBound: no batch — prefetched or not — holds more than
// MaxBatchBytes of records, whatever their sizes; a record larger than a
// whole batch travels alone.
func TestBatchBytesBound(t *testing.T) {
	lg, st := setup(t, 0, 0)
	tp, _ := lg.Topic("t")
	const maxBatch = 10_000
	appendSized(t, tp, 0, 3000, func(i int) int {
		if i == 1500 {
			return 3 * maxBatch
		}
		return 50 + (i*7919)%3000
	})
	f := newFake()
	en := newEngine(t, Config{MaxBatchBytes: maxBatch}, lg, st, f)
	runUntil(t, en, "delivery", 20*time.Second, func() bool { return f.delivered() == 3000 })
	checkDense(t, f, lg, nil)
	alone := false
	for i, b := range f.batches {
		sum := 0
		for j := range b.Items {
			sum += recordBytes(&b.Items[j].Record)
		}
		if sum != b.Bytes {
			t.Fatalf("batch %d: Bytes %d, its records %d", i, b.Bytes, sum)
		}
		if b.Bytes > maxBatch {
			if len(b.Items) != 1 {
				t.Fatalf("batch %d: %d bytes in %d records, over MaxBatchBytes %d", i, b.Bytes, len(b.Items), maxBatch)
			}
			alone = true
		}
	}
	if !alone {
		t.Fatal("the oversized record did not travel alone")
	}
}

// TestCloseDuringPrefetch: Close while the prefetch goroutine is reading
// waits for it and leaves no goroutine behind. The prefetch is held until
// Close returns (the bug) or the run goroutine, which Close waits for, is
// joining it.
func TestCloseDuringPrefetch(t *testing.T) {
	lg, st := setup(t, 2000, 100)
	ignore := goleak.IgnoreCurrent()
	f := newFake()
	f.send = func(ctx context.Context, n int, _ *Batch) error {
		<-ctx.Done() // Close cancels the Send
		return ctx.Err()
	}
	en := newEngine(t, Config{MaxBatchRecords: 100}, lg, st, f)
	entered, joined, returned := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var once sync.Once
	en.onJoin = func() { once.Do(func() { close(joined) }) }
	var early, finished atomic.Bool
	en.onPrefetch = func() {
		close(entered) // one prefetch only: the first Send never returns before Close
		select {
		case <-returned:
			early.Store(true)
		case <-joined:
		}
		finished.Store(true)
	}
	en.Start()
	<-entered
	var closeErr error
	go func() { closeErr = en.Close(); close(returned) }()
	<-returned
	if closeErr != nil {
		t.Fatal(closeErr)
	}
	if early.Load() || !finished.Load() {
		t.Fatal("Close returned while the prefetch was still reading")
	}
	goleak.VerifyNone(t, ignore)
	if f.delivered() != 0 {
		t.Fatalf("%d delivered by a Send that never acknowledged", f.delivered())
	}
}

// TestLiveFirstMerge: with a backlog above the threshold, the first batch
// splits every partition at its end; records appended after the split
// (marked "live" by construction) go out before the backlog has drained;
// in the end every record is delivered once and the ranges merge.
func TestLiveFirstMerge(t *testing.T) {
	lg, st := setup(t, 2000, 100)
	tp, _ := lg.Topic("t")
	ends := map[TP]int64{} // where the split must happen: nothing is appended before it
	for _, p := range tp.Partitions() {
		ends[TP{"t", p.ID()}] = p.HighWatermark()
	}
	release := make(chan struct{})
	var (
		mu          sync.Mutex
		firstSplit  map[TP]Progress
		liveSeen    = map[TP]int{} // live records delivered per partition
		backlogLeft = -1           // backlog records not yet delivered when the first live record went
		backlogSent int
	)
	f := newFake()
	f.send = func(_ context.Context, n int, b *Batch) error {
		if n == 1 {
			mu.Lock()
			firstSplit = b.Progress
			mu.Unlock()
			<-release // held while the live records are appended
		}
		mu.Lock()
		defer mu.Unlock()
		for _, it := range b.Items {
			isLive := strings.HasPrefix(string(it.Record.Key), "live-")
			if isLive != (it.Record.Offset >= ends[it.TP]) {
				t.Errorf("%s offset %d key %s: live by key %v, by offset %v", it.TP, it.Record.Offset, it.Record.Key, isLive, !isLive)
			}
			if isLive {
				if backlogLeft < 0 {
					backlogLeft = 2000 - backlogSent
				}
				liveSeen[it.TP]++
			} else {
				backlogSent++
			}
		}
		return nil
	}
	en := newEngine(t, Config{Order: LiveFirst, LiveThreshold: 100, MaxBatchRecords: 50, Linger: time.Millisecond}, lg, st, f)
	en.Start()
	testkit.Eventually(t, 10*time.Second, func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.sends >= 1 }, "first send")
	// Live records: marked by key, appended after the split.
	var futs []*commitlog.Future
	for i := range 200 {
		futs = append(futs, tp.Append(context.Background(), []commitlog.Record{{Key: []byte(fmt.Sprintf("live-%d", i%7)), Value: make([]byte, 100)}}))
	}
	for _, fut := range futs {
		if _, err := fut.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	testkit.Eventually(t, 20*time.Second, func() bool { return f.delivered() == 2200 }, "delivery")
	closeEngine(t, en)
	checkOnce(t, f, lg) // live_first's order is checked below
	mu.Lock()
	defer mu.Unlock()
	for tp, end := range ends {
		if p := firstSplit[tp]; p.LiveFrom != end || p.LiveNext != end {
			t.Fatalf("%s: the first batch split at %+v, want live range from the end %d", tp, p, end)
		}
	}
	if live := liveSeen[TP{"t", 0}] + liveSeen[TP{"t", 1}]; live != 200 {
		t.Fatalf("%d live records delivered, want 200", live)
	}
	if backlogLeft <= 0 {
		t.Fatalf("the first live record went out with %d backlog records left: not before the backlog drained", backlogLeft)
	}
	for _, p := range en.Status().Partitions {
		if p.LiveFrom != 0 || p.Lag != 0 {
			t.Fatalf("ranges did not merge: %+v", p)
		}
	}
	t.Logf("first live record sent with %d of 2000 backlog records still waiting", backlogLeft)
}

func newTextLogger(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// TestTrickleBatchSmall: with the default limits (4 MiB, 50000 records)
// a batch of a few records holds Items for about that many, not for a
// full batch of records that size (~42000 × 112 bytes).
func TestTrickleBatchSmall(t *testing.T) {
	lg, st := setup(t, 0, 0)
	f := newFake()
	en := newEngine(t, Config{}, lg, st, f)
	en.Start()
	tp, _ := lg.Topic("t")
	for i := range 3 {
		appendRecs(t, tp, i, 1, 100)
		testkit.Eventually(t, 10*time.Second, func() bool { return f.delivered() == i+1 }, "delivery")
	}
	closeEngine(t, en)
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, b := range f.batches {
		if len(b.Items) == 0 || cap(b.Items) > 16 {
			t.Fatalf("batch %d: %d records in Items of capacity %d", i, len(b.Items), cap(b.Items))
		}
	}
}

// TestTrickleReadOnce: a record arriving after an idle spell is read from
// the log (and decoded) once: the engine lingers on the high watermarks,
// not on a batch it would then read again.
func TestTrickleReadOnce(t *testing.T) {
	lg, st := setup(t, 0, 0)
	f := newFake()
	en := newEngine(t, Config{}, lg, st, f)
	idle := make(chan struct{}, 1)
	en.onIdle = func() {
		select {
		case idle <- struct{}{}:
		default:
		}
	}
	var read atomic.Int64 // records returned by log reads, prefetches included
	en.onRead = func(_ TP, n int) { read.Add(int64(n)) }
	en.Start()
	tp, _ := lg.Topic("t")
	for i := range 3 {
		<-idle // the engine waits for records: the next one ends an idle spell
		appendRecs(t, tp, i, 1, 100)
		testkit.Eventually(t, 10*time.Second, func() bool { return f.delivered() == i+1 }, "delivery")
		if n := read.Load(); n != int64(i+1) {
			t.Fatalf("after %d trickle records the engine read %d from the log, want each once", i+1, n)
		}
	}
	closeEngine(t, en)
}

// TestLingerSettings: zero Linger takes the default, NoLinger stays none.
func TestLingerSettings(t *testing.T) {
	lg, st := setup(t, 0, 0)
	for _, tc := range []struct{ in, want time.Duration }{{0, 50 * time.Millisecond}, {NoLinger, NoLinger}, {time.Second, time.Second}} {
		en := newEngine(t, Config{Linger: tc.in}, lg, st, newFake())
		if en.cfg.Linger != tc.want {
			t.Errorf("Linger %v became %v, want %v", tc.in, en.cfg.Linger, tc.want)
		}
		closeEngine(t, en)
	}
}

// TestStatusShowsASilentLink: while a batch waits for an acknowledgement
// the status says since when, and after a quarter of the stall timeout it
// says stalled — an upstream that died is not shown connected for the
// whole timeout; an acknowledgement that comes late turns it connected
// again.
func TestStatusShowsASilentLink(t *testing.T) {
	lg, st := setup(t, 100, 10)
	release := make(chan struct{})
	f := newFake()
	f.send = func(ctx context.Context, n int, _ *Batch) error {
		if n == 1 {
			select { // slow, then acknowledged
			case <-release:
			case <-ctx.Done():
			}
		}
		return nil
	}
	en := newEngine(t, Config{StallTimeout: 4 * time.Second, Backoff: time.Millisecond}, lg, st, f)
	en.Start()
	var s Status
	testkit.Eventually(t, 10*time.Second, func() bool { s = en.Status(); return s.State == StateStalled }, "stalled shown while the first batch waits")
	if s.WaitingSince == nil || !strings.Contains(s.LastError, "no acknowledgement") || s.Reconnects != 0 {
		t.Fatalf("while waiting: %+v", s)
	}
	close(release)
	testkit.Eventually(t, 10*time.Second, func() bool { s = en.Status(); return s.RecordsSent == 100 }, "delivery")
	closeEngine(t, en)
	if s.State != StateConnected || s.WaitingSince != nil || s.LastError != "" || s.Reconnects != 0 {
		t.Fatalf("after the late acknowledgement: %+v", s)
	}
}

// TestUpstreamResetDetected: an upstream that comes back without the
// checkpoints this bridge wrote (a reinstalled core cluster) is said
// loudly — status, metric, an error line — and the bridge resumes from
// its local checkpoint, not from zero; an upstream checkpoint behind the
// local one is said too, and wins.
func TestUpstreamResetDetected(t *testing.T) {
	lg, st := setup(t, 200, 10)
	f := newFake()
	f.upstream = map[TP]Progress{}
	var logs syncBuf
	en := newEngine(t, Config{Backoff: time.Millisecond, Logger: newTextLogger(&logs)}, lg, st, f)
	runUntil(t, en, "delivery", 10*time.Second, func() bool { return en.Status().Lag == 0 })
	if s := en.Status(); s.UpstreamReset != "" {
		t.Fatalf("reset reported on a first start: %q", s.UpstreamReset)
	}

	f.mu.Lock()
	f.upstream = map[TP]Progress{{"t", 1}: {Next: 10}} // reinstalled: t/0 gone, t/1 behind
	f.mu.Unlock()
	tp, _ := lg.Topic("t")
	en2 := newEngine(t, Config{Backoff: time.Millisecond, Logger: newTextLogger(&logs)}, lg, st, f)
	en2.Start()
	appendRecs(t, tp, 200, 10, 10)
	testkit.Eventually(t, 10*time.Second, func() bool { return en2.Status().Lag == 0 }, "delivery after the reset")
	closeEngine(t, en2)
	s := en2.Status()
	if !strings.Contains(s.UpstreamReset, "the upstream has no checkpoint for t/0") && !strings.Contains(s.UpstreamReset, "behind") {
		t.Fatalf("status upstream_reset %q", s.UpstreamReset)
	}
	if n := testutil.ToFloat64(en2.metrics.UpstreamResets.WithLabelValues("x")); n != 2 {
		t.Fatalf("upstream resets %v, want 2 (t/0 missing, t/1 behind)", n)
	}
	l := logs.String()
	if !strings.Contains(l, "the upstream has no checkpoint for t/0") || !strings.Contains(l, "resend") || !strings.Contains(l, "is behind") {
		t.Fatalf("log:\n%s", l)
	}
	// t/0 resumed from the local checkpoint: only its new records went,
	// each offset once; t/1 from the upstream's 10: offset 10 went again.
	f.mu.Lock()
	got0, got1 := f.got[TP{"t", 0}], f.got[TP{"t", 1}]
	f.mu.Unlock()
	p0, _ := tp.Partition(0)
	if n := len(got0); int64(n) != p0.HighWatermark() {
		t.Fatalf("t/0: %d offsets delivered for %d stored: it did not resume from the local checkpoint", n, p0.HighWatermark())
	}
	if n := countFrom(got1, 10); n != 2 {
		t.Fatalf("t/1: offset 10 delivered %d times, want twice (sent again from the upstream's checkpoint)", n)
	}
	if n := countFrom(got1, 9); n != 1 {
		t.Fatalf("t/1: offset 9 delivered %d times, want once", n)
	}
}

// countFrom counts how often offset off appears in offs.
func countFrom(offs []int64, off int64) int {
	n := 0
	for _, o := range offs {
		if o == off {
			n++
		}
	}
	return n
}

// TestResend: Resend sends a partition again from an offset, over the
// upstream's checkpoint (an upstream reinstalled empty gets the edge's
// history back); offsets outside the partition and unknown partitions are
// refused.
func TestResend(t *testing.T) {
	lg, st := setup(t, 100, 10)
	f := newFake()
	f.upstream = map[TP]Progress{}
	en := newEngine(t, Config{Backoff: time.Millisecond}, lg, st, f)
	en.Start()
	testkit.Eventually(t, 10*time.Second, func() bool { return en.Status().Lag == 0 }, "delivery")
	tp, _ := lg.Topic("t")
	p0, _ := tp.Partition(0)
	before := len(f.gotOf(TP{"t", 0}))
	if err := en.Resend("t", 0, 5); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		return len(f.gotOf(TP{"t", 0})) == before+int(p0.HighWatermark()-5) && en.Status().Lag == 0
	}, "t/0 sent again from 5")
	if got := f.gotOf(TP{"t", 0}); got[before] != 5 {
		t.Fatalf("the resend began at %d, want 5", got[before])
	}
	for _, c := range []struct {
		topic     string
		partition int32
		offset    int64
		want      error
	}{{"nope", 0, 0, ErrNoSuchPartition}, {"t", 9, 0, ErrNoSuchPartition}, {"t", 0, p0.HighWatermark() + 1, ErrBadOffset}, {"t", 0, -1, ErrBadOffset}} {
		if err := en.Resend(c.topic, c.partition, c.offset); !errors.Is(err, c.want) {
			t.Errorf("Resend(%s, %d, %d) = %v, want %v", c.topic, c.partition, c.offset, err, c.want)
		}
	}
	closeEngine(t, en)
	if n := en.Status().Reconnects; n != 0 {
		t.Fatalf("a resend counted as %d failures", n)
	}
}

func (f *fakeTarget) gotOf(tp TP) []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int64(nil), f.got[tp]...)
}
