package commitlog

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
	"github.com/ferry-iot/ferry/broker/testkit"
)

// rawBatch encodes recs as one batch, as a Kafka producer sends it.
func rawBatch(recs ...Record) []byte {
	var raw []byte
	for i := range recs {
		raw = appendRecord(raw, int32(i), 0, &recs[i])
	}
	return appendBatch(nil, batchFields{lastDelta: int32(len(recs) - 1), firstTs: 1, maxTs: 1,
		producerID: -1, producerEpoch: -1, baseSequence: -1, count: int32(len(recs))}, raw)
}

// isGone reports the errors a call on a deleted (or closed) partition may give.
func isGone(err error) bool {
	return errors.Is(err, ErrTopicDeleted) || errors.Is(err, ErrUnknownTopic) || errors.Is(err, ErrClosed)
}

// TestDeletedPartitionFailsCleanly: every call on a partition of a deleted
// topic fails with ErrTopicDeleted or does nothing, including each step a
// retention or compaction pass that listed the topic before the delete
// would take; a long poll waiting on it returns. Nothing panics, and the
// log carries on.
func TestDeletedPartitionFailsCleanly(t *testing.T) {
	clock := testkit.NewClock(clockStart)
	l := openTestLog(t, vfs.NewMem(), WithClock(clock))
	defer l.Close()
	dt := mustTopic(t, l, "gone", TopicConfig{SegmentBytes: 4096, Retention: time.Hour, RetentionBytes: 16 << 10})
	ct := mustTopic(t, l, "gonec", TopicConfig{Cleanup: CleanupCompact, SegmentBytes: 4096})
	p, _ := dt.Partition(0)
	pc, _ := ct.Partition(0)
	fill(t, p, 200, 100)
	fill(t, pc, 200, 100)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a guard, not an assertion
	defer cancel()
	woke := make(chan error, 1)
	go func() { woke <- p.Wait(ctx, p.HighWatermark()) }()

	for _, name := range []string{"gone", "gonec"} {
		if err := l.DeleteTopic(name); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-woke; !errors.Is(err, ErrTopicDeleted) {
		t.Fatalf("a long poll on a deleted partition returned %v, want ErrTopicDeleted", err)
	}
	if err := p.Wait(ctx, p.HighWatermark()); !errors.Is(err, ErrTopicDeleted) {
		t.Fatalf("Wait after the delete: %v", err)
	}
	if _, err := p.Read(0, 100); !errors.Is(err, ErrTopicDeleted) || !errors.Is(err, ErrUnknownTopic) {
		t.Fatalf("Read: %v", err)
	}
	if _, _, _, err := p.ReadRecords(0, 100); !errors.Is(err, ErrTopicDeleted) {
		t.Fatalf("ReadRecords: %v", err)
	}
	if _, _, _, err := p.OffsetForTime(0); !errors.Is(err, ErrTopicDeleted) {
		t.Fatalf("OffsetForTime: %v", err)
	}
	if _, err := p.Append(ctx, []Record{rec("k", "v", 0)}).Wait(ctx); !errors.Is(err, ErrTopicDeleted) || !errors.Is(err, ErrClosed) {
		t.Fatalf("Append: %v", err)
	}
	if _, err := p.AppendBatch(ctx, rawBatch(rec("k", "v", 0))).Wait(ctx); !errors.Is(err, ErrTopicDeleted) {
		t.Fatalf("AppendBatch: %v", err)
	}
	if _, err := dt.Append(ctx, []Record{rec("k", "v", 0)}).Wait(ctx); !errors.Is(err, ErrTopicDeleted) {
		t.Fatalf("Topic.Append: %v", err)
	}
	p.SetHold("bridge", 5)
	p.ReleaseHold("bridge")

	// What a pass that read the topic list before the delete would do.
	clock.Advance(2 * time.Hour)
	if n := p.expire(dt.Config(), clock.Now().UnixMilli(), l.logNowMs()); n != 0 {
		t.Fatalf("expire deleted %d segments of a deleted partition", n)
	}
	if n := p.enforceBytes(dt.Config()); n != 0 {
		t.Fatalf("enforceBytes deleted %d segments of a deleted partition", n)
	}
	p.dropOldest("test")
	if rec, bytes := p.deleteOldest(3); rec != 0 || bytes != 0 {
		t.Fatalf("deleteOldest removed %d records, %d bytes", rec, bytes)
	}
	if l.commit.rollIdle(p, p.activeSegment()) {
		t.Fatal("rolled a deleted partition")
	}
	if n, err := pc.compact(ct.Config(), l.logNowMs()); n != 0 || err != nil {
		t.Fatalf("compaction of a deleted partition: %d %v", n, err)
	}
	if err := p.closeClean(); err != nil {
		t.Fatalf("closeClean of a deleted partition: %v", err)
	}
	if err := p.writeState(false); !errors.Is(err, ErrTopicDeleted) {
		t.Fatalf("writeState: %v", err)
	}

	// The log carries on, and the names are free again.
	l.EnforceRetention()
	l.Compact()
	np, _ := mustTopic(t, l, "gone", TopicConfig{}).Partition(0)
	if off := mustAppend(t, np, rec("k", "new", 0)); off != 0 {
		t.Fatalf("first offset of the recreated topic %d", off)
	}
	if got := readAll(t, np); len(got) != 1 || string(got[0].Value) != "new" {
		t.Fatalf("recreated topic holds %+v", got)
	}
}

// TestDeleteTopicUnderLoad deletes and recreates two topics (one deleting
// by age and size, one compacted) while appenders, readers, long polls,
// retention holds and retention/compaction passes (age, bytes, the
// free-disk floor) work on them. Run it with -race. Every error must be a
// clear "gone" error; a third topic must keep every acknowledged record.
func TestDeleteTopicUnderLoad(t *testing.T) {
	clock := testkit.NewClock(clockStart)
	mem := vfs.NewMem()
	mem.SetCapacity(1 << 20)
	l := openTestLog(t, mem, WithClock(clock), WithMinFreeRatio(0.6))
	defer l.Close()
	cfgs := map[string]TopicConfig{
		"del": {Partitions: 4, SegmentBytes: 4096, Retention: time.Minute, RetentionBytes: 8 << 10, IndexIntervalBytes: 256},
		"cmp": {Partitions: 4, Cleanup: CleanupCompact, SegmentBytes: 4096, DeleteRetention: time.Minute, MinCleanableDirtyRatio: 0.01, IndexIntervalBytes: 256},
	}
	names := []string{"del", "cmp"}
	for _, n := range names {
		mustTopic(t, l, n, cfgs[n])
	}
	keep, _ := mustTopic(t, l, "keep", TopicConfig{SegmentBytes: 4096, Retention: -1, OnFull: RejectNew}).Partition(0)

	part := func(name string, id int) *Partition {
		tp, err := l.Topic(name)
		if err != nil {
			if !errors.Is(err, ErrUnknownTopic) {
				t.Errorf("Topic(%s): %v", name, err)
			}
			return nil
		}
		p, err := tp.Partition(int32(id % 4))
		if err != nil {
			t.Errorf("Partition(%d) of %s: %v", id%4, name, err)
			return nil
		}
		return p
	}
	ctx := context.Background()
	stopCtx, stop := context.WithCancel(ctx)
	defer stop()
	var work, waiters sync.WaitGroup
	for _, name := range names {
		for w := 0; w < 2; w++ {
			work.Go(func() {
				for i := 0; i < 300; i++ {
					p := part(name, i)
					if p == nil {
						runtime.Gosched()
						continue
					}
					r := rec(fmt.Sprintf("k%d", i%7), value(i), 0)
					var f *Future
					if i%5 == 0 {
						f = p.AppendBatch(ctx, rawBatch(r))
					} else {
						f = p.Append(ctx, []Record{r})
					}
					if _, err := f.Wait(ctx); err != nil && !isGone(err) {
						t.Errorf("append to %s: %v", name, err)
					}
				}
			})
		}
		work.Go(func() {
			for i := 0; i < 300; i++ {
				p := part(name, i)
				if p == nil {
					runtime.Gosched()
					continue
				}
				readOK := func(what string, err error) {
					if err != nil && !isGone(err) && !errors.Is(err, ErrOffsetOutOfRange) {
						t.Errorf("%s of %s: %v", what, name, err)
					}
				}
				_, _, _, err := p.ReadRecords(p.StartOffset(), 2048)
				readOK("ReadRecords", err)
				sl, err := p.Read(p.HighWatermark()/2, 512)
				readOK("Read", err)
				if err == nil {
					_, err := sl.AppendTo(nil)
					readOK("Slice.AppendTo", err)
					sl.Release()
				}
				_, _, _, err = p.OffsetForTime(clock.Now().UnixMilli() - 30_000)
				readOK("OffsetForTime", err)
				p.SetHold("reader", p.StartOffset())
				p.ReleaseHold("reader")
			}
		})
		waiters.Go(func() {
			for i := 0; i < 100 && stopCtx.Err() == nil; i++ {
				p := part(name, i)
				if p == nil {
					runtime.Gosched()
					continue
				}
				if err := p.Wait(stopCtx, p.HighWatermark()); err != nil && !isGone(err) && !errors.Is(err, context.Canceled) {
					t.Errorf("Wait on %s: %v", name, err)
				}
			}
		})
	}
	var keptMu sync.Mutex
	kept := map[int64]string{}
	work.Go(func() {
		for i := 0; i < 300; i++ {
			off, err := keep.Append(ctx, []Record{rec("k", value(i), 0)}).Wait(ctx)
			if err == nil {
				keptMu.Lock()
				kept[off] = value(i)
				keptMu.Unlock()
			} else if !errors.Is(err, ErrLogFull) {
				t.Errorf("append to keep: %v", err)
			}
		}
	})
	deleting := make(chan struct{})
	work.Go(func() { // passes until the deleter is done
		for i := 0; ; i++ {
			select {
			case <-deleting:
				return
			default:
			}
			clock.Advance(20 * time.Second)
			l.EnforceRetention()
			if i%4 == 0 {
				l.Compact()
			}
		}
	})
	work.Go(func() {
		defer close(deleting)
		for i := 0; i < 100; i++ {
			name := names[i%2]
			if err := l.DeleteTopic(name); err != nil && !errors.Is(err, ErrUnknownTopic) {
				t.Errorf("delete %s: %v", name, err)
			}
			runtime.Gosched()
			if _, err := l.CreateTopic(name, cfgs[name]); err != nil && !errors.Is(err, ErrTopicExists) {
				t.Errorf("create %s: %v", name, err)
			}
		}
	})
	work.Wait()
	stop()
	waiters.Wait()

	for _, name := range names {
		tp, err := l.Topic(name)
		if err != nil {
			t.Fatalf("topic %s after the last create: %v", name, err)
		}
		for _, p := range tp.Partitions() {
			var last int64 = -1
			for i, r := range readAll(t, p) {
				if r.Offset <= last || name == "del" && r.Offset != p.StartOffset()+int64(i) {
					t.Fatalf("%s/%d: offset %d at index %d after %d", name, p.ID(), r.Offset, i, last)
				}
				last = r.Offset
			}
		}
	}
	got := map[int64]string{}
	for _, r := range readAll(t, keep) {
		got[r.Offset] = string(r.Value)
	}
	for off, v := range kept {
		if got[off] != v {
			t.Fatalf("keep: acknowledged %q at %d, read %q", v, off, got[off])
		}
	}
	if len(kept) == 0 {
		t.Fatal("keep: no append acknowledged")
	}
}
