package log

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/broker/log/vfs"
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
	if _, err := ParseCompression("brotli"); err == nil {
		t.Error("unknown codec accepted")
	}
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

func TestFlushPolicies(t *testing.T) {
	t.Run("interval", func(t *testing.T) {
		mem := vfs.NewMem()
		l := openTestLog(t, mem)
		defer l.Close()
		p, _ := mustTopic(t, l, "t", TopicConfig{Flush: FlushInterval, FlushInterval: 20 * time.Millisecond}).Partition(0)
		mustAppend(t, p, rec("k", "v", 0)) // acknowledged after the write
		deadline := time.Now().Add(5 * time.Second)
		for {
			// The periodic fsync makes it durable without further appends.
			c := openTestLog(t, mem.CrashClone(vfs.CrashOptions{}))
			tp, _ := c.Topic("t")
			cp, _ := tp.Partition(0)
			n := cp.HighWatermark()
			c.Close()
			if n == 1 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("record never became durable under flush=interval")
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	t.Run("never", func(t *testing.T) {
		mem := vfs.NewMem()
		l := openTestLog(t, mem)
		p, _ := mustTopic(t, l, "t", TopicConfig{Flush: FlushNever}).Partition(0)
		mustAppend(t, p, rec("k", "v", 0))
		if p.HighWatermark() != 1 {
			t.Fatal("flush=never append not visible after acknowledgement")
		}
		c := openTestLog(t, mem.CrashClone(vfs.CrashOptions{}))
		tp, _ := c.Topic("t")
		cp, _ := tp.Partition(0)
		if cp.HighWatermark() != 0 {
			t.Fatal("flush=never record was fsynced before close")
		}
		c.Close()
		l.Close() // a clean shutdown syncs everything
		c = openTestLog(t, mem.CrashClone(vfs.CrashOptions{}))
		defer c.Close()
		tp, _ = c.Topic("t")
		cp, _ = tp.Partition(0)
		if cp.HighWatermark() != 1 {
			t.Fatal("clean shutdown did not sync a flush=never topic")
		}
	})
}

// blockingSyncFS blocks every fsync while blocked is set, until release
// is closed, to fill the commit pipeline.
type blockingSyncFS struct {
	vfs.FS
	blocked atomic.Bool
	release chan struct{}
}

func (b *blockingSyncFS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	f, err := b.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return blockingFile{File: f, fs: b}, nil
}

type blockingFile struct {
	vfs.File
	fs *blockingSyncFS
}

func (f blockingFile) Sync() error {
	if f.fs.blocked.Load() {
		<-f.fs.release
	}
	return f.File.Sync()
}

func TestPendingBytesAreBounded(t *testing.T) {
	fs := &blockingSyncFS{FS: vfs.NewMem(), release: make(chan struct{})}
	l := openTestLog(t, fs, WithMaxPendingBytes(64<<10))
	p, _ := mustTopic(t, l, "t", TopicConfig{}).Partition(0)
	fs.blocked.Store(true)
	defer l.Close()
	defer close(fs.release)
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
