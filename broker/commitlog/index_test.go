package commitlog

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

// indexedLog writes n one-record batches (timestamps 1_000_000 + 10·i) with
// an index entry every two batches and closes the log cleanly. It returns
// the filesystem and the segments' bases.
func indexedLog(t *testing.T, n int) (*vfs.Mem, []int64) {
	t.Helper()
	mem := vfs.NewMem()
	l := openTestLog(t, mem)
	p, _ := mustTopic(t, l, "t", TopicConfig{SegmentBytes: 4096, IndexIntervalBytes: 128}).Partition(0)
	for i := 0; i < n; i++ {
		mustAppend(t, p, rec("k", value(i), 1_000_000+int64(i)*10))
	}
	bases := segmentBases(t, p, 4)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return mem, bases
}

func segPath(base int64, suffix string) string {
	return testDir + "/t/0/" + segmentName(base, suffix)
}

// patchFile overwrites bytes of a file in place.
func patchFile(t *testing.T, fs vfs.FS, name string, off int64, b []byte) {
	t.Helper()
	f, err := fs.OpenFile(name, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func mustReadFile(t *testing.T, fs vfs.FS, name string) []byte {
	t.Helper()
	b, err := vfs.ReadFile(fs, name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkEveryOffset reads each offset alone and finds each timestamp.
func checkEveryOffset(t *testing.T, p *Partition, n int) {
	t.Helper()
	for off := int64(0); off < int64(n); off++ {
		recs, _, _, err := p.ReadRecords(off, 1)
		if err != nil || len(recs) == 0 || recs[0].Offset != off || string(recs[0].Value) != value(int(off)) {
			t.Fatalf("read at %d: %v %v", off, recs, err)
		}
	}
	for i := 0; i < n; i++ {
		for _, ts := range []int64{1_000_000 + int64(i)*10, 1_000_000 + int64(i)*10 - 5} {
			got, _, ok, err := p.OffsetForTime(ts)
			if err != nil || !ok || got != int64(i) {
				t.Fatalf("OffsetForTime(%d) = %d %v %v, want %d", ts, got, ok, err, i)
			}
		}
	}
}

// TestWrongMiddleIndexEntryIsRepaired corrupts an entry in the middle of a
// sealed segment's .index or .timeindex — a corruption the O(1) open check
// cannot see. Every read and time lookup must still answer exactly, no
// damage may be reported, and the first lookup that meets the entry must
// rebuild the index (count it, report it, and write files equal to the
// originals).
func TestWrongMiddleIndexEntryIsRepaired(t *testing.T) {
	const n = 300
	cases := []struct {
		name   string
		suffix string
		patch  func(b []byte, k int) // corrupt entry k of the file's bytes
	}{
		{"index entry off a batch boundary", suffixIndex, func(b []byte, k int) {
			e := b[k*indexEntrySize:]
			binary.BigEndian.PutUint32(e[4:], binary.BigEndian.Uint32(e[4:])+7)
		}},
		{"index entry at a later batch", suffixIndex, func(b []byte, k int) {
			copy(b[k*indexEntrySize+4:k*indexEntrySize+8], b[(k+2)*indexEntrySize+4:])
		}},
		{"index entry naming the wrong offset", suffixIndex, func(b []byte, k int) {
			e := b[k*indexEntrySize:]
			binary.BigEndian.PutUint32(e, binary.BigEndian.Uint32(e)+1)
		}},
		{"time index entry at a later offset", suffixTimeIndex, func(b []byte, k int) {
			copy(b[k*timeEntrySize+8:k*timeEntrySize+12], b[(k+2)*timeEntrySize+8:])
		}},
		{"time index entry with an older timestamp", suffixTimeIndex, func(b []byte, k int) {
			e := b[k*timeEntrySize:]
			binary.BigEndian.PutUint64(e, binary.BigEndian.Uint64(e)-100)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mem, bases := indexedLog(t, n)
			victim := bases[1]
			name := segPath(victim, c.suffix)
			written := map[string][]byte{} // both index files as the log wrote them
			for _, suf := range []string{suffixIndex, suffixTimeIndex} {
				written[suf] = mustReadFile(t, mem, segPath(victim, suf))
			}
			orig := written[c.suffix]
			size := indexEntrySize
			if c.suffix == suffixTimeIndex {
				size = timeEntrySize
			}
			entries := len(orig) / size
			if entries < 6 {
				t.Fatalf("%s has %d entries", name, entries)
			}
			bad := append([]byte(nil), orig...)
			c.patch(bad, entries/2)
			patchFile(t, mem, name, 0, bad)

			l := openTestLog(t, mem)
			defer l.Close()
			tp, _ := l.Topic("t")
			p, _ := tp.Partition(0)
			if rep := p.Recovery(); !rep.Clean || len(rep.IndexRebuilt) != 0 {
				t.Fatalf("the open-time check was expected to miss a middle entry: %+v", rep)
			}
			checkEveryOffset(t, p, n)
			rep := p.Recovery()
			if len(rep.Damaged) != 0 {
				t.Fatalf("a healthy segment was reported damaged: %+v", rep.Damaged)
			}
			if fmt.Sprint(rep.IndexRebuilt) != fmt.Sprint([]int64{victim}) {
				t.Fatalf("IndexRebuilt %v, want [%d]", rep.IndexRebuilt, victim)
			}
			if st := l.Stats(); st.IndexRebuilds != 1 || st.DamagedSegments != 0 {
				t.Fatalf("stats %+v, want one index rebuild and no damage", st)
			}
			for suf, want := range written {
				if got := mustReadFile(t, mem, segPath(victim, suf)); !bytes.Equal(got, want) {
					t.Fatalf("%s after the repair differs from the index the log wrote", suf)
				}
			}
		})
	}
}

// TestWrongActiveIndexEntryIsRepaired corrupts a middle entry of the
// active segment's .index before a clean reopen: the entries still
// increase, so they are loaded into memory, and a read meets the bad one.
// The read must answer exactly; the in-memory index is repaired, and what
// the next clean close writes is right.
func TestWrongActiveIndexEntryIsRepaired(t *testing.T) {
	mem := vfs.NewMem()
	l := openTestLog(t, mem)
	p, _ := mustTopic(t, l, "t", TopicConfig{SegmentBytes: 8192, IndexIntervalBytes: 128}).Partition(0)
	n := 0
	for p.Segments() < 2 || p.activeSegment().size.Load() < 4000 {
		mustAppend(t, p, rec("k", value(n), 1_000_000+int64(n)*10))
		n++
	}
	active := p.activeSegment().base
	l.Close()
	name := segPath(active, suffixIndex)
	orig := mustReadFile(t, mem, name)
	k := len(orig) / indexEntrySize / 2
	bad := append([]byte(nil), orig...)
	binary.BigEndian.PutUint32(bad[k*indexEntrySize+4:], binary.BigEndian.Uint32(bad[k*indexEntrySize+4:])+1)
	patchFile(t, mem, name, 0, bad)

	l = openTestLog(t, mem)
	tp, _ := l.Topic("t")
	p, _ = tp.Partition(0)
	if rep := p.Recovery(); !rep.Clean || len(rep.IndexRebuilt) != 0 {
		t.Fatalf("report %+v", rep)
	}
	checkEveryOffset(t, p, n)
	if rep := p.Recovery(); fmt.Sprint(rep.IndexRebuilt) != fmt.Sprint([]int64{active}) || len(rep.Damaged) != 0 {
		t.Fatalf("report after reads %+v", rep)
	}
	// Appends after the repair keep indexing; a clean close writes the
	// repaired entries.
	for i := 0; i < 20; i++ {
		mustAppend(t, p, rec("k", value(n), 1_000_000+int64(n)*10))
		n++
	}
	if p.activeSegment().base != active {
		t.Fatal("the active segment rolled; the test wants it to stay active")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := mustReadFile(t, mem, name); !bytes.HasPrefix(got, orig) {
		t.Fatal("the index written at close does not start with the entries the log first wrote")
	}
	l = openTestLog(t, mem)
	defer l.Close()
	tp, _ = l.Topic("t")
	p, _ = tp.Partition(0)
	checkEveryOffset(t, p, n)
	if st := l.Stats(); st.IndexRebuilds != 0 {
		t.Fatalf("the reopened log rebuilt %d indexes: the repaired index was not written", st.IndexRebuilds)
	}
}

// TestWrongLastTimeIndexEntryIsRebuiltAtOpen lowers the timestamp of a
// sealed segment's last .timeindex entry: it sets the segment's largest
// timestamp, so time lookups would skip records that are there. The open
// check must catch it and rebuild the index.
func TestWrongLastTimeIndexEntryIsRebuiltAtOpen(t *testing.T) {
	const n = 300
	mem, bases := indexedLog(t, n)
	victim := bases[1]
	name := segPath(victim, suffixTimeIndex)
	orig := mustReadFile(t, mem, name)
	bad := append([]byte(nil), orig...)
	e := bad[len(bad)-timeEntrySize:]
	binary.BigEndian.PutUint64(e, binary.BigEndian.Uint64(e)-25)
	patchFile(t, mem, name, 0, bad)
	l := openTestLog(t, mem)
	defer l.Close()
	tp, _ := l.Topic("t")
	p, _ := tp.Partition(0)
	if rep := p.Recovery(); fmt.Sprint(rep.IndexRebuilt) != fmt.Sprint([]int64{victim}) || len(rep.Damaged) != 0 {
		t.Fatalf("report %+v, want segment %d's index rebuilt at open", rep, victim)
	}
	if got := mustReadFile(t, mem, name); !bytes.Equal(got, orig) {
		t.Fatal("the rebuilt time index differs from the one the log wrote")
	}
	checkEveryOffset(t, p, n)
}
