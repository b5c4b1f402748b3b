package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	flog "github.com/ferry-iot/ferry/broker/log"
	"github.com/ferry-iot/ferry/broker/state"
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

// fakeTarget records what it was sent; its behaviour per Send is
// scripted by a function.
type fakeTarget struct {
	mu       sync.Mutex
	got      map[TP][]int64 // delivered offsets per partition, in order
	sends    int
	connects int
	send     func(ctx context.Context, n int, b *Batch) error // n: Send number, from 1
}

func (f *fakeTarget) Connect(context.Context) (Conn, error) {
	f.mu.Lock()
	f.connects++
	f.mu.Unlock()
	return f, nil
}
func (f *fakeTarget) Checkpoints(context.Context, []TP) (map[TP]Progress, error) { return nil, nil }
func (f *fakeTarget) Close() error                                               { return nil }
func (f *fakeTarget) Send(ctx context.Context, b *Batch) error {
	f.mu.Lock()
	f.sends++
	n := f.sends
	f.mu.Unlock()
	if f.send != nil {
		if err := f.send(ctx, n, b); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, it := range b.Items {
		f.got[it.TP] = append(f.got[it.TP], it.Record.Offset)
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

func setup(t *testing.T, records, size int) (*flog.Log, *state.Store) {
	t.Helper()
	dir := t.TempDir()
	st, err := state.Open(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	lg, err := flog.Open(filepath.Join(dir, "log"), flog.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close(); st.Close() })
	tp, err := lg.EnsureTopic("t", flog.TopicConfig{Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	appendRecs(t, tp, 0, records, size)
	return lg, st
}

func appendRecs(t *testing.T, tp *flog.Topic, from, n, size int) {
	t.Helper()
	var f *flog.Future
	for i := from; i < from+n; i++ {
		f = tp.Append(context.Background(), []flog.Record{{Key: []byte(fmt.Sprintf("k%d", i%7)), Value: make([]byte, size)}})
	}
	if f != nil {
		if _, err := f.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func checkDense(t *testing.T, f *fakeTarget, lg *flog.Log) {
	t.Helper()
	tp, _ := lg.Topic("t")
	for _, p := range tp.Partitions() {
		got := f.got[TP{"t", p.ID()}]
		if int64(len(got)) != p.HighWatermark() {
			t.Fatalf("partition %d: %d delivered, log holds %d", p.ID(), len(got), p.HighWatermark())
		}
		for i, off := range got {
			if off != int64(i) {
				t.Fatalf("partition %d: delivery %d is offset %d", p.ID(), i, off)
			}
		}
	}
}

// TestFailuresResendAndBackOff: failed sends are retried after a backoff
// and deliver every record once, in order; checkpoints survive a restart.
func TestFailuresResendAndBackOff(t *testing.T) {
	lg, st := setup(t, 3000, 100)
	f := &fakeTarget{got: map[TP][]int64{}, send: func(_ context.Context, n int, _ *Batch) error {
		if n%3 == 0 {
			return errors.New("link down")
		}
		return nil
	}}
	reg := prometheus.NewRegistry()
	en, err := New(Config{Name: "x", Topics: []string{"t"}, MaxBatchRecords: 100, Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		Metrics: NewMetrics(reg)}, lg, st, f)
	if err != nil {
		t.Fatal(err)
	}
	en.Start()
	waitFor(t, "delivery", 20*time.Second, func() bool { return en.Status().Lag == 0 && f.delivered() == 3000 })
	if err := en.Close(); err != nil {
		t.Fatal(err)
	}
	checkDense(t, f, lg)
	if n := testutil.ToFloat64(en.metrics.Records.WithLabelValues("x")); n != 3000 {
		t.Fatalf("records metric %v", n)
	}
	if n := testutil.ToFloat64(en.metrics.Failures.WithLabelValues("x", "send")); n == 0 {
		t.Fatal("no send failures counted")
	}
	if st := en.Status(); st.Reconnects == 0 || st.RecordsSent != 3000 {
		t.Fatalf("status %+v", st)
	}
	// Restarted: the local checkpoints say everything is upstream.
	f2 := &fakeTarget{got: map[TP][]int64{}}
	en2, err := New(Config{Name: "x", Topics: []string{"t"}}, lg, st, f2)
	if err != nil {
		t.Fatal(err)
	}
	en2.Start()
	tp, _ := lg.Topic("t")
	appendRecs(t, tp, 3000, 10, 100)
	waitFor(t, "new records", 10*time.Second, func() bool { return f2.delivered() == 10 })
	en2.Close()
}

// TestStallWatchdog: a Send that never returns is abandoned after
// StallTimeout; the engine reports "stalled", reconnects and delivers.
func TestStallWatchdog(t *testing.T) {
	lg, st := setup(t, 200, 100)
	block := make(chan struct{})
	f := &fakeTarget{got: map[TP][]int64{}, send: func(ctx context.Context, n int, _ *Batch) error {
		if n == 1 {
			select { // the link "looks up" but nothing comes back
			case <-block:
			case <-ctx.Done():
			}
			return errors.New("gave up")
		}
		return nil
	}}
	en, err := New(Config{Name: "x", Topics: []string{"t"}, StallTimeout: 200 * time.Millisecond, Backoff: time.Millisecond}, lg, st, f)
	if err != nil {
		t.Fatal(err)
	}
	en.Start()
	waitFor(t, "stall detected", 10*time.Second, func() bool { return en.Status().Reconnects > 0 })
	close(block)
	waitFor(t, "delivery", 10*time.Second, func() bool { return f.delivered() == 200 })
	if err := en.Close(); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(en.metrics.Failures.WithLabelValues("x", "stalled")); n != 1 {
		t.Fatalf("stalled failures %v, want 1", n)
	}
}

// TestRateLimit: a byte-rate limit paces the sends (a lower bound only:
// the limiter can never be faster than its rate).
func TestRateLimit(t *testing.T) {
	lg, st := setup(t, 300, 1000) // ~300 KB
	f := &fakeTarget{got: map[TP][]int64{}}
	en, err := New(Config{Name: "x", Topics: []string{"t"}, RateLimit: 200 << 10, MaxBatchBytes: 64 << 10}, lg, st, f)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	en.Start()
	waitFor(t, "delivery", 20*time.Second, func() bool { return f.delivered() == 300 })
	el := time.Since(start)
	en.Close()
	// The burst is max(rate, batch) = 200 KiB: the rest (~90 KiB) waits.
	if el < 300*time.Millisecond {
		t.Fatalf("300 KB at 200 KiB/s took %v", el)
	}
}

// TestLiveFirstMerge: with a backlog above the threshold, records that
// arrive later are sent before the backlog finishes; in the end every
// record is delivered once and the ranges merge.
func TestLiveFirstMerge(t *testing.T) {
	lg, st := setup(t, 2000, 100)
	tp, _ := lg.Topic("t")
	var mu sync.Mutex
	var liveSeenAt int // sends done when the first live record went out
	release := make(chan struct{})
	f := &fakeTarget{got: map[TP][]int64{}}
	f.send = func(_ context.Context, n int, b *Batch) error {
		if n == 1 {
			<-release
		}
		for _, it := range b.Items {
			if it.Record.Offset >= 1000 && it.Record.Offset%2 == 0 { // a live record (see below)
				mu.Lock()
				if liveSeenAt == 0 {
					liveSeenAt = n
				}
				mu.Unlock()
			}
		}
		return nil
	}
	en, err := New(Config{Name: "x", Topics: []string{"t"}, Order: LiveFirst, LiveThreshold: 100, MaxBatchRecords: 50, Linger: time.Millisecond}, lg, st, f)
	if err != nil {
		t.Fatal(err)
	}
	en.Start()
	// The first batch (which splits the partitions) is held back while
	// live records arrive.
	waitFor(t, "first send", 10*time.Second, func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.sends == 1 })
	appendRecs(t, tp, 2000, 200, 100) // live records: offsets >= ~1000 in each partition
	close(release)
	waitFor(t, "delivery", 20*time.Second, func() bool { return f.delivered() == 2200 })
	en.Close()
	for _, p := range tp.Partitions() {
		got := f.got[TP{"t", p.ID()}]
		seen := map[int64]bool{}
		for _, off := range got {
			if seen[off] {
				t.Fatalf("offset %d delivered twice", off)
			}
			seen[off] = true
		}
		if int64(len(seen)) != p.HighWatermark() {
			t.Fatalf("partition %d: %d of %d delivered", p.ID(), len(seen), p.HighWatermark())
		}
	}
	for _, p := range en.Status().Partitions {
		if p.LiveFrom != 0 || p.Lag != 0 {
			t.Fatalf("ranges did not merge: %+v", p)
		}
	}
	// 2000 backlog records at 50 a batch need ~40 sends; live ones went
	// out long before that.
	if liveSeenAt == 0 || liveSeenAt > 10 {
		t.Fatalf("first live record went out with send %d", liveSeenAt)
	}
}
