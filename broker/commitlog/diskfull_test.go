package commitlog

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
	"github.com/ferry-iot/ferry/broker/testkit"
)

// fillDisk writes a file that leaves about room bytes of mem's capacity
// free, as another process filling the disk would; it returns its name.
func fillDisk(t *testing.T, mem *vfs.Mem, room int64) string {
	t.Helper()
	du, _ := mem.DiskUsage("/")
	name := "/filler"
	f, err := mem.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n := int64(du.Free) - room; n > 0 {
		if _, err := f.WriteAt(make([]byte, n), 0); err != nil {
			t.Fatal(err)
		}
	}
	return name
}

// TestDiskFullIsASpell: a disk another process fills for a while refuses
// appends while it is full — with FullError "disk_full", at once, for
// every topic — and accepts them again by itself once space returns; the
// partition never turns read-only, and every acknowledged record is there,
// at dense offsets, after a clean reopen and after a power cut.
func TestDiskFullIsASpell(t *testing.T) {
	mem := vfs.NewMem()
	mem.SetCapacity(8 << 20)
	clock := testkit.NewClock(clockStart)
	l := openTestLog(t, mem, WithClock(clock), WithMinFreeRatio(0)) // no free-disk floor: nothing is deleted to make room
	tp := mustTopic(t, l, "t", TopicConfig{SegmentBytes: 64 << 10})
	other := mustTopic(t, l, "other", TopicConfig{})
	p, _ := tp.Partition(0)
	acked := map[int64]string{}
	appendOne := func(i int) error {
		v := value(i) + " padding padding padding padding padding padding"
		off, err := p.Append(context.Background(), []Record{rec("k", v, int64(i))}).Wait(context.Background())
		if err == nil {
			acked[off] = v
		}
		return err
	}
	for i := range 200 {
		if err := appendOne(i); err != nil {
			t.Fatal(err)
		}
	}

	filler := fillDisk(t, mem, 2<<10) // room for a few batches, not for a roll's index files
	var full error
	i := 200
	for ; i < 5000 && full == nil; i++ {
		full = appendOne(i)
	}
	var fe *FullError
	if !errors.As(full, &fe) || fe.Reason != "disk_full" || !errors.Is(full, ErrLogFull) {
		t.Fatalf("append on a full disk: %v", full)
	}
	if err := p.Err(); err != nil {
		t.Fatalf("the partition turned read-only: %v", err)
	}
	if !l.Stats().DiskFull || l.Stats().DiskFullSpells != 1 {
		t.Fatalf("stats %+v", l.Stats())
	}
	// Refused at once, for every topic, while the disk stays full.
	writes := l.Stats().DiskFullWrites
	for range 3 {
		clock.Advance(2 * time.Second) // looked at again: still full
		if err := appendOne(i); !errors.As(err, &fe) || fe.Reason != "disk_full" {
			t.Fatalf("append during the spell: %v", err)
		}
		op, _ := other.Partition(0)
		if _, err := op.Append(context.Background(), []Record{rec("", "x", 1)}).Wait(context.Background()); !errors.Is(err, ErrLogFull) {
			t.Fatalf("another topic during the spell: %v", err)
		}
	}
	if n := l.Stats().DiskFullWrites; n != writes {
		t.Fatalf("%d more writes tried during the spell, want none (refused before writing)", n-writes)
	}

	if err := mem.Remove(filler); err != nil { // the other process frees its space
		t.Fatal(err)
	}
	if err := appendOne(i); !errors.As(err, &fe) {
		t.Fatalf("append within a second of the space returning: %v (the free space is looked at once a second)", err)
	}
	clock.Advance(diskFullRecheck)
	for j := i; j < i+300; j++ { // appends resume, rolls included
		if err := appendOne(j); err != nil {
			t.Fatalf("append after space returned: %v", err)
		}
	}
	if l.Stats().DiskFull {
		t.Fatal("still full after space returned")
	}
	check := func(p *Partition, what string) {
		t.Helper()
		got := readAll(t, p)
		seen := 0
		for k, r := range got {
			if r.Offset != int64(k) {
				t.Fatalf("%s: record %d has offset %d: offsets are not dense", what, k, r.Offset)
			}
			if v, ok := acked[r.Offset]; ok {
				if string(r.Value) != v {
					t.Fatalf("%s: offset %d holds %q, acknowledged %q", what, r.Offset, r.Value, v)
				}
				seen++
			}
		}
		if seen != len(acked) || len(got) != len(acked) {
			t.Fatalf("%s: %d records, %d of %d acknowledged", what, len(got), seen, len(acked))
		}
	}
	check(p, "open")
	crashed := mem.CrashClone(vfs.CrashOptions{})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, p = reopenT(t, mem)
	check(p, "after a clean reopen")
	l.Close()
	l, p = reopenT(t, crashed)
	defer l.Close()
	check(p, "after a power cut")
}

// TestDiskFullDuringRoll: a roll that cannot write the sealed segment's
// indexes is undone and tried again, not fatal.
func TestDiskFullDuringRoll(t *testing.T) {
	mem := vfs.NewMem()
	mem.SetCapacity(16 << 20)
	clock := testkit.NewClock(clockStart)
	l := openTestLog(t, mem, WithClock(clock), WithMinFreeRatio(0)) // no free-disk floor: nothing is deleted to make room
	defer l.Close()
	p, _ := mustTopic(t, l, "t", TopicConfig{SegmentBytes: 4096, IndexIntervalBytes: 64}).Partition(0)
	n := 0
	for ; n < 30; n++ {
		mustAppend(t, p, rec("k", value(n), 1))
	}
	segs := len(p.segs)
	// Room for the batches that fill the segment, not for the rolls'
	// index files and new segment.
	filler := fillDisk(t, mem, 1500)
	var err error
	for ; err == nil && n < 200; n++ {
		_, err = p.Append(context.Background(), []Record{rec("k", value(n), 1)}).Wait(context.Background())
	}
	if !errors.Is(err, ErrLogFull) || p.Err() != nil {
		t.Fatalf("append: %v, partition error %v", err, p.Err())
	}
	n--
	mem.Remove(filler)
	clock.Advance(diskFullRecheck)
	for k := 0; k < 100; k, n = k+1, n+1 {
		if off, err := p.Append(context.Background(), []Record{rec("k", value(n), 1)}).Wait(context.Background()); err != nil {
			t.Fatalf("append after space returned: %v", err)
		} else if k == 0 && off != int64(n) {
			t.Fatalf("offset %d after the spell, want %d", off, n)
		}
	}
	if len(p.segs) <= segs {
		t.Fatal("no roll after the spell")
	}
	if got := readAll(t, p); len(got) != n || got[len(got)-1].Offset != int64(n-1) {
		t.Fatalf("%d records, want %d", len(got), n)
	}
}

func reopenT(t *testing.T, fs vfs.FS) (*Log, *Partition) {
	t.Helper()
	l := openTestLog(t, fs)
	tp, err := l.Topic("t")
	if err != nil {
		t.Fatal(err)
	}
	p, _ := tp.Partition(0)
	return l, p
}
