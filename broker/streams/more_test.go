package streams

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/testkit"
)

// TestSelectKeyRepartitions: re-keyed records go to the partition of
// their new key, and the windows after the re-key group by it.
func TestSelectKeyRepartitions(t *testing.T) {
	l := openLog(t, t.TempDir())
	defer l.Close()
	if _, err := l.CreateTopic("by_site", commitlog.TopicConfig{Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	sites := map[string]string{"a": "north", "b": "north", "c": "south", "d": "east"}
	for i := range 40 {
		dev := string(rune('a' + i%4))
		put(t, l, "telemetry", dev, sec(float64(i)), fmt.Sprintf(`"site":%q,"v":1`, sites[dev]))
	}
	put(t, l, "telemetry", "a", sec(61), `"site":"north","v":1`) // closes the minute
	b := New("rekey")
	b.Stream("telemetry").
		SelectKey(func(r *Record) ([]byte, error) { v, _ := r.Value("site"); return []byte(v.Str), nil }).
		Aggregate(Tumbling(time.Minute, 0), FieldAggs{"v": {Count}}, OnWindowClose).
		To("by_site")
	top, _ := b.Build()
	drain(t, l, top)
	top2, _ := l.Topic("by_site")
	counts := map[string]float64{}
	for _, p := range top2.Partitions() {
		recs, _, _, err := p.ReadRecords(0, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if want := commitlog.KeyPartition(r.Key, 4); p.ID() != want {
				t.Errorf("key %s in partition %d, want %d", r.Key, p.ID(), want)
			}
		}
	}
	for _, o := range readTopic(t, l, "by_site") {
		counts[o.key] = num(t, o, "v_count")
	}
	if len(counts) != 3 || counts["north"] != 20 || counts["south"] != 10 || counts["east"] != 10 {
		t.Fatalf("counts by site %v", counts)
	}
}

// TestFullOutputPauses: an output topic that refuses new records
// (on_full: reject_new) pauses the pipeline; once there is room it goes
// on, and every output is there once.
func TestFullOutputPauses(t *testing.T) {
	l := openLog(t, t.TempDir())
	defer l.Close()
	cfg := commitlog.TopicConfig{RetentionBytes: 2000, OnFull: commitlog.RejectNew, SegmentBytes: 1 << 20}
	if _, err := l.CreateTopic("small", cfg); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		put(t, l, "telemetry", "k", sec(float64(i)), fmt.Sprintf(`"v":%d`, i))
	}
	b := New("copy")
	b.Stream("telemetry").To("small")
	top, _ := b.Build()
	task := NewTask(l, top, Options{CommitInterval: 5 * time.Millisecond, Retry: 20 * time.Millisecond, Logger: testLogger(t)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { task.Run(ctx); close(done) }()
	testkit.Eventually(t, 10*time.Second, func() bool { return task.Status().State == "paused" }, "the pipeline pauses")
	time.Sleep(100 * time.Millisecond) // paused, it must not drop or write
	held := len(readTopic(t, l, "small"))
	if held >= 100 { // an append is refused whole: none of it, or earlier commits, are in
		t.Fatalf("%d records in the full topic", held)
	}
	cfg.RetentionBytes = 1 << 20
	if err := l.UpdateTopic("small", cfg); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return len(readTopic(t, l, "small")) == 100 }, "every record written")
	testkit.Eventually(t, 10*time.Second, func() bool { return task.Status().State == "running" }, "running again")
	cancel()
	<-done
	var vs []float64
	for _, o := range readTopic(t, l, "small") {
		vs = append(vs, num(t, o, "v"))
	}
	for i, v := range vs {
		if v != float64(i) {
			t.Fatalf("after the pause: %v", vs)
		}
	}
}

// TestRestoreAfterCompaction: a pipeline restored from a compacted
// changelog (old markers and superseded state gone) goes on exactly as
// one whose changelog was not compacted.
func TestRestoreAfterCompaction(t *testing.T) {
	src := openLog(t, t.TempDir())
	defer src.Close()
	writeKillN(t, src, 20000)
	srcTop, _ := src.Topic("telemetry")

	run := func(compact bool) (map[string][]string, int64) {
		l := openLog(t, t.TempDir())
		defer l.Close()
		// Small segments, so compaction has closed ones to work on.
		if _, err := l.CreateTopic("kill.changelog", commitlog.TopicConfig{Partitions: 1, Cleanup: commitlog.CleanupCompact,
			MaxBatchBytes: 8 << 20, SegmentBytes: 64 << 10, MinCleanableDirtyRatio: 0.01}); err != nil {
			t.Fatal(err)
		}
		top, err := l.CreateTopic("telemetry", commitlog.TopicConfig{Partitions: 4})
		if err != nil {
			t.Fatal(err)
		}
		// The same input in two halves, each partition's first half first.
		copyHalf := func(second bool) {
			for _, p := range srcTop.Partitions() {
				recs, _, _, err := p.ReadRecords(0, 64<<20)
				if err != nil {
					t.Fatal(err)
				}
				half := recs[:len(recs)/2]
				if second {
					half = recs[len(recs)/2:]
				}
				out := make([]commitlog.Record, len(half))
				for i, r := range half {
					out[i] = commitlog.Record{Key: r.Key, Value: r.Value, Timestamp: r.Timestamp}
				}
				dst, _ := top.Partition(p.ID())
				if _, err := dst.Append(context.Background(), out).Wait(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
		}
		copyHalf(false)
		drain(t, l, killTopology(t), Options{CommitInterval: time.Millisecond, MaxBatchRecords: 100})
		var removed int64
		if compact {
			if removed = l.Compact(); removed <= 0 {
				t.Fatal("compaction removed nothing")
			}
		}
		copyHalf(true)
		drain(t, l, killTopology(t), Options{CommitInterval: time.Millisecond, MaxBatchRecords: 100})
		return outputsOf(t, l), removed
	}
	want, _ := run(false)
	got, removed := run(true)
	for topic, w := range want {
		if g := got[topic]; !slices.Equal(g, w) {
			t.Errorf("%s: %d outputs, %d without compaction; %s", topic, len(g), len(w), firstDiff(g, w))
		}
	}
	if len(want["kill_1s"]) == 0 {
		t.Fatal("no windows")
	}
	t.Logf("compaction removed %d bytes of the changelog; outputs the same as without it", removed)
}
