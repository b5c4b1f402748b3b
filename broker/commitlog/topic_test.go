package commitlog

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/configs"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
	"github.com/ferry-iot/ferry/broker/commitlog/vfs/vfstest"
)

func TestTopicConfigValidationReportsEveryProblem(t *testing.T) {
	cfg := TopicConfig{Partitions: -1, Flush: "sometimes", OnFull: "explode", Cleanup: "shred",
		SegmentBytes: 10, MaxBatchBytes: 10, MinCleanableDirtyRatio: 2}
	cfg.EnsureDefaults()
	err := cfg.Validate()
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("got %v", err)
	}
	for _, field := range []string{"partitions", "flush", "on_full", "cleanup_policy", "segment_bytes", "max_batch_bytes", "min_cleanable_dirty_ratio"} {
		if !strings.Contains(err.Error(), field+":") {
			t.Errorf("error does not name %s: %v", field, err)
		}
	}
	for _, bad := range []string{"", ".", "..", ".hidden", "a/b", strings.Repeat("x", 201), "sp ace"} {
		if ValidTopicName(bad) == nil {
			t.Errorf("topic name %q accepted", bad)
		}
	}
	if _, err := ParseCompression("brotli"); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("unknown codec: %v, want ErrInvalidConfig", err)
	}
	for _, p := range []CleanupPolicy{"delete", "compact", "compact,delete", "delete, compact"} {
		c := TopicConfig{Cleanup: p}
		c.EnsureDefaults()
		if err := c.Validate(); err != nil {
			t.Errorf("cleanup_policy %q refused: %v", p, err)
		}
	}
	for _, p := range []CleanupPolicy{"compact,", "shred,delete", ","} {
		c := TopicConfig{Cleanup: p}
		c.EnsureDefaults()
		if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("cleanup_policy %q accepted", p)
		}
	}
}

// TestTopicFileErrorsNameTheField: a topic.json with a bad duration or
// codec is refused with the field's name.
func TestTopicFileErrorsNameTheField(t *testing.T) {
	good, err := encodeTopicFile("t", TopicConfig{Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	for field, bad := range map[string]string{
		"flush_interval":   `"flush_interval": "soon"`,
		"retention":        `"retention": "forever"`,
		"delete_retention": `"delete_retention": "1 day"`,
		"segment_age":      `"segment_age": "7"`,
		"compression":      `"compression": "brotli"`,
	} {
		b := good
		for _, line := range strings.Split(string(good), "\n") {
			if strings.Contains(line, `"`+field+`"`) {
				b = []byte(strings.Replace(string(good), strings.TrimSuffix(strings.TrimSpace(line), ","), bad, 1))
			}
		}
		if bytes.Equal(b, good) {
			t.Fatalf("no %s line in %s", field, good)
		}
		_, _, err := decodeTopicFile(b)
		var fe *configs.FieldError
		if !errors.Is(err, ErrInvalidConfig) || !errors.As(err, &fe) || fe.Key != field {
			t.Errorf("%s: %v", field, err)
		}
	}
	if _, _, err := decodeTopicFile([]byte("{")); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("truncated topic.json: %v", err)
	}
}

// TestErrorsNameTopicAndPartition: storage errors from topic admin and
// partition recovery say which topic (and partition) and wrap the cause.
func TestErrorsNameTopicAndPartition(t *testing.T) {
	mem := vfs.NewMem()
	var fail atomic.Value // func(vfs.Op, string) bool
	fail.Store(func(vfs.Op, string) bool { return false })
	efs := vfs.NewErrorFS(mem, vfs.InjectFunc(func(op vfs.Op, name string) error {
		if fail.Load().(func(vfs.Op, string) bool)(op, name) {
			return vfs.ErrInjected
		}
		return nil
	}))
	l := openTestLog(t, efs)
	mustTopic(t, l, "kept", TopicConfig{Partitions: 2})
	check := func(what string, err error, want string) {
		t.Helper()
		if !errors.Is(err, vfs.ErrInjected) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want it to name %s and wrap the fault", what, err, want)
		}
	}
	fail.Store(func(op vfs.Op, _ string) bool { return op == vfs.OpMkdirAll })
	_, err := l.CreateTopic("made", TopicConfig{})
	check("CreateTopic", err, `topic "made"`)
	fail.Store(func(op vfs.Op, name string) bool {
		return op == vfs.OpOpen && strings.HasSuffix(name, topicFileName+".tmp")
	})
	check("UpdateTopic", l.UpdateTopic("kept", TopicConfig{Partitions: 3}), `topic "kept"`)
	fail.Store(func(op vfs.Op, _ string) bool { return op == vfs.OpMkdirAll })
	check("UpdateTopic adding a partition", l.UpdateTopic("kept", TopicConfig{Partitions: 3}), `topic "kept" partition 2`)
	fail.Store(func(vfs.Op, string) bool { return false })
	mustTopic(t, l, "doomed", TopicConfig{})
	fail.Store(func(op vfs.Op, _ string) bool { return op == vfs.OpRename })
	check("DeleteTopic", l.DeleteTopic("doomed"), `topic "doomed"`)
	fail.Store(func(vfs.Op, string) bool { return false })
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	fail.Store(func(op vfs.Op, name string) bool {
		return op == vfs.OpReadDir && name == filepath.Join(testDir, "kept", "1")
	})
	_, err = Open(testDir, WithFS(efs), WithLogger(quietLogger()))
	check("Open", err, `topic "kept" partition 1`)
}

func TestTopicMetadataPersistsAndGrows(t *testing.T) {
	mem := vfs.NewMem()
	l := openTestLog(t, mem)
	cfg := TopicConfig{Partitions: 2, Flush: FlushInterval, FlushInterval: 250 * time.Millisecond,
		Retention: 36 * time.Hour, RetentionBytes: 1 << 30, OnFull: RejectNew, Compression: CompressionLz4}
	mustTopic(t, l, "telemetry", cfg)
	if _, err := l.CreateTopic("telemetry", cfg); !errors.Is(err, ErrTopicExists) {
		t.Fatalf("duplicate create: %v", err)
	}
	cfg.Partitions = 4
	if err := l.UpdateTopic("telemetry", cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Partitions = 3
	if err := l.UpdateTopic("telemetry", cfg); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("shrinking partitions: %v", err)
	}
	tp, _ := l.Topic("telemetry")
	p3, _ := tp.Partition(3)
	mustAppend(t, p3, rec("k", "v", 0))
	l.Close()
	// Crash-consistent: a power cut now keeps the topic and its config.
	crashed := mem.CrashClone(vfs.CrashOptions{})
	l = openTestLog(t, crashed)
	defer l.Close()
	tp, err := l.Topic("telemetry")
	if err != nil {
		t.Fatal(err)
	}
	got := tp.Config()
	if got.Partitions != 4 || got.Flush != FlushInterval || got.FlushInterval != 250*time.Millisecond ||
		got.Retention != 36*time.Hour || got.OnFull != RejectNew || got.Compression != CompressionLz4 {
		t.Fatalf("config after reopen: %+v", got)
	}
	p3, _ = tp.Partition(3)
	if p3.HighWatermark() != 1 {
		t.Fatalf("partition 3 hwm %d", p3.HighWatermark())
	}
	if _, err := l.Topic("nope"); !errors.Is(err, ErrUnknownTopic) {
		t.Fatalf("unknown topic: %v", err)
	}
	for _, id := range []int32{-1, 4, 100} {
		if _, err := tp.Partition(id); !errors.Is(err, ErrUnknownPartition) || errors.Is(err, ErrUnknownTopic) {
			t.Fatalf("partition %d of a topic with 4: %v, want ErrUnknownPartition only", id, err)
		}
	}
}

func TestInterruptedTopicCreationIsCleanedUp(t *testing.T) {
	mem := vfs.NewMem()
	l := openTestLog(t, mem)
	l.Close()
	// A creation that crashed before its rename leaves a hidden directory.
	mem.MkdirAll(filepath.Join(testDir, ".half.creating", "0"), 0o755)
	l = openTestLog(t, mem)
	defer l.Close()
	if len(l.Topics()) != 0 {
		t.Fatalf("topics: %v", l.Topics())
	}
	if ok, _ := vfs.Exists(mem, filepath.Join(testDir, ".half.creating")); ok {
		t.Fatal("leftover directory not removed")
	}
}

func TestDeleteTopic(t *testing.T) {
	mem := vfs.NewMem()
	l := openTestLog(t, mem)
	defer l.Close()
	tp := mustTopic(t, l, "gone", TopicConfig{})
	p, _ := tp.Partition(0)
	mustAppend(t, p, rec("k", "v", 0))
	if err := l.DeleteTopic("gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Append(context.Background(), []Record{rec("k", "v", 0)}).Wait(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("append to a deleted topic: %v", err)
	}
	if names, _ := mem.ReadDir(testDir); len(names) != 0 {
		t.Fatalf("files left: %v", names)
	}
	mustTopic(t, l, "gone", TopicConfig{}) // the name is free again
}

// waitAck waits for an append's acknowledgement; the timeout only turns a
// hang into a failure.
func waitAck(t *testing.T, f *Future) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	off, err := f.Wait(ctx)
	if err != nil {
		t.Fatalf("append not acknowledged: %v", err)
	}
	return off
}

// durableHWM is the high watermark a power cut now would leave.
func durableHWM(t *testing.T, mem *vfs.Mem) int64 {
	t.Helper()
	c := openTestLog(t, mem.CrashClone(vfs.CrashOptions{}))
	defer c.Close()
	tp, _ := c.Topic("t")
	p, _ := tp.Partition(0)
	return p.HighWatermark()
}

// TestFlushPolicies holds every fsync of segment files back: interval and
// never must acknowledge anyway (after the write), and the record is then
// visible but not yet durable. interval's own timer fsyncs it without more
// appends; never leaves it to the clean shutdown.
func TestFlushPolicies(t *testing.T) {
	t.Run("interval", func(t *testing.T) {
		mem := vfs.NewMem()
		fs := vfstest.NewBlockingFS(mem, suffixLog)
		synced := make(chan struct{}, 16)
		l := openTestLog(t, fs, WithSyncObserver(func(time.Duration) {
			select {
			case synced <- struct{}{}:
			default:
			}
		}))
		defer l.Close()
		p, _ := mustTopic(t, l, "t", TopicConfig{Flush: FlushInterval, FlushInterval: 20 * time.Millisecond}).Partition(0)
		fs.Block()
		waitAck(t, p.Append(context.Background(), []Record{rec("k", "v", 0)})) // every fsync is held back
		if p.HighWatermark() != 1 {
			t.Fatalf("acknowledged record not visible: hwm %d", p.HighWatermark())
		}
		if n := durableHWM(t, mem); n != 0 {
			t.Fatalf("%d records durable before any fsync ran", n)
		}
		select {
		case <-fs.Held(): // started by the interval alone
		case <-time.After(30 * time.Second):
			t.Fatal("the periodic fsync never happened")
		}
		fs.Unblock()
		select {
		case <-synced:
		case <-time.After(30 * time.Second):
			t.Fatal("the end of the periodic fsync never happened")
		}
		if n := durableHWM(t, mem); n != 1 {
			t.Fatalf("durable hwm %d after the periodic fsync, want 1", n)
		}
	})
	t.Run("never", func(t *testing.T) {
		mem := vfs.NewMem()
		fs := vfstest.NewBlockingFS(mem, suffixLog)
		l := openTestLog(t, fs)
		p, _ := mustTopic(t, l, "t", TopicConfig{Flush: FlushNever}).Partition(0)
		fs.Block()
		waitAck(t, p.Append(context.Background(), []Record{rec("k", "v", 0)}))
		if p.HighWatermark() != 1 {
			t.Fatal("flush=never append not visible after acknowledgement")
		}
		if n := durableHWM(t, mem); n != 0 {
			t.Fatal("flush=never record was fsynced before close")
		}
		if n := fs.Syncs(); n != 0 {
			t.Fatalf("flush=never fsynced a segment file (%d fsyncs)", n)
		}
		fs.Unblock()
		l.Close() // a clean shutdown syncs everything
		if n := durableHWM(t, mem); n != 1 {
			t.Fatal("clean shutdown did not sync a flush=never topic")
		}
	})
}

func TestPendingBytesAreBounded(t *testing.T) {
	fs := vfstest.NewBlockingFS(vfs.NewMem(), "")
	l := openTestLog(t, fs, WithMaxPendingBytes(64<<10))
	p, _ := mustTopic(t, l, "t", TopicConfig{}).Partition(0)
	fs.Block()
	defer l.Close()
	defer fs.Unblock()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	payload := make([]byte, 1000)
	var blocked error
	n := 0
	for ; n < 1000 && blocked == nil; n++ {
		f := p.Append(ctx, []Record{{Key: []byte("k"), Value: payload}})
		select {
		case <-f.Done():
			blocked = f.Err()
		default:
		}
	}
	if !errors.Is(blocked, context.DeadlineExceeded) {
		t.Fatalf("appends were never held back: %v after %d appends", blocked, n)
	}
	// Two cycles wait for the blocked syncer, one more sits in the
	// committer's hands, and the pending queue is bounded.
	if n > 4*(64<<10)/1000+4 {
		t.Fatalf("%d appends of 1000 bytes accepted with a 64 KiB bound", n)
	}
	p.mu.Lock()
	pending := p.mu.bytes
	p.mu.Unlock()
	if pending > 64<<10 {
		t.Fatalf("%d bytes pending, bound is 64 KiB", pending)
	}
}

func TestClosedLogRefusesWork(t *testing.T) {
	l := openTestLog(t, vfs.NewMem())
	p, _ := mustTopic(t, l, "t", TopicConfig{}).Partition(0)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Append(context.Background(), []Record{rec("k", "v", 0)}).Wait(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	if _, err := p.Read(0, 100); err == nil {
		t.Fatal("read after close succeeded")
	}
	if _, err := l.Topic("t"); !errors.Is(err, ErrClosed) {
		t.Fatalf("topic lookup after close: %v", err)
	}
	if err := l.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
}
