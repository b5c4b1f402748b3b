package commitlog

import (
	"context"
	"os"
	"sync/atomic"
	"testing"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

// countingFS counts the bytes read from files.
type countingFS struct {
	vfs.FS
	read atomic.Int64
}

type countingFile struct {
	vfs.File
	fs *countingFS
}

func (c *countingFS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	f, err := c.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return countingFile{f, c}, nil
}

func (f countingFile) ReadAt(b []byte, off int64) (int, error) {
	n, err := f.File.ReadAt(b, off)
	f.fs.read.Add(int64(n))
	return n, err
}

// TestReadRecordsStepsReadEachBatchOnce: a reader stepping through a
// partition with a byte limit that cuts batches (the bridge's read steps)
// gets every record once and reads each stored byte once: the batch cut
// at a step's end is completed, not read again by the next step.
func TestReadRecordsStepsReadEachBatchOnce(t *testing.T) {
	fs := &countingFS{FS: vfs.NewMem()}
	l := openTestLog(t, fs)
	defer l.Close()
	p, _ := mustTopic(t, l, "t", TopicConfig{Partitions: 1}).Partition(0)
	const batches, perBatch = 200, 10
	for i := range batches {
		recs := make([]Record, perBatch)
		for j := range recs {
			recs[j] = rec("k", value(i*perBatch+j)+" padding to make a batch of some hundreds of bytes", int64(i))
		}
		if _, err := p.Append(context.Background(), recs).Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	stored := p.Size()
	fs.read.Store(0)
	off, n, steps := int64(0), 0, 0
	for off < p.HighWatermark() {
		recs, next, _, err := p.ReadRecords(off, 1000) // about 1.5 batches
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range recs {
			if r.Offset != off+int64(i) || string(r.Value[:12]) != value(int(r.Offset)) {
				t.Fatalf("step %d: record %d has offset %d value %q", steps, i, r.Offset, r.Value[:12])
			}
		}
		n += len(recs)
		off = next
		steps++
	}
	if n != batches*perBatch {
		t.Fatalf("read %d records, want %d", n, batches*perBatch)
	}
	// Each step also reads a few batch headers to find its first batch
	// from the nearest index entry; the batches themselves are read once.
	// (Read again at each step's start, they cost 65% more here, and a
	// step took one batch instead of about 1000 bytes' worth.)
	if got := fs.read.Load(); got > stored*13/10 {
		t.Errorf("read %d bytes in %d steps for %d stored: batches cut at a step's end are read again", got, steps, stored)
	}
	if steps > batches*6/10 {
		t.Errorf("%d steps of 1000 bytes for %d batches of about 770: each step took one batch", steps, batches)
	}
	t.Logf("%d steps read %d bytes for %d stored", steps, fs.read.Load(), stored)
}
