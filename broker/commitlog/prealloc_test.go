package commitlog

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

// allocatedBytes is the disk space a file holds (st_blocks).
func allocatedBytes(t *testing.T, path string) (size, allocated int64) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Size, st.Blocks * 512
}

// TestPreallocateKeepsSizeAndReleasesAtRoll, on the real file system: the
// active segment holds blocks reserved ahead of its size (which only the
// writes move, so nothing past the records is ever readable), the sealed
// one gives them back, and a reopened log reads exactly what was written.
func TestPreallocateKeepsSizeAndReleasesAtRoll(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, WithLogger(quietLogger()), WithMinFreeRatio(0))
	if err != nil {
		t.Fatal(err)
	}
	tp := mustTopic(t, l, "t", TopicConfig{SegmentBytes: 1 << 20})
	p, _ := tp.Partition(0)
	ctx := context.Background()
	appendN := func(n int) {
		t.Helper()
		for i := range n {
			if _, err := p.Append(ctx, []Record{{Key: []byte("k"), Value: randomValue(1000), Timestamp: int64(i + 1)}}).Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendN(10)
	first := filepath.Join(dir, "t", "0", segmentName(0, suffixLog))
	size, alloc := allocatedBytes(t, first)
	if size > 20<<10 || alloc < 64<<10 {
		t.Fatalf("active segment: size %d, %d bytes allocated; want a reservation of 64 KiB or more beyond a small size", size, alloc)
	}
	if !l.commit.rollIdle(p, p.activeSegment()) {
		t.Fatal("no roll")
	}
	size, alloc = allocatedBytes(t, first)
	if alloc > size+4<<10 {
		t.Fatalf("sealed segment: size %d, %d bytes allocated; want the reservation given back", size, alloc)
	}
	appendN(10)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = Open(dir, WithLogger(quietLogger()), WithMinFreeRatio(0))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	tp, err = l.Topic("t")
	if err != nil {
		t.Fatal(err)
	}
	p, _ = tp.Partition(0)
	if hwm := p.HighWatermark(); hwm != 20 {
		t.Fatalf("high watermark after reopen %d, want 20", hwm)
	}
	recs, _, _, err := p.ReadRecords(0, 64<<20)
	if err != nil || len(recs) != 10 || recs[0].Offset != 0 { // the first segment's
		t.Fatalf("read after reopen: %d records, %v", len(recs), err)
	}
}

// TestPreallocateRefusedIsHarmless: a file system that refuses the
// reservation (a full disk) loses nothing: appends go on.
func TestPreallocateRefusedIsHarmless(t *testing.T) {
	refused := 0
	efs := vfs.NewErrorFS(vfs.NewMem(), vfs.InjectFunc(func(op vfs.Op, name string) error {
		if op == vfs.OpAllocate {
			refused++
			return &os.PathError{Op: "fallocate", Path: name, Err: syscall.ENOSPC}
		}
		return nil
	}))
	l := openTestLog(t, efs)
	defer l.Close()
	p, _ := mustTopic(t, l, "t", TopicConfig{SegmentBytes: 64 << 10}).Partition(0)
	ctx := context.Background()
	for i := range 200 {
		if off, err := p.Append(ctx, []Record{{Value: randomValue(1000)}}).Wait(ctx); err != nil || off != int64(i) {
			t.Fatalf("append %d: offset %d, %v", i, off, err)
		}
	}
	if refused == 0 {
		t.Fatal("no reservation was tried")
	}
}
