package commitlog

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

// TestCompactionMergesSmallSegments: a compacted topic of 41 live keys in
// 4 KiB segments does not keep one file per segment it ever rolled: small
// cleaned segments are merged, the files on disk and the open descriptors
// stay few, and every key's newest value is there, before and after a
// reopen.
func TestCompactionMergesSmallSegments(t *testing.T) {
	mem := vfs.NewMem()
	l := openTestLog(t, mem, WithMaxOpenSegments(16))
	p, _ := mustTopic(t, l, "c", TopicConfig{SegmentBytes: 4096, Cleanup: CleanupCompact}).Partition(0)
	newest := map[string]string{}
	for i := range 20000 {
		k := fmt.Sprintf("key-%02d", i%41)
		newest[k] = value(i)
		mustAppend(t, p, rec(k, value(i), int64(i)))
		if i%2000 == 1999 {
			l.Compact()
		}
	}
	l.Compact()
	check := func(p *Partition, what string) {
		t.Helper()
		got := map[string]string{}
		prev := int64(-1)
		for _, r := range readAll(t, p) {
			if r.Offset <= prev {
				t.Fatalf("%s: offset %d after %d", what, r.Offset, prev)
			}
			prev = r.Offset
			got[string(r.Key)] = string(r.Value)
		}
		for k, v := range newest {
			if got[k] != v {
				t.Fatalf("%s: key %s holds %q, newest %q", what, k, got[k], v)
			}
		}
	}
	check(p, "after compaction")
	// 20000 records in 4 KiB segments rolled ~400 of them; merged, the
	// 41 keys' records fit in a few.
	if n := p.Segments(); n > 4 {
		t.Fatalf("%d segments for 41 live keys", n)
	}
	if n := l.Stats().OpenSealedFiles; n > 16 {
		t.Fatalf("%d sealed files open, bound 16", n)
	}
	names, _ := mem.ReadDir(testDir + "/c/0")
	logs := 0
	for _, n := range names {
		if strings.HasSuffix(n, suffixLog) {
			logs++
		}
	}
	if logs != p.Segments() {
		t.Fatalf("%d .log files on disk for %d segments: %v", logs, p.Segments(), names)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openTestLog(t, mem)
	defer l.Close()
	tp, _ := l.Topic("c")
	p, _ = tp.Partition(0)
	check(p, "after a reopen")
	if n := len(l.Repairs()); n != 0 {
		t.Fatalf("repairs at a clean reopen: %+v", l.Repairs())
	}
}

// TestInterruptedMergeLeftoverRemoved: a merge interrupted after its
// rename (the first segment's file holds the whole run, the others' files
// are still there) is finished at open: the leftovers are removed, said,
// and every record is read once.
func TestInterruptedMergeLeftoverRemoved(t *testing.T) {
	mem := vfs.NewMem()
	l := openTestLog(t, mem)
	p, _ := mustTopic(t, l, "c", TopicConfig{SegmentBytes: 4096, Cleanup: CleanupCompact}).Partition(0)
	pad := strings.Repeat("p", 100)
	for i := range 200 {
		mustAppend(t, p, rec(fmt.Sprintf("k%02d", i%10), value(i)+pad, 1))
	}
	p.segMu.RLock()
	segs := append([]*segment(nil), p.segs...)
	p.segMu.RUnlock()
	// Keep copies of every sealed segment, compact and merge, then put
	// back the files the merge removed: a crash after its rename, before
	// their removal.
	saved := map[string][]byte{}
	for _, s := range segs[:len(segs)-1] {
		b, err := vfs.ReadFile(mem, s.path(suffixLog))
		if err != nil {
			t.Fatal(err)
		}
		saved[s.path(suffixLog)] = b
	}
	l.Compact()
	if p.Segments() >= len(segs) {
		t.Fatalf("nothing merged: %d segments, %d before", p.Segments(), len(segs))
	}
	want := readAll(t, p)
	l.Close()
	restored := 0
	for name, b := range saved {
		if ok, _ := vfs.Exists(mem, name); !ok {
			if err := vfs.WriteFileAtomic(mem, name, b); err != nil {
				t.Fatal(err)
			}
			restored++
		}
	}
	if restored == 0 {
		t.Fatal("the merge removed no file")
	}
	l = openTestLog(t, mem)
	defer l.Close()
	tp, _ := l.Topic("c")
	p, _ = tp.Partition(0)
	got := readAll(t, p)
	if len(got) != len(want) {
		t.Fatalf("%d records after the interrupted merge, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].Offset != want[i].Offset || string(got[i].Value) != string(want[i].Value) {
			t.Fatalf("record %d: %d %q, want %d %q", i, got[i].Offset, got[i].Value, want[i].Offset, want[i].Value)
		}
	}
	repairOf(t, l, RepairLeftover, restored)
}
