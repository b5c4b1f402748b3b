package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/testkit"
)

// rejectingSend refuses, for good, every batch that holds one of the rejected
// records: naming just those (exact), or every record of the batch
// (suspect, as Kafka refuses a whole partition batch).
func rejectingSend(rejected map[TP]map[int64]bool, suspect bool) func(context.Context, int, *Batch) error {
	return func(_ context.Context, _ int, b *Batch) error {
		var guilty, all []Rejected
		for _, it := range b.Items {
			r := Rejected{TP: it.TP, Offset: it.Record.Offset}
			all = append(all, r)
			if rejected[it.TP][it.Record.Offset] {
				guilty = append(guilty, r)
			}
		}
		if len(guilty) == 0 {
			return nil
		}
		if suspect {
			return fmt.Errorf("send: %w", &RejectedError{Records: all, Suspect: true, Err: errors.New("INVALID_RECORD")})
		}
		return &RejectedError{Records: guilty, Err: errors.New("MESSAGE_TOO_LARGE")}
	}
}

// noReconnects asserts rejections cost the session nothing.
func noReconnects(t *testing.T, en *Engine) {
	t.Helper()
	if n := en.Status().Reconnects; n != 0 {
		t.Fatalf("rejections cost %d reconnects", n)
	}
}

// checkRejected asserts the rejected records were skipped: counted once
// each, never delivered, their provenance in the rejected topic, and each
// passed over by an acknowledged batch whose progress moves past it (what
// an upstream that stores checkpoints commits in the same transaction).
func checkRejected(t *testing.T, en *Engine, f *fakeTarget, lg *commitlog.Log, rejected map[TP]map[int64]bool) {
	t.Helper()
	checkDense(t, f, lg, rejected)
	n := 0
	for _, offs := range rejected {
		n += len(offs)
	}
	st := en.Status()
	if st.RecordsRejected != int64(n) || testutil.ToFloat64(en.metrics.Rejected.WithLabelValues("x")) != float64(n) {
		t.Fatalf("rejected: status %d, metric %v, want %d", st.RecordsRejected, testutil.ToFloat64(en.metrics.Rejected.WithLabelValues("x")), n)
	}
	if st.LastRejected == nil || !rejected[TP{st.LastRejected.Topic, st.LastRejected.Partition}][st.LastRejected.Offset] || st.LastRejected.Reason == "" {
		t.Fatalf("last rejected: %+v", st.LastRejected)
	}
	passed := map[TP]map[int64]bool{}
	f.mu.Lock()
	for _, b := range f.batches {
		for _, r := range b.Rejected {
			if !b.Progress[r.TP].covers(r.Offset) {
				t.Fatalf("batch rejecting %s@%d carries progress %+v, not past it", r.TP, r.Offset, b.Progress[r.TP])
			}
			if passed[r.TP] == nil {
				passed[r.TP] = map[int64]bool{}
			}
			if passed[r.TP][r.Offset] {
				t.Fatalf("%s@%d rejected by two acknowledged batches", r.TP, r.Offset)
			}
			passed[r.TP][r.Offset] = true
		}
	}
	f.mu.Unlock()
	for tp, offs := range rejected {
		for off := range offs {
			if !passed[tp][off] {
				t.Fatalf("%s@%d was never passed over by an acknowledged batch", tp, off)
			}
		}
	}
	// The rejected topic: one record per rejected record (a retry may
	// repeat one; the key names it).
	rt, err := lg.Topic(DefaultRejectedTopic)
	if err != nil {
		t.Fatalf("rejected topic: %v", err)
	}
	p := rt.Partitions()[0]
	var recs []commitlog.Record
	for pos := int64(0); pos < p.HighWatermark(); {
		rs, next, _, err := p.ReadRecords(pos, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		recs, pos = append(recs, rs...), next
	}
	seen := map[string]bool{}
	for _, r := range recs {
		var v rejectedRecord
		if err := json.Unmarshal(r.Value, &v); err != nil {
			t.Fatalf("rejected record %q: %v", r.Value, err)
		}
		if !rejected[TP{v.Topic, v.Partition}][v.Offset] || v.Bridge != "x" || v.Reason == "" || v.Bytes == 0 ||
			string(r.Key) != fmt.Sprintf("x/%s/%d/%d", v.Topic, v.Partition, v.Offset) {
			t.Fatalf("rejected record %s: %+v", r.Key, v)
		}
		seen[string(r.Key)] = true
	}
	if len(seen) != n {
		t.Fatalf("rejected topic names %d records, want %d", len(seen), n)
	}
}

// TestRejectedExact: records the upstream refuses for good, by name, are
// skipped; replication goes on without a reconnect.
func TestRejectedExact(t *testing.T) {
	lg, st := setup(t, 2000, 20)
	rejected := map[TP]map[int64]bool{{"t", 0}: {17: true, 18: true, 400: true}, {"t", 1}: {0: true}}
	f := newFake()
	f.send = rejectingSend(rejected, false)
	var logs syncBuf
	en := newEngine(t, Config{MaxBatchRecords: 100, Logger: newTextLogger(&logs)}, lg, st, f)
	runUntil(t, en, "delivery", 20*time.Second, func() bool { return en.Status().Lag == 0 })
	checkRejected(t, en, f, lg, rejected)
	noReconnects(t, en)
	if n := strings.Count(logs.String(), "records passed over for good"); n != 1 {
		t.Fatalf("%d log lines for 4 rejections in a minute, want 1 (rate-limited)", n)
	}
}

// TestRejectedSuspects: the upstream refuses whole batches holding a
// rejected record without saying which; the engine isolates the batches down
// until the guilty record is alone, skips only it, and delivers every
// innocent record exactly once, in order.
func TestRejectedSuspects(t *testing.T) {
	lg, st := setup(t, 3000, 20)
	rejected := map[TP]map[int64]bool{{"t", 0}: {333: true, 334: true, 900: true}, {"t", 1}: {1: true}}
	f := newFake()
	f.send = rejectingSend(rejected, true)
	en := newEngine(t, Config{MaxBatchRecords: 500}, lg, st, f)
	runUntil(t, en, "delivery", 20*time.Second, func() bool { return en.Status().Lag == 0 })
	checkRejected(t, en, f, lg, rejected)
	noReconnects(t, en)
	f.mu.Lock()
	t.Logf("%d sends for %d acknowledged batches", f.sends, len(f.batches))
	f.mu.Unlock()
	if en.isolate.active() {
		t.Fatalf("still isolation after the suspects were passed: %+v", en.isolate)
	}
}

// TestRejectedTooLarge: a record larger than the session's
// Limits.MaxRecordBytes never reaches Send; it is rejected like one the
// upstream refused.
func TestRejectedTooLarge(t *testing.T) {
	lg, st := setup(t, 0, 0)
	tp, _ := lg.Topic("t")
	appendSized(t, tp, 0, 500, func(i int) int {
		if i%97 == 13 {
			return 5000
		}
		return 30
	})
	rejected := map[TP]map[int64]bool{}
	for _, p := range tp.Partitions() {
		for pos := int64(0); pos < p.HighWatermark(); {
			recs, next, _, err := p.ReadRecords(pos, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				if len(r.Value) == 5000 {
					k := TP{"t", p.ID()}
					if rejected[k] == nil {
						rejected[k] = map[int64]bool{}
					}
					rejected[k][r.Offset] = true
				}
			}
			pos = next
		}
	}
	f := newFake()
	f.limits = &Limits{MaxRecordBytes: 1000}
	f.send = func(_ context.Context, _ int, b *Batch) error {
		for _, it := range b.Items {
			if recordBytes(&it.Record) > 1000 {
				return fmt.Errorf("test: a %d-byte record reached Send", recordBytes(&it.Record))
			}
		}
		return nil
	}
	en := newEngine(t, Config{MaxBatchRecords: 40}, lg, st, f)
	runUntil(t, en, "delivery", 20*time.Second, func() bool { return en.Status().Lag == 0 })
	checkRejected(t, en, f, lg, rejected)
	noReconnects(t, en)
	if r := en.Status().LastRejected; !strings.Contains(r.Reason, "larger than the upstream takes") {
		t.Fatalf("reason %q", r.Reason)
	}
}

// TestRejectedUnknownRecords: a RejectedError naming none of the batch's
// records is a plain failure (reconnect), not a skip.
func TestRejectedUnknownRecords(t *testing.T) {
	lg, st := setup(t, 50, 10)
	f := newFake()
	f.send = func(_ context.Context, n int, _ *Batch) error {
		if n == 1 {
			return &RejectedError{Records: []Rejected{{TP: TP{"other", 0}, Offset: 1}}, Err: errors.New("confused target")}
		}
		return nil
	}
	en := newEngine(t, Config{Backoff: time.Millisecond}, lg, st, f)
	runUntil(t, en, "delivery", 10*time.Second, func() bool { return f.delivered() == 50 })
	checkDense(t, f, lg, nil)
	if st := en.Status(); st.RecordsRejected != 0 || st.Reconnects != 1 {
		t.Fatalf("status %+v", st)
	}
}

// TestRejectedProvenanceFirst: while the provenance of a rejected record
// cannot be appended to the rejected topic (a reject_new topic that is
// full), no batch passing over the record is sent: the rounds fail and
// are retried. Once the topic takes records the record is skipped with
// its provenance on record.
func TestRejectedProvenanceFirst(t *testing.T) {
	lg, st := setup(t, 200, 20)
	if _, err := lg.CreateTopic(DefaultRejectedTopic, commitlog.TopicConfig{Partitions: 1, OnFull: commitlog.RejectNew, RetentionBytes: 10}); err != nil {
		t.Fatal(err)
	}
	rejected := map[TP]map[int64]bool{{"t", 0}: {17: true}}
	f := newFake()
	f.send = rejectingSend(rejected, false)
	en := newEngine(t, Config{MaxBatchRecords: 10, Backoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond}, lg, st, f)
	en.Start()
	testkit.Eventually(t, 10*time.Second, func() bool {
		st := en.Status()
		return st.RecordsRejected > 0 || (st.Reconnects >= 3 && strings.Contains(st.LastError, "rejected topic"))
	}, "failed rounds or a skip")
	if st := en.Status(); st.RecordsRejected != 0 {
		t.Fatalf("%d record(s) skipped without their provenance in the rejected topic", st.RecordsRejected)
	}
	f.mu.Lock()
	for i, b := range f.batches {
		if len(b.Rejected) > 0 || b.Progress[TP{"t", 0}].covers(17) {
			f.mu.Unlock()
			t.Fatalf("batch %d passed over t/0@17 (rejected %v, progress %+v) while its provenance could not be stored", i, b.Rejected, b.Progress)
		}
	}
	f.mu.Unlock()
	if err := lg.UpdateTopic(DefaultRejectedTopic, commitlog.TopicConfig{Partitions: 1, OnFull: commitlog.RejectNew}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return en.Status().Lag == 0 }, "delivery")
	closeEngine(t, en)
	checkRejected(t, en, f, lg, rejected)
}

// TestRejectedFormats: the rejected topic's records and Status's
// last_rejected keep their JSON, byte for byte.
func TestRejectedFormats(t *testing.T) {
	lg, st := setup(t, 0, 0)
	en := newEngine(t, Config{Name: "edge-1"}, lg, st, newFake())
	at := time.Date(2026, 1, 2, 3, 4, 5, 6_000_000, time.UTC)
	for _, tc := range []struct {
		r          Rejected
		key, value string
	}{
		{Rejected{TP: TP{"telemetry", 2}, Offset: 17, Reason: "MESSAGE_TOO_LARGE", Timestamp: 1_700_000_000_123, Key: []byte("dev-1"), Bytes: 2048},
			"edge-1/telemetry/2/17",
			`{"bridge":"edge-1","topic":"telemetry","partition":2,"offset":17,"timestamp":1700000000123,"key":"ZGV2LTE=","bytes":2048,"reason":"MESSAGE_TOO_LARGE","rejected_at":"2026-01-02T03:04:05.006Z"}`},
		{Rejected{TP: TP{"t", 0}, Offset: 0, Reason: "record of 5000 bytes is larger than the upstream takes (1000)", Bytes: 5000},
			"edge-1/t/0/0",
			`{"bridge":"edge-1","topic":"t","partition":0,"offset":0,"timestamp":0,"key":null,"bytes":5000,"reason":"record of 5000 bytes is larger than the upstream takes (1000)","rejected_at":"2026-01-02T03:04:05.006Z"}`},
	} {
		rec := en.rejectedRecordOf(tc.r, at)
		if string(rec.Key) != tc.key || string(rec.Value) != tc.value || rec.Timestamp != at.UnixMilli() {
			t.Errorf("rejected-topic record %s = %s (timestamp %d)\nwant %s = %s", rec.Key, rec.Value, rec.Timestamp, tc.key, tc.value)
		}
	}
	v, err := json.Marshal(Status{LastRejected: &RejectedStatus{TP: TP{"telemetry", 2}, Offset: 17, Reason: "MESSAGE_TOO_LARGE", At: at}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `"last_rejected":{"topic":"telemetry","partition":2,"offset":17,"reason":"MESSAGE_TOO_LARGE","at":"2026-01-02T03:04:05.006Z"}`; !strings.Contains(string(v), want) {
		t.Errorf("status %s\nwant it to hold %s", v, want)
	}
}

// TestDamagedRecordsRecorded: a batch damaged on the edge's disk (one
// flipped bit in a sealed segment) cannot be sent; the bridge passes over
// exactly its offsets and records them like a refused record — counted,
// in the rejected topic, with the batch that moves past them — never
// silently, and everything after it is sent.
func TestDamagedRecordsRecorded(t *testing.T) {
	lg, st, tp := openEdge(t, commitlog.TopicConfig{Partitions: 1, SegmentBytes: 4096})
	for i := range 200 {
		if _, err := tp.Append(context.Background(), []commitlog.Record{{Key: []byte("k"), Value: []byte(fmt.Sprintf("value-%03d", i))}}).Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	flipBitOf(t, filepath.Join(lg.Dir(), "t", "0"), 50)

	f := newFake()
	en := newEngine(t, Config{}, lg, st, f)
	runUntil(t, en, "delivery past the damage", 20*time.Second, func() bool { return en.Status().Lag == 0 })
	checkRejected(t, en, f, lg, map[TP]map[int64]bool{{"t", 0}: {50: true}})
	if r := en.Status().LastRejected; !strings.Contains(r.Reason, "damaged on the edge's disk") {
		t.Fatalf("last rejected: %+v", r)
	}
}

// flipBitOf flips a bit inside the records of the batch holding offset in
// partition directory dir, in place, as a failing SD card might.
func flipBitOf(t *testing.T, dir string, offset int64) {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		pos := int64(0)
		found := int64(-1)
		_ = commitlog.SplitBatches(b, func(h commitlog.BatchHeader, batch []byte) error {
			if h.BaseOffset <= offset && offset <= h.LastOffset() {
				found = pos
			}
			pos += h.Size()
			return nil
		})
		if found < 0 {
			continue
		}
		f, err := os.OpenFile(name, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		at := found + commitlog.BatchHeaderSize + 2
		if _, err := f.WriteAt([]byte{b[at] ^ 0x04}, at); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("no segment in %s holds offset %d", dir, offset)
}
