package commitlog

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// openFilesUnder counts this process's descriptors open on files under dir.
func openFilesUnder(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(target, dir+"/") {
			n++
		}
	}
	return n
}

func openOSLog(t *testing.T, dir string, opts ...Option) *Log {
	t.Helper()
	l, err := Open(dir, append([]Option{WithLogger(quietLogger()), WithMinFreeRatio(0)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestSealedSegmentFilesBounded: with WithMaxOpenSegments the log holds at
// most that many sealed segment files open (counted from /proc), whatever
// is read, by many readers at once, and after a reopen — and every read
// still returns exactly what was appended.
func TestSealedSegmentFilesBounded(t *testing.T) {
	dir := t.TempDir()
	const bound = 2
	l := openOSLog(t, dir, WithMaxOpenSegments(bound))
	tp := mustTopic(t, l, "t", TopicConfig{SegmentBytes: 4096})
	p, _ := tp.Partition(0)
	var want []string
	for i := 0; i < 400; i++ {
		v := fmt.Sprintf("%03d-%s", i, strings.Repeat("x", 90))
		mustAppend(t, p, rec("k", v, 0))
		want = append(want, v)
	}
	if p.Segments() < 8 {
		t.Fatalf("only %d segments: the test needs many sealed ones", p.Segments())
	}
	check := func(what string) {
		t.Helper()
		got := readAll(t, p)
		if len(got) != len(want) {
			t.Fatalf("%s: read %d records, want %d", what, len(got), len(want))
		}
		for i, r := range got {
			if string(r.Value) != want[i] {
				t.Fatalf("%s: record %d = %q", what, i, r.Value)
			}
		}
		if n := openFilesUnder(t, dir); n > bound+1 {
			t.Fatalf("%s: %d files open under the log, want at most %d sealed + 1 active", what, n, bound)
		}
		if st := l.Stats(); st.OpenSealedFiles > bound {
			t.Fatalf("%s: %d sealed files open, bound %d", what, st.OpenSealedFiles, bound)
		}
	}
	check("first read")

	// Readers everywhere at once, while appends go on: each checks what it
	// reads against what was appended at that offset.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	first := want[:400:400]
	for r := 0; r < 4; r++ {
		wg.Go(func() {
			for round := 0; round < 10; round++ {
				off := int64((round*37 + r*101) % 400)
				recs, _, _, err := p.ReadRecords(off, 8<<10)
				if err != nil {
					errs <- err
					return
				}
				for _, rc := range recs {
					if rc.Offset < 400 && string(rc.Value) != first[rc.Offset] {
						errs <- fmt.Errorf("offset %d: %q", rc.Offset, rc.Value)
						return
					}
				}
				sl, err := p.Read(off, 4096)
				if err != nil {
					errs <- err
					return
				}
				b, err := sl.AppendTo(nil)
				sl.Release()
				if err != nil || len(b) == 0 {
					errs <- fmt.Errorf("slice at %d: %d bytes, %v", off, len(b), err)
					return
				}
			}
		})
	}
	for i := 400; i < 440; i++ {
		v := fmt.Sprintf("%03d-%s", i, strings.Repeat("y", 90))
		mustAppend(t, p, rec("k", v, 0))
		want = append(want, v)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	check("after concurrent reads")
	if l.Stats().SealedFileCloses == 0 {
		t.Fatal("no file was ever closed by the bound")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if n := openFilesUnder(t, dir); n != 0 {
		t.Fatalf("%d files open after Close", n)
	}
	l = openOSLog(t, dir, WithMaxOpenSegments(bound))
	defer l.Close()
	tp, _ = l.Topic("t")
	p, _ = tp.Partition(0)
	if n := openFilesUnder(t, dir); n > bound+1 {
		t.Fatalf("after reopen: %d files open", n)
	}
	check("after reopen")
}

// TestHeldSegmentKeepsItsFile: a reader that holds a sealed segment whose
// file the bound has closed still reads that segment's bytes after
// compaction replaced the file and after retention removed it.
func TestHeldSegmentKeepsItsFile(t *testing.T) {
	for _, what := range []string{"compaction", "retention"} {
		t.Run(what, func(t *testing.T) {
			dir := t.TempDir()
			l := openOSLog(t, dir, WithMaxOpenSegments(1))
			defer l.Close()
			cfg := TopicConfig{SegmentBytes: 4096}
			if what == "compaction" {
				cfg.Cleanup = CleanupCompact
			}
			tp := mustTopic(t, l, "t", cfg)
			p, _ := tp.Partition(0)
			for i := 0; i < 300; i++ {
				mustAppend(t, p, rec(fmt.Sprintf("k%d", i%3), fmt.Sprintf("%03d-%s", i, strings.Repeat("z", 90)), 0))
			}
			segs := p.acquireFrom(0) // the reader's hold on every segment
			defer releaseAll(segs)
			first := segs[0]
			size := first.size.Load()
			orig := make([]byte, size)
			if _, err := first.file.ReadAt(orig, 0); err != nil {
				t.Fatal(err)
			}
			// The bound closed the first segment's file before this reader
			// took its hold, and the reader has not read it since (what
			// closeIfIdle does when nobody holds the segment).
			first.lazy().mu.Lock()
			_ = first.lazy().f.Close()
			first.lazy().f = nil
			first.lazy().mu.Unlock()

			switch what {
			case "compaction":
				if removed := l.Compact(); removed == 0 {
					t.Fatal("compaction removed nothing")
				}
			case "retention":
				if n, _ := p.deleteOldest(1); n == 0 {
					t.Fatal("retention removed nothing")
				}
				if _, err := os.Stat(first.path(suffixLog)); !os.IsNotExist(err) {
					t.Fatalf("segment file still there: %v", err)
				}
			}
			got := make([]byte, size)
			if _, err := first.file.ReadAt(got, 0); err != nil {
				t.Fatalf("the held segment after %s: %v", what, err)
			}
			if !bytes.Equal(got, orig) {
				t.Fatalf("the held segment reads other bytes after %s", what)
			}
		})
	}
}
