package commitlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

const testDir = "/data/log"

func TestCleanReopenScansNothing(t *testing.T) {
	mem := vfs.NewMem()
	l := openTestLog(t, mem)
	p, _ := mustTopic(t, l, "t", TopicConfig{SegmentBytes: 8192}).Partition(0)
	for i := 0; i < 500; i++ {
		mustAppend(t, p, rec("k", value(i), int64(1000+i)))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openTestLog(t, mem)
	defer l.Close()
	rep := l.Recovery()
	if len(rep) != 1 || !rep[0].Clean || rep[0].ScannedBytes != 0 || len(rep[0].IndexRebuilt) != 0 {
		t.Fatalf("clean reopen report: %+v", rep)
	}
	tp, _ := l.Topic("t")
	p, _ = tp.Partition(0)
	if p.HighWatermark() != 500 {
		t.Fatalf("hwm %d", p.HighWatermark())
	}
	got := readAll(t, p)
	for i, r := range got {
		if r.Offset != int64(i) || string(r.Value) != value(i) {
			t.Fatalf("offset %d: %+v", i, r)
		}
	}
	if off := mustAppend(t, p, rec("k", "after", 0)); off != 500 {
		t.Fatalf("append after reopen got offset %d", off)
	}
	// Time lookups work across reopened sealed segments.
	if off, _, ok, err := p.OffsetForTime(1250); err != nil || !ok || off != 250 {
		t.Fatalf("OffsetForTime after reopen: %d %v %v", off, ok, err)
	}
}

// TestUncleanReopenTruncatesTornTail crashes a log with unsynced data many
// times, tearing the tail differently each time (a prefix of the unsynced
// bytes survives, or zeros do). Recovery must cut exactly at the end of the
// last whole batch that survived and report the bytes it cut and why.
func TestUncleanReopenTruncatesTornTail(t *testing.T) {
	segFile := filepath.Join(testDir, "t", "0", segmentName(0, suffixLog))
	kinds := map[string]int{}
	for seed := uint64(0); seed < 40; seed++ {
		mem := vfs.NewMem()
		l := openTestLog(t, mem)
		p, _ := mustTopic(t, l, "t", TopicConfig{Flush: FlushNever}).Partition(0)
		var ends []int64 // where each one-record batch ends
		for i := 0; i < 100; i++ {
			mustAppend(t, p, rec("k", value(i), 0))
			ends = append(ends, p.Size())
		}
		// Make the first 100 durable, then write 50 more without a sync.
		p.log.commit.do(p.log.commit.syncUnsynced)
		for i := 100; i < 150; i++ {
			mustAppend(t, p, rec("k", value(i), 0))
			ends = append(ends, p.Size())
		}
		written, err := vfs.ReadFile(mem, segFile)
		if err != nil {
			t.Fatal(err)
		}
		crashed := mem.CrashClone(vfs.CrashOptions{Rand: rand.New(rand.NewPCG(seed, 1))})
		l.Close()
		torn, err := vfs.ReadFile(crashed, segFile)
		if err != nil {
			t.Fatal(err)
		}
		// The cut belongs after the last batch whose bytes all survived.
		wantValid, wantRecs := int64(0), 0
		for i, end := range ends {
			if end <= int64(len(torn)) && bytes.Equal(torn[:end], written[:end]) {
				wantValid, wantRecs = end, i+1
			}
		}
		if wantRecs < 100 {
			t.Fatalf("seed %d: the crash lost synced data (%d whole batches)", seed, wantRecs)
		}
		wantCut := int64(len(torn)) - wantValid
		var wantReason string
		switch rest := torn[wantValid:]; {
		case wantCut == 0:
			kinds["no cut"]++
		case len(rest) < BatchHeaderSize:
			wantReason = fmt.Sprintf("partial batch header at %d", wantValid)
			kinds["partial header"]++
		case bytes.Equal(rest[:BatchHeaderSize], written[wantValid:wantValid+BatchHeaderSize]):
			wantReason = fmt.Sprintf("partial batch at %d", wantValid)
			kinds["partial batch"]++
		default: // zeros where the next batch was
			wantReason = fmt.Sprintf("at %d: commitlog: corrupt record batch: length 0 below the header size", wantValid)
			kinds["zeros"]++
		}

		l2 := openTestLog(t, crashed)
		tp, _ := l2.Topic("t")
		p2, _ := tp.Partition(0)
		rep := p2.Recovery()
		after, err := vfs.ReadFile(crashed, segFile)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Clean || rep.TruncatedBytes != wantCut || int64(len(after)) != wantValid ||
			rep.TruncatedBytes != int64(len(torn)-len(after)) {
			t.Fatalf("seed %d: report %+v, file %d -> %d bytes; want %d bytes cut at %d", seed, rep, len(torn), len(after), wantCut, wantValid)
		}
		if (wantReason == "") != (rep.TruncateReason == "") || !strings.Contains(rep.TruncateReason, wantReason) {
			t.Fatalf("seed %d: truncate reason %q, want %q", seed, rep.TruncateReason, wantReason)
		}
		if rep.ScannedBytes != wantValid {
			t.Fatalf("seed %d: scanned %d bytes, %d were valid", seed, rep.ScannedBytes, wantValid)
		}
		got := readAll(t, p2)
		if len(got) != wantRecs {
			t.Fatalf("seed %d: %d records survive, %d batches were whole", seed, len(got), wantRecs)
		}
		for i, r := range got {
			if r.Offset != int64(i) || string(r.Value) != value(i) {
				t.Fatalf("seed %d: offset %d holds %+v", seed, i, r)
			}
		}
		if off := mustAppend(t, p2, rec("k", "next", 0)); off != int64(len(got)) {
			t.Fatalf("seed %d: append after recovery got %d, want %d", seed, off, len(got))
		}
		l2.Close()
	}
	// The seeds are fixed: make sure they keep covering every kind of tear.
	for _, k := range []string{"partial header", "partial batch", "zeros"} {
		if kinds[k] == 0 {
			t.Errorf("no seed tore the tail as %q: %v", k, kinds)
		}
	}
	t.Logf("tears: %v", kinds)
}

func TestStickyWriteAndSyncErrors(t *testing.T) {
	for _, op := range []vfs.Op{vfs.OpWrite, vfs.OpSync} {
		t.Run(op.String(), func(t *testing.T) {
			mem := vfs.NewMem()
			inj := &vfs.InjectAt{Index: -1}
			efs := vfs.NewErrorFS(mem, inj)
			l := openTestLog(t, efs)
			p, _ := mustTopic(t, l, "t", TopicConfig{}).Partition(0)
			mustAppend(t, p, rec("k", "ok", 0))
			// Fail the next operation of this kind on the segment.
			inj.Only = func(o vfs.Op) bool { return o == op }
			inj.Index = inj.Count()
			_, err := p.Append(context.Background(), []Record{rec("k", "fails", 0)}).Wait(context.Background())
			var se *StorageError
			if !errors.As(err, &se) || !errors.Is(err, vfs.ErrInjected) {
				t.Fatalf("append during %s fault: %v", op, err)
			}
			countBefore := inj.Count()
			_, err2 := p.Append(context.Background(), []Record{rec("k", "later", 0)}).Wait(context.Background())
			if !errors.As(err2, &se) {
				t.Fatalf("error not sticky: %v", err2)
			}
			if inj.Count() != countBefore {
				t.Fatalf("a later append touched the disk (%d more %s calls): fsync must not be retried", inj.Count()-countBefore, op)
			}
			if p.HighWatermark() != 1 {
				t.Fatalf("hwm moved to %d after a failed commit", p.HighWatermark())
			}
			if err := l.Close(); err == nil {
				t.Fatal("close of a failed partition reported no error")
			}
			l2 := openTestLog(t, mem)
			defer l2.Close()
			tp, _ := l2.Topic("t")
			p2, _ := tp.Partition(0)
			got := readAll(t, p2)
			if len(got) < 1 || string(got[0].Value) != "ok" {
				t.Fatalf("acknowledged record lost: %+v", got)
			}
			if p2.Recovery().Clean {
				t.Fatal("a partition closed after a storage error must reopen unclean")
			}
		})
	}
}

func TestMissingAndWrongIndexesAreRebuilt(t *testing.T) {
	mem := vfs.NewMem()
	l := openTestLog(t, mem)
	p, _ := mustTopic(t, l, "t", TopicConfig{SegmentBytes: 4096, IndexIntervalBytes: 128}).Partition(0)
	for i := 0; i < 200; i++ {
		mustAppend(t, p, rec("k", value(i), int64(i)))
	}
	segs := p.Segments()
	l.Close()
	dir := filepath.Join(testDir, "t", "0")
	names, _ := mem.ReadDir(dir)
	var idx []string
	for _, n := range names {
		if filepath.Ext(n) == ".index" {
			idx = append(idx, n)
		}
	}
	if len(idx) != segs {
		t.Fatalf("%d index files for %d segments", len(idx), segs)
	}
	// Remove the first sealed index; point the second's last entry elsewhere.
	if err := mem.Remove(filepath.Join(dir, idx[0])); err != nil {
		t.Fatal(err)
	}
	f, _ := mem.OpenFile(filepath.Join(dir, idx[1]), 2, 0)
	size, _ := f.Size()
	f.WriteAt([]byte{0, 0, 0, 1, 0, 0, 0, 3}, size-8)
	f.Close()
	l = openTestLog(t, mem)
	defer l.Close()
	tp, _ := l.Topic("t")
	p, _ = tp.Partition(0)
	rep := p.Recovery()
	if len(rep.IndexRebuilt) != 2 || len(rep.Damaged) != 0 {
		t.Fatalf("report %+v", rep)
	}
	for i, r := range readAll(t, p) {
		if r.Offset != int64(i) {
			t.Fatalf("offset %d: %d", i, r.Offset)
		}
	}
	for _, off := range []int64{5, 50, 120, 199} {
		recs, _, _, err := p.ReadRecords(off, 1)
		if err != nil || recs[0].Offset != off {
			t.Fatalf("lookup %d after rebuild: %v %v", off, recs, err)
		}
	}
}

// TestDamagedSealedSegmentIsSkipped flips bytes in the middle of a sealed
// segment: open must succeed, report it, and serve everything else.
func TestDamagedSealedSegmentIsSkipped(t *testing.T) {
	mem := vfs.NewMem()
	l := openTestLog(t, mem)
	p, _ := mustTopic(t, l, "t", TopicConfig{SegmentBytes: 4096}).Partition(0)
	for i := 0; i < 300; i++ {
		mustAppend(t, p, rec("k", value(i), int64(i)))
	}
	p.segMu.RLock()
	victim := p.segs[1]
	next := p.segs[2].base
	p.segMu.RUnlock()
	l.Close()
	// Corrupt a batch in the middle of the second segment and drop its
	// index, so the open-time check must rescan it.
	f, _ := mem.OpenFile(victim.path(suffixLog), 2, 0)
	size, _ := f.Size()
	f.WriteAt([]byte("garbage!"), size/2)
	f.Close()
	mem.Remove(victim.path(suffixIndex))

	l = openTestLog(t, mem)
	defer l.Close()
	tp, _ := l.Topic("t")
	p, _ = tp.Partition(0)
	rep := p.Recovery()
	if len(rep.Damaged) != 1 || rep.Damaged[0].Segment != victim.base || rep.Damaged[0].NextOffset != next {
		t.Fatalf("damage report %+v", rep.Damaged)
	}
	got := readAll(t, p)
	lostFrom := rep.Damaged[0].FirstOffset
	want := 300 - int(next-lostFrom)
	if len(got) != want {
		t.Fatalf("read %d records, want %d (all but offsets %d..%d)", len(got), want, lostFrom, next-1)
	}
	if off := mustAppend(t, p, rec("k", "still writable", 0)); off != 300 {
		t.Fatalf("append offset %d", off)
	}
}

// TestReadFindsDamageNotSeenAtOpen corrupts a sealed segment whose index
// still passes the open-time check; the reader must skip it at read time.
func TestReadFindsDamageNotSeenAtOpen(t *testing.T) {
	mem := vfs.NewMem()
	l := openTestLog(t, mem)
	p, _ := mustTopic(t, l, "t", TopicConfig{SegmentBytes: 4096}).Partition(0)
	for i := 0; i < 300; i++ {
		mustAppend(t, p, rec("k", value(i), int64(i)))
	}
	p.segMu.RLock()
	victim := p.segs[0]
	p.segMu.RUnlock()
	l.Close()
	f, _ := mem.OpenFile(victim.path(suffixLog), 2, 0)
	f.WriteAt([]byte{0xff}, 200) // inside the first batches' records: CRC fails
	f.Close()
	l = openTestLog(t, mem)
	defer l.Close()
	tp, _ := l.Topic("t")
	p, _ = tp.Partition(0)
	got := readAll(t, p)
	if len(got) == 0 || got[len(got)-1].Offset != 299 {
		t.Fatalf("reader did not get past the damage: %d records", len(got))
	}
	if d := p.Recovery().Damaged; len(d) != 1 || d[0].Segment != victim.base {
		t.Fatalf("damage not reported: %+v", d)
	}
}
