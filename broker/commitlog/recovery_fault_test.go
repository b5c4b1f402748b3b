package commitlog

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

// twoTopicLog writes n records to topic t (several segments) and 50 to
// topic other, closes cleanly and returns t's segment bases.
func twoTopicLog(t *testing.T, mem *vfs.Mem, n int) []int64 {
	t.Helper()
	l := openTestLog(t, mem)
	p, _ := mustTopic(t, l, "t", TopicConfig{SegmentBytes: 4096, IndexIntervalBytes: 128}).Partition(0)
	o, _ := mustTopic(t, l, "other", TopicConfig{}).Partition(0)
	for i := 0; i < n; i++ {
		mustAppend(t, p, rec("k", value(i), 1_000_000+int64(i)*10))
	}
	for i := 0; i < 50; i++ {
		mustAppend(t, o, rec("k", value(i), 0))
	}
	bases := segmentBases(t, p, 4)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return bases
}

func partitionOf(t *testing.T, l *Log, name string) *Partition {
	t.Helper()
	tp, err := l.Topic(name)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tp.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// checkServesAllBut reads p and expects every offset below n except those
// in [lostFrom, lostTo), and the other topic whole.
func checkServesAllBut(t *testing.T, l *Log, n int, lostFrom, lostTo int64) {
	t.Helper()
	p := partitionOf(t, l, "t")
	var want []int64
	for off := int64(0); off < int64(n); off++ {
		if off < lostFrom || off >= lostTo {
			want = append(want, off)
		}
	}
	var got []int64
	for _, r := range readAll(t, p) {
		if string(r.Value) != value(int(r.Offset)) {
			t.Fatalf("offset %d holds %q", r.Offset, r.Value)
		}
		got = append(got, r.Offset)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("read offsets %v\nwant %v", got, want)
	}
	if o := readAll(t, partitionOf(t, l, "other")); len(o) != 50 {
		t.Fatalf("the other topic serves %d of 50 records", len(o))
	}
	if off := mustAppend(t, p, rec("k", "after", 0)); off != int64(n) {
		t.Fatalf("append after recovery at %d, want %d", off, n)
	}
}

// TestUnreadableSealedSegmentIsSkipped fails opening, or sizing, one sealed
// segment during recovery: the log must open, report the segment as
// damaged and counted, and serve everything else.
func TestUnreadableSealedSegmentIsSkipped(t *testing.T) {
	const n = 300
	for _, op := range []vfs.Op{vfs.OpOpen, vfs.OpSize} {
		t.Run(op.String(), func(t *testing.T) {
			mem := vfs.NewMem()
			bases := twoTopicLog(t, mem, n)
			victim := segPath(bases[1], suffixLog)
			efs := vfs.NewErrorFS(mem, vfs.InjectFunc(func(o vfs.Op, name string) error {
				if o == op && name == victim {
					return vfs.ErrInjected
				}
				return nil
			}))
			l, err := Open(testDir, WithFS(efs), WithLogger(quietLogger()))
			if err != nil {
				t.Fatalf("open with an unreadable sealed segment: %v", err)
			}
			defer l.Close()
			p := partitionOf(t, l, "t")
			rep := p.Recovery()
			if len(rep.Damaged) != 1 {
				t.Fatalf("damage %+v", rep.Damaged)
			}
			d := rep.Damaged[0]
			if d.Segment != bases[1] || d.FirstOffset != bases[1] || d.NextOffset != bases[2] || d.Position != 0 ||
				!strings.Contains(d.Reason, vfs.ErrInjected.Error()) {
				t.Fatalf("damage %+v, want segment %d offsets %d..%d", d, bases[1], bases[1], bases[2]-1)
			}
			if size, _ := mem.Stat(victim); d.LostBytes != size.Size() {
				t.Fatalf("lost bytes %d, the file holds %d", d.LostBytes, size.Size())
			}
			if st := l.Stats(); st.DamagedSegments != 1 {
				t.Fatalf("damage not counted: %+v", st)
			}
			// A time inside the lost segment finds the first readable record after it.
			lostTs := 1_000_000 + (bases[1]+1)*10
			if off, _, ok, err := p.OffsetForTime(lostTs); err != nil || !ok || off != bases[2] {
				t.Fatalf("OffsetForTime(%d) = %d %v %v, want %d", lostTs, off, ok, err, bases[2])
			}
			if off, _, ok, err := p.OffsetForTime(1_000_000 + 10*10); err != nil || !ok || off != 10 {
				t.Fatalf("OffsetForTime before the damage = %d %v %v", off, ok, err)
			}
			checkServesAllBut(t, l, n, bases[1], bases[2])
		})
	}
}

// TestIndexRewriteFailureKeepsServing makes a sealed segment's index need a
// rebuild at open and fails writing it: the log must open, serve the
// segment from the rebuilt entries in memory, report and count it, and
// write the index on the next open.
func TestIndexRewriteFailureKeepsServing(t *testing.T) {
	const n = 300
	mem := vfs.NewMem()
	bases := twoTopicLog(t, mem, n)
	if err := mem.Remove(segPath(bases[1], suffixIndex)); err != nil {
		t.Fatal(err)
	}
	var failed atomic.Int64
	efs := vfs.NewErrorFS(mem, vfs.InjectFunc(func(o vfs.Op, name string) error {
		if o == vfs.OpOpen && strings.HasPrefix(name, segPath(bases[1], suffixIndex)) && strings.HasSuffix(name, ".tmp") {
			failed.Add(1)
			return vfs.ErrInjected
		}
		return nil
	}))
	l, err := Open(testDir, WithFS(efs), WithLogger(quietLogger()))
	if err != nil {
		t.Fatalf("open when a rebuilt index cannot be written: %v", err)
	}
	p := partitionOf(t, l, "t")
	rep := p.Recovery()
	if failed.Load() == 0 || fmt.Sprint(rep.IndexRebuilt) != fmt.Sprint([]int64{bases[1]}) ||
		fmt.Sprint(rep.IndexUnwritten) != fmt.Sprint([]int64{bases[1]}) || len(rep.Damaged) != 0 {
		t.Fatalf("report %+v (index writes failed %d times)", rep, failed.Load())
	}
	if st := l.Stats(); st.IndexWriteErrors != 1 || st.IndexRebuilds != 1 {
		t.Fatalf("stats %+v", st)
	}
	checkEveryOffset(t, p, n)
	checkServesAllBut(t, l, n, -1, -1)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l = openTestLog(t, mem)
	defer l.Close()
	p = partitionOf(t, l, "t")
	if rep := p.Recovery(); fmt.Sprint(rep.IndexRebuilt) != fmt.Sprint([]int64{bases[1]}) || len(rep.IndexUnwritten) != 0 {
		t.Fatalf("the next open did not rebuild and write the index: %+v", rep)
	}
	if ok, _ := vfs.Exists(mem, segPath(bases[1], suffixIndex)); !ok {
		t.Fatal("index file not written on the next open")
	}
	checkEveryOffset(t, p, n)
}

// TestOffsetForTimeSkipsDamage corrupts, in a sealed segment whose index
// passes the open check, the batch holding the record a time lookup
// wants: once in its records (CRC) and once in its header (framing). The
// lookup must report the damage and answer with the next readable record.
func TestOffsetForTimeSkipsDamage(t *testing.T) {
	const n = 300
	for _, c := range []struct {
		name string
		at   int64 // offset within the batch's bytes
		b    byte
	}{{"records", BatchHeaderSize + 2, 0xff}, {"header", offMagic, 9}} {
		t.Run(c.name, func(t *testing.T) {
			mem := vfs.NewMem()
			bases := twoTopicLog(t, mem, n)
			l := openTestLog(t, mem)
			p := partitionOf(t, l, "t")
			target := bases[1] + (bases[2]-bases[1])/2 // a record in the middle of segment 1
			sl, err := p.Read(target, 1)
			if err != nil {
				t.Fatal(err)
			}
			pos := sl.Pos
			sl.Release()
			l.Close()
			patchFile(t, mem, segPath(bases[1], suffixLog), pos+c.at, []byte{c.b})

			l = openTestLog(t, mem)
			defer l.Close()
			p = partitionOf(t, l, "t")
			ts := 1_000_000 + target*10
			off, _, ok, err := p.OffsetForTime(ts)
			// The damaged batch alone is passed over (its framing holds, or
			// the next valid batch is found): the answer is the next record.
			if err != nil || !ok || off != target+1 {
				t.Fatalf("OffsetForTime(%d) over damage = %d %v %v, want %d", ts, off, ok, err, target+1)
			}
			rep := p.Recovery()
			if len(rep.Damaged) != 1 || rep.Damaged[0].Segment != bases[1] || rep.Damaged[0].Position != pos ||
				rep.Damaged[0].FirstOffset != target || rep.Damaged[0].NextOffset != target+1 {
				t.Fatalf("damage %+v, want segment %d at %d (offset %d alone)", rep.Damaged, bases[1], pos, target)
			}
			// Before the damage, lookups stay exact.
			if off, _, ok, err := p.OffsetForTime(1_000_000 + (target-1)*10); err != nil || !ok || off != target-1 {
				t.Fatalf("OffsetForTime before the damage = %d %v %v, want %d", off, ok, err, target-1)
			}
			checkServesAllBut(t, l, n, target, target+1)
		})
	}
}

// TestReadErrorsOnSealedSegmentAreDamage fails every read of one sealed
// segment after open: readers report it and go on to the next segment.
func TestReadErrorsOnSealedSegmentAreDamage(t *testing.T) {
	const n = 300
	mem := vfs.NewMem()
	bases := twoTopicLog(t, mem, n)
	victim := segPath(bases[1], suffixLog)
	var on atomic.Bool
	efs := vfs.NewErrorFS(mem, vfs.InjectFunc(func(o vfs.Op, name string) error {
		if on.Load() && o == vfs.OpRead && name == victim {
			return vfs.ErrInjected
		}
		return nil
	}))
	l, err := Open(testDir, WithFS(efs), WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	on.Store(true)
	p := partitionOf(t, l, "t")
	if _, err := p.Read(bases[1]+3, 100); err != nil {
		t.Fatalf("read of an unreadable sealed segment: %v", err)
	}
	checkServesAllBut(t, l, n, bases[1], bases[2])
	d := p.Recovery().Damaged
	if len(d) == 0 {
		t.Fatal("no damage reported")
	}
	for _, d := range d {
		if d.Segment != bases[1] || d.NextOffset != bases[2] || !strings.Contains(d.Reason, vfs.ErrInjected.Error()) {
			t.Fatalf("damage %+v", d)
		}
	}
	if st := l.Stats(); st.DamagedSegments != int64(len(d)) {
		t.Fatalf("%d damage reports, %d counted", len(d), st.DamagedSegments)
	}
}
