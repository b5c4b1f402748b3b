package commitlog

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
	"github.com/ferry-iot/ferry/broker/testkit"
)

// fill appends n records of about size bytes (timestamps from the clock).
func fill(t *testing.T, p *Partition, n, size int) {
	t.Helper()
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	for i := 0; i < n; i++ {
		mustAppend(t, p, Record{Key: []byte("k"), Value: payload})
	}
}

func TestRetentionByAgeUsesLogTime(t *testing.T) {
	clock := testkit.NewClock(clockStart)
	mem := vfs.NewMem()
	l := openTestLog(t, mem, WithClock(clock))
	defer l.Close()
	p, _ := mustTopic(t, l, "t", TopicConfig{SegmentBytes: 4096, Retention: time.Hour}).Partition(0)
	fill(t, p, 100, 100) // several segments, written "now"

	// NTP steps the wall clock two years forward: the records look ancient
	// by their timestamps, but the log's own clock says minutes passed.
	clock.JumpWall(2 * 365 * 24 * time.Hour)
	clock.Advance(5 * time.Minute)
	if rep := l.EnforceRetention(); rep.Expired != 0 {
		t.Fatalf("wall-clock jump expired %d segments of 5-minute-old data", rep.Expired)
	}
	if p.StartOffset() != 0 {
		t.Fatalf("start offset %d", p.StartOffset())
	}
	// An hour of real time later they expire, sealed and active alike.
	clock.Advance(time.Hour)
	segs := p.Segments()
	rep := l.EnforceRetention()
	if rep.Expired != segs {
		t.Fatalf("expired %d of %d segments", rep.Expired, segs)
	}
	if p.StartOffset() != 100 || p.HighWatermark() != 100 || p.Size() != 0 {
		t.Fatalf("after expiry: start %d hwm %d size %d", p.StartOffset(), p.HighWatermark(), p.Size())
	}
	if st := p.topic.Stats(); st.ExpiredRecords != 100 || st.DroppedRecords != 0 {
		t.Fatalf("stats %+v", st)
	}
	if off := mustAppend(t, p, rec("k", "new", 0)); off != 100 {
		t.Fatalf("offset after expiry %d", off)
	}
}

func TestRetentionByAgeSurvivesRestartWithoutRTC(t *testing.T) {
	clock := testkit.NewClock(clockStart)
	mem := vfs.NewMem()
	l := openTestLog(t, mem, WithClock(clock))
	p, _ := mustTopic(t, l, "t", TopicConfig{SegmentBytes: 4096, Retention: time.Hour}).Partition(0)
	fill(t, p, 100, 100)
	clock.Advance(40 * time.Minute)
	l.Close()
	// Reboot: the monotonic clock restarts at zero and the wall clock is
	// wrong (no RTC), then NTP fixes it years later.
	clock2 := testkit.NewClock(clockStart)
	clock2.JumpWall(3 * 365 * 24 * time.Hour)
	l = openTestLog(t, mem, WithClock(clock2))
	defer l.Close()
	tp, _ := l.Topic("t")
	p, _ = tp.Partition(0)
	clock2.Advance(10 * time.Minute) // 50 minutes of log time in all
	if rep := l.EnforceRetention(); rep.Expired != 0 {
		t.Fatalf("expired %d segments after 50 minutes of log time", rep.Expired)
	}
	clock2.Advance(15 * time.Minute)
	if rep := l.EnforceRetention(); rep.Expired == 0 {
		t.Fatal("nothing expired after 65 minutes of log time")
	}
}

func TestRetentionBytesOverwriteOldest(t *testing.T) {
	l := openTestLog(t, vfs.NewMem())
	defer l.Close()
	tp := mustTopic(t, l, "t", TopicConfig{RetentionBytes: 64 << 10})
	p, _ := tp.Partition(0)
	fill(t, p, 1000, 200) // ~220 KB
	rep := l.EnforceRetention()
	if rep.Dropped == 0 || p.Size() > 64<<10 {
		t.Fatalf("size %d after retention (dropped %d segments)", p.Size(), rep.Dropped)
	}
	st := tp.Stats()
	if st.DroppedRecords == 0 || st.DroppedRecords != p.StartOffset() {
		t.Fatalf("dropped %d records, start offset %d", st.DroppedRecords, p.StartOffset())
	}
	got := readAll(t, p)
	if int64(len(got)) != 1000-p.StartOffset() || got[len(got)-1].Offset != 999 {
		t.Fatalf("kept %d records ending at %d", len(got), got[len(got)-1].Offset)
	}
}

func TestRetentionBytesRejectNew(t *testing.T) {
	l := openTestLog(t, vfs.NewMem())
	defer l.Close()
	tp := mustTopic(t, l, "t", TopicConfig{RetentionBytes: 32 << 10, OnFull: RejectNew})
	p, _ := tp.Partition(0)
	payload := make([]byte, 200)
	var accepted int
	var fullErr error
	for i := 0; i < 1000; i++ {
		_, err := p.Append(context.Background(), []Record{{Key: []byte("k"), Value: payload}}).Wait(context.Background())
		if err != nil {
			fullErr = err
			break
		}
		accepted++
	}
	var fe *FullError
	if !errors.As(fullErr, &fe) || !errors.Is(fullErr, ErrLogFull) || fe.Reason != "retention_bytes" {
		t.Fatalf("append past the limit: %v", fullErr)
	}
	if accepted == 0 || p.Size() > 32<<10 {
		t.Fatalf("accepted %d, size %d", accepted, p.Size())
	}
	l.EnforceRetention()
	if p.StartOffset() != 0 || len(readAll(t, p)) != accepted {
		t.Fatal("reject_new retention deleted data")
	}
	if tp.Stats().Rejected == 0 {
		t.Fatal("rejection not counted")
	}
}

// TestDiskFloor fills a small filesystem: the overwrite topic loses its
// oldest segments, the reject topic refuses appends, until space frees.
func TestDiskFloor(t *testing.T) {
	mem := vfs.NewMem()
	mem.SetCapacity(1 << 20)
	l := openTestLog(t, mem, WithMinFreeRatio(0.25))
	defer l.Close()
	over := mustTopic(t, l, "over", TopicConfig{SegmentBytes: 32 << 10})
	rej := mustTopic(t, l, "rej", TopicConfig{SegmentBytes: 32 << 10, OnFull: RejectNew})
	po, _ := over.Partition(0)
	pr, _ := rej.Partition(0)
	fill(t, pr, 500, 200) // 100 KB kept forever by reject_new
	payload := make([]byte, 500)
	for i := 0; i < 3000; i++ { // ~1.5 MB into a 1 MB disk
		_, err := po.Append(context.Background(), []Record{{Key: []byte("k"), Value: payload}}).Wait(context.Background())
		if err != nil {
			t.Fatalf("overwrite_oldest append %d failed: %v", i, err)
		}
		if i%100 == 0 {
			l.EnforceRetention()
		}
	}
	l.EnforceRetention()
	du, _ := mem.DiskUsage("/")
	if du.FreeRatio() < 0.25 {
		t.Fatalf("free ratio %.2f below the floor", du.FreeRatio())
	}
	if over.Stats().DroppedRecords == 0 || po.StartOffset() == 0 {
		t.Fatal("overwrite topic dropped nothing")
	}
	if pr.StartOffset() != 0 || len(readAll(t, pr)) != 500 {
		t.Fatal("reject_new topic lost data to the disk floor")
	}
	if po.HighWatermark() != 3000 {
		t.Fatalf("overwrite hwm %d", po.HighWatermark())
	}

	// Now fill to the floor with the reject topic alone.
	var fullErr error
	for i := 0; i < 10000 && fullErr == nil; i++ {
		_, fullErr = pr.Append(context.Background(), []Record{{Key: []byte("k"), Value: payload}}).Wait(context.Background())
		if i%50 == 0 {
			l.EnforceRetention()
		}
	}
	var fe *FullError
	if !errors.As(fullErr, &fe) || fe.Reason != "disk_free" {
		t.Fatalf("reject topic at the floor: %v", fullErr)
	}
	// Deleting the other topic frees space; appends resume.
	if err := l.DeleteTopic("over"); err != nil {
		t.Fatal(err)
	}
	l.EnforceRetention()
	if _, err := pr.Append(context.Background(), []Record{{Key: []byte("k"), Value: payload}}).Wait(context.Background()); err != nil {
		t.Fatalf("append after space freed: %v", err)
	}
}

func TestRetentionHoldsAndForcedDrops(t *testing.T) {
	clock := testkit.NewClock(clockStart)
	l := openTestLog(t, vfs.NewMem(), WithClock(clock))
	defer l.Close()
	tp := mustTopic(t, l, "t", TopicConfig{SegmentBytes: 4096, Retention: time.Hour, RetentionBytes: 32 << 10})
	p, _ := tp.Partition(0)
	fill(t, p, 100, 100)
	p.SetHold("bridge", 10)
	clock.Advance(2 * time.Hour)
	l.EnforceRetention()
	if p.StartOffset() > 10 {
		t.Fatalf("age retention deleted held offsets: start %d", p.StartOffset())
	}
	fill(t, p, 400, 100) // past retention_bytes: forced
	l.EnforceRetention()
	if p.StartOffset() <= 10 {
		t.Fatal("size limit did not force deletion")
	}
	if st := tp.Stats(); st.DroppedUnreplicated == 0 {
		t.Fatalf("dropped unreplicated records not counted: %+v", st)
	}
	p.ReleaseHold("bridge")
}

func TestCompaction(t *testing.T) {
	clock := testkit.NewClock(clockStart)
	mem := vfs.NewMem()
	l := openTestLog(t, mem, WithClock(clock))
	tp := mustTopic(t, l, "state", TopicConfig{Cleanup: CleanupCompact, SegmentBytes: 4096,
		DeleteRetention: time.Hour, Compression: CompressionZstd})
	p, _ := tp.Partition(0)
	latest := map[string]int64{}
	for i := 0; i < 400; i++ {
		k := fmt.Sprintf("device-%d", i%10)
		off := mustAppend(t, p, rec(k, fmt.Sprintf(`{"seq":%d}`, i), 0))
		latest[k] = off
	}
	// A tombstone for device-3, then more traffic so it lands in a sealed segment.
	tomb := mustAppend(t, p, Record{Key: []byte("device-3")})
	delete(latest, "device-3")
	for i := 0; i < 100; i++ {
		mustAppend(t, p, rec("other", fmt.Sprintf("filler-%d", i), 0))
	}
	if _, err := p.Append(context.Background(), []Record{{Value: []byte("no key")}}).Wait(context.Background()); !errors.Is(err, ErrNullKey) {
		t.Fatalf("null key on a compacted topic: %v", err)
	}
	hwm := p.HighWatermark()
	before := p.Size()
	if removed := l.Compact(); removed == 0 || p.Size() >= before {
		t.Fatalf("compaction removed %d bytes (size %d -> %d)", removed, before, p.Size())
	}
	check := func(wantTomb bool) {
		t.Helper()
		seen := map[string]int64{}
		var last int64 = -1
		sawTomb := false
		for _, r := range readAll(t, p) {
			if r.Offset <= last {
				t.Fatalf("offsets not increasing: %d after %d", r.Offset, last)
			}
			last = r.Offset
			if r.Offset == tomb {
				sawTomb = true
				continue
			}
			seen[string(r.Key)] = r.Offset
		}
		for k, off := range latest {
			if seen[k] != off {
				t.Fatalf("key %s: newest offset %d, read %d", k, off, seen[k])
			}
		}
		if sawTomb != wantTomb {
			t.Fatalf("tombstone present=%v, want %v", sawTomb, wantTomb)
		}
		if p.HighWatermark() != hwm {
			t.Fatalf("hwm changed to %d", p.HighWatermark())
		}
	}
	check(true)
	// Past delete_retention the tombstone goes too.
	clock.Advance(2 * time.Hour)
	l.Compact()
	check(false)
	// Compacted segments survive a restart, and offsets resume.
	l.Close()
	l = openTestLog(t, mem, WithClock(clock))
	defer l.Close()
	tp, _ = l.Topic("state")
	p, _ = tp.Partition(0)
	if rep := p.Recovery(); len(rep.IndexRebuilt) != 0 || len(rep.Damaged) != 0 {
		t.Fatalf("compacted segments did not reopen cleanly: %+v", rep)
	}
	check(false)
	if off := mustAppend(t, p, rec("device-1", "x", 0)); off != hwm {
		t.Fatalf("offset after compaction and reopen %d, want %d", off, hwm)
	}
}

// TestCompactionRespectsHolds: records at or above a retention hold (a
// bridge has not replicated them) are not compacted away; once the hold
// moves past them, they are.
func TestCompactionRespectsHolds(t *testing.T) {
	l := openTestLog(t, vfs.NewMem())
	defer l.Close()
	tp := mustTopic(t, l, "held", TopicConfig{Cleanup: CleanupCompact, SegmentBytes: 4096})
	p, _ := tp.Partition(0)
	for i := 0; i < 400; i++ {
		mustAppend(t, p, rec(fmt.Sprintf("k%d", i%5), fmt.Sprintf("value-%04d", i), 0))
	}
	p.SetHold("bridge", 0)
	if removed := l.Compact(); removed != 0 {
		t.Fatalf("compaction removed %d bytes below a hold at 0", removed)
	}
	if n := len(readAll(t, p)); n != 400 {
		t.Fatalf("%d records left, want all 400", n)
	}
	p.SetHold("bridge", 200)
	if removed := l.Compact(); removed == 0 {
		t.Fatal("nothing compacted below the hold")
	}
	var above int
	for _, r := range readAll(t, p) {
		if r.Offset >= 200 {
			above++
		}
	}
	if above != 200 {
		t.Fatalf("%d records at or above the hold survive, want 200", above)
	}
}

// TestRetentionPausedUntilResume: a log opened WithRetentionPaused runs no
// housekeeping pass, however long its retention interval has passed, until
// ResumeRetention; then the pending passes run. In a synctest bubble the
// interval's ticker is virtual, so "it would have run" is exact.
func TestRetentionPausedUntilResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clock := testkit.NewClock(clockStart)
		l := openTestLog(t, vfs.NewMem(), WithClock(clock), WithRetentionInterval(time.Millisecond), WithRetentionPaused())
		defer l.Close()
		p, _ := mustTopic(t, l, "t", TopicConfig{SegmentBytes: 4096, Retention: time.Hour}).Partition(0)
		fill(t, p, 100, 100)
		clock.Advance(2 * time.Hour) // every segment is past retention
		time.Sleep(time.Hour)        // thousands of retention intervals
		synctest.Wait()
		if p.StartOffset() != 0 {
			t.Fatalf("a paused log's housekeeping deleted up to offset %d", p.StartOffset())
		}
		p.SetHold("bridge.test", 40) // what the owner installs while paused
		l.ResumeRetention()
		l.ResumeRetention() // again: nothing
		time.Sleep(time.Second)
		synctest.Wait()
		if start := p.StartOffset(); start == 0 || start > 40 {
			t.Fatalf("after resume the start offset is %d, want expired segments below the hold at 40 deleted", start)
		}
	})
}

// TestRetentionNotPausedByDefault: without the option housekeeping runs
// from Open on.
func TestRetentionNotPausedByDefault(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clock := testkit.NewClock(clockStart)
		l := openTestLog(t, vfs.NewMem(), WithClock(clock), WithRetentionInterval(time.Millisecond))
		defer l.Close()
		p, _ := mustTopic(t, l, "t", TopicConfig{SegmentBytes: 4096, Retention: time.Hour}).Partition(0)
		fill(t, p, 100, 100)
		clock.Advance(2 * time.Hour)
		time.Sleep(time.Second)
		synctest.Wait()
		if p.StartOffset() != 100 {
			t.Fatalf("start offset %d: housekeeping did not expire the data", p.StartOffset())
		}
	})
}

// TestRetentionByPolicy: as in Kafka, cleanup_policy=compact alone deletes
// nothing by age or retention_bytes (nor refuses appends by size), while
// compact,delete compacts and deletes by both.
func TestRetentionByPolicy(t *testing.T) {
	clock := testkit.NewClock(clockStart)
	l := openTestLog(t, vfs.NewMem(), WithClock(clock))
	defer l.Close()
	base := TopicConfig{SegmentBytes: 4096, Retention: time.Hour, RetentionBytes: 16 << 10}
	cfgC, cfgCD, cfgR := base, base, base
	cfgC.Cleanup, cfgCD.Cleanup, cfgR.Cleanup = CleanupCompact, CleanupCompactDelete, CleanupCompact
	cfgR.OnFull = RejectNew
	c, _ := mustTopic(t, l, "c", cfgC).Partition(0)
	cd, _ := mustTopic(t, l, "cd", cfgCD).Partition(0)
	r, _ := mustTopic(t, l, "r", cfgR).Partition(0)
	payload := make([]byte, 200)
	for i := 0; i < 300; i++ { // about 80 KB each, every key distinct
		for _, p := range []*Partition{c, cd, r} {
			mustAppend(t, p, Record{Key: []byte(fmt.Sprintf("key-%d", i)), Value: payload})
		}
	}
	l.EnforceRetention()
	if c.StartOffset() != 0 || r.StartOffset() != 0 {
		t.Fatalf("retention_bytes deleted from compact-only topics: starts %d, %d", c.StartOffset(), r.StartOffset())
	}
	if cd.StartOffset() == 0 || cd.Size() > 16<<10+4096 {
		t.Fatalf("compact,delete kept %d bytes from offset %d, cap 16 KiB", cd.Size(), cd.StartOffset())
	}
	clock.Advance(2 * time.Hour)
	l.EnforceRetention()
	if c.StartOffset() != 0 || len(readAll(t, c)) != 300 {
		t.Fatal("age retention deleted from a compact-only topic")
	}
	if cd.Segments() != 1 {
		t.Fatalf("compact,delete kept %d segments past retention", cd.Segments())
	}
}

// TestDiskFloorReachesCompactedTopics fills a small disk with a delete
// topic and a compacted (overwrite_oldest) one: the floor takes from the
// delete topic first and, once it has nothing left, from the compacted
// topic, so the device never fills up.
func TestDiskFloorReachesCompactedTopics(t *testing.T) {
	mem := vfs.NewMem()
	mem.SetCapacity(1 << 20)
	l := openTestLog(t, mem, WithMinFreeRatio(0.25))
	defer l.Close()
	tele, _ := mustTopic(t, l, "tele", TopicConfig{SegmentBytes: 32 << 10}).Partition(0)
	st := mustTopic(t, l, "state", TopicConfig{SegmentBytes: 32 << 10, Cleanup: CleanupCompact})
	state, _ := st.Partition(0)
	payload := make([]byte, 500)
	for i := 0; i < 400; i++ { // 200 KB of telemetry
		mustAppend(t, tele, Record{Key: []byte("k"), Value: payload})
	}
	firstDrop := true
	for i := 0; i < 3000; i++ { // 1.5 MB of distinct keys into a 1 MB disk
		_, err := state.Append(context.Background(), []Record{{Key: []byte(fmt.Sprintf("dev-%d", i)), Value: payload}}).Wait(context.Background())
		if err != nil {
			t.Fatalf("compacted append %d: %v", i, err)
		}
		if i%50 == 0 {
			l.EnforceRetention()
			if st.Stats().DroppedRecords > 0 && firstDrop {
				firstDrop = false
				if tele.Segments() != 1 || tele.Size() != 0 {
					t.Fatalf("the floor dropped compacted data while the delete topic still held %d bytes in %d segments", tele.Size(), tele.Segments())
				}
			}
		}
	}
	l.EnforceRetention()
	if du, _ := mem.DiskUsage("/"); du.FreeRatio() < 0.25 {
		t.Fatalf("free ratio %.2f below the floor", du.FreeRatio())
	}
	if st.Stats().DroppedRecords == 0 || state.StartOffset() == 0 {
		t.Fatal("the floor never reached the compacted topic")
	}
	if state.HighWatermark() != 3000 {
		t.Fatalf("compacted hwm %d", state.HighWatermark())
	}
}

// TestRetentionIgnoresFutureTimestamps: one device-supplied timestamp in
// the year 2100 does not keep its segment until 2100, and data written
// while the wall clock ran three years ahead expires after the clock is
// corrected: timestamps from the future do not count, the log's clock
// decides.
func TestRetentionIgnoresFutureTimestamps(t *testing.T) {
	clock := testkit.NewClock(clockStart)
	l := openTestLog(t, vfs.NewMem(), WithClock(clock))
	defer l.Close()
	p, _ := mustTopic(t, l, "t", TopicConfig{SegmentBytes: 4096, Retention: time.Hour}).Partition(0)
	y2100 := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	mustAppend(t, p, rec("k", "from a device with a broken clock", y2100))
	fill(t, p, 60, 100) // timestamps: the (right) wall clock
	clock.JumpWall(3 * 365 * 24 * time.Hour)
	fill(t, p, 60, 100)                       // written while the wall clock ran three years ahead
	clock.JumpWall(-3 * 365 * 24 * time.Hour) // NTP corrects it

	clock.Advance(30 * time.Minute)
	if rep := l.EnforceRetention(); rep.Expired != 0 {
		t.Fatalf("expired %d segments of 30-minute-old data", rep.Expired)
	}
	// Within the tolerance a timestamp ahead still counts: skew, not years.
	s := &segment{}
	s.maxTs.Store(-1)
	if !expired(s, TopicConfig{Retention: time.Hour}, 0, 2*time.Hour.Milliseconds()) {
		t.Fatal("a segment with no timestamps and 2 h of log age did not expire")
	}
	s.maxTs.Store(30 * time.Minute.Milliseconds()) // 30 min ahead of wall time 0
	if expired(s, TopicConfig{Retention: time.Hour}, 0, 2*time.Hour.Milliseconds()) {
		t.Fatal("a timestamp 30 minutes ahead (skew) did not keep its segment")
	}

	clock.Advance(time.Hour)
	segs := p.Segments()
	if rep := l.EnforceRetention(); rep.Expired != segs {
		t.Fatalf("expired %d of %d segments after 90 minutes of log time: future timestamps pinned them", rep.Expired, segs)
	}
	if p.StartOffset() != 121 {
		t.Fatalf("start offset %d, want 121 (everything expired)", p.StartOffset())
	}
}
