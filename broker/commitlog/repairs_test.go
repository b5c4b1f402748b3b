package commitlog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

// repairOf returns the repairs of kind, failing unless there are want.
func repairOf(t *testing.T, l *Log, kind string, want int) []Repair {
	t.Helper()
	var out []Repair
	for _, r := range l.Repairs() {
		if r.Kind == kind {
			out = append(out, r)
		}
	}
	if len(out) != want || l.Stats().Repairs[kind] != int64(want) {
		t.Fatalf("%d %s repairs (counted %d), want %d: %+v", len(out), kind, l.Stats().Repairs[kind], want, l.Repairs())
	}
	return out
}

// TestGapBetweenSegmentsReported: a sealed segment file that is gone
// leaves offsets no file holds; open reports exactly them (a repair, a
// damage entry readers and the bridge see) instead of passing silently.
func TestGapBetweenSegmentsReported(t *testing.T) {
	mem := damageFixture(t)
	l, p := reopen(t, mem)
	p.segMu.RLock()
	victim, next := p.segs[2], p.segs[3].base
	p.segMu.RUnlock()
	l.Close()
	for _, suf := range []string{suffixLog, suffixIndex, suffixTimeIndex} {
		if err := mem.Remove(victim.path(suf)); err != nil {
			t.Fatal(err)
		}
	}
	l, p = reopen(t, mem)
	defer l.Close()
	r := repairOf(t, l, RepairGap, 1)[0]
	if !strings.Contains(r.Detail, offsetRange(victim.base, next)) || r.Topic != "t" || r.Partition != 0 {
		t.Fatalf("gap repair %+v, want offsets %s", r, offsetRange(victim.base, next))
	}
	var lost []int64
	for o := victim.base; o < next; o++ {
		lost = append(lost, o)
	}
	checkLost(t, l, p, lost...)
	if d := p.DamagedBetween(0, 300); len(d) != 1 || d[0].FirstOffset != victim.base || d[0].NextOffset != next {
		t.Fatalf("DamagedBetween %+v", d)
	}
}

// TestLogDirectoryHiddenEntries: Ferry removes only the hidden directories
// it makes (an interrupted topic create or delete), and says so; anything
// else hidden in the log directory is left alone, also said.
func TestLogDirectoryHiddenEntries(t *testing.T) {
	mem := damageFixture(t)
	for _, d := range []string{testDir + "/.t2.creating/0", testDir + "/.backup/keep"} {
		if err := mem.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	l, _ := reopen(t, mem)
	defer l.Close()
	if ok, _ := vfs.Exists(mem, testDir+"/.backup/keep"); !ok {
		t.Fatal("a hidden directory Ferry did not make was removed")
	}
	if ok, _ := vfs.Exists(mem, testDir+"/.t2.creating"); ok {
		t.Fatal("an interrupted create was not cleaned up")
	}
	if r := repairOf(t, l, RepairLeftover, 1)[0]; !strings.Contains(r.Detail, ".t2.creating") {
		t.Fatalf("leftover repair %+v", r)
	}
	if r := repairOf(t, l, RepairForeign, 1)[0]; !strings.Contains(r.Detail, ".backup") {
		t.Fatalf("not-ours repair %+v", r)
	}
}

// TestStraySegmentFile: an empty segment file far past the partition's end
// (not one Ferry wrote) does not move the high watermark: it is moved
// aside, said, and appends go on where the partition ends.
func TestStraySegmentFile(t *testing.T) {
	mem := damageFixture(t)
	stray := testDir + "/t/0/" + segmentName(99_999_999, suffixLog)
	f, err := mem.OpenFile(stray, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	l, p := reopen(t, mem)
	defer l.Close()
	if p.HighWatermark() != 300 {
		t.Fatalf("high watermark %d, want 300", p.HighWatermark())
	}
	if ok, _ := vfs.Exists(mem, stray+".stray"); !ok {
		t.Fatal("the stray file was not kept aside")
	}
	repairOf(t, l, RepairStray, 1)
	repairOf(t, l, RepairGap, 0)
	if off := mustAppend(t, p, rec("k", "next", 1)); off != 300 {
		t.Fatalf("append offset %d, want 300", off)
	}
	if n := len(readAll(t, p)); n != 301 {
		t.Fatalf("%d records", n)
	}
}

// TestTruncationAfterCleanShutdownSaysSo: bytes past the end a clean
// shutdown recorded are cut, and the repair says it was after a clean
// shutdown, not an unclean one.
func TestTruncationAfterCleanShutdownSaysSo(t *testing.T) {
	mem := damageFixture(t)
	paths, _, _ := locateBatches(t, mem, 299)
	f, err := mem.OpenFile(paths[0], 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	size, _ := f.Size()
	f.WriteAt([]byte("not a batch, appended by someone else"), size)
	f.Close()
	l, p := reopen(t, mem)
	defer l.Close()
	r := repairOf(t, l, RepairTruncated, 1)[0]
	if !strings.Contains(r.Detail, "clean shutdown") || strings.Contains(r.Detail, "unclean") {
		t.Fatalf("truncation repair %q", r.Detail)
	}
	if n := len(readAll(t, p)); n != 300 {
		t.Fatalf("%d records, want 300", n)
	}
}

// TestTopicSettingsRebuilt: a zero-length, garbled or missing topic.json
// does not stop the log from opening: the settings are rebuilt from the
// directory (its partitions), the unreadable file kept aside, and every
// record is still there.
func TestTopicSettingsRebuilt(t *testing.T) {
	for _, c := range []struct {
		name    string
		content []byte // nil: removed
	}{{"empty", []byte{}}, {"garbled", []byte(`{"name":"t","config":{"partit`)}, {"missing", nil}} {
		t.Run(c.name, func(t *testing.T) {
			mem := vfs.NewMem()
			l := openTestLog(t, mem)
			tp := mustTopic(t, l, "t", TopicConfig{Partitions: 3})
			for i := range 30 {
				mustAppend(t, tp.parts[i%3], rec("k", value(i), 1))
			}
			l.Close()
			file := filepath.Join(testDir, "t", topicFileName)
			if c.content == nil {
				if err := mem.Remove(file); err != nil {
					t.Fatal(err)
				}
			} else if err := vfs.WriteFileAtomic(mem, file, c.content); err != nil {
				t.Fatal(err)
			}
			l = openTestLog(t, mem)
			tp, err := l.Topic("t")
			if err != nil {
				t.Fatalf("topic after its settings were lost: %v", err)
			}
			if tp.NumPartitions() != 3 {
				t.Fatalf("%d partitions, want 3", tp.NumPartitions())
			}
			n := 0
			for _, p := range tp.Partitions() {
				n += len(readAll(t, p))
			}
			if n != 30 {
				t.Fatalf("%d records, want 30", n)
			}
			r := repairOf(t, l, RepairMetadata, 1)[0]
			names, _ := mem.ReadDir(filepath.Join(testDir, "t"))
			kept := false
			for _, nm := range names {
				kept = kept || strings.HasPrefix(nm, topicFileName+".bad-")
			}
			if kept != (c.content != nil) || (c.content != nil && !strings.Contains(r.Detail, "kept as")) {
				t.Fatalf("unreadable file kept aside %v (%v): %+v", kept, names, r)
			}
			// The rebuilt settings are stored: the next open reads them.
			l.Close()
			l2 := openTestLog(t, mem)
			defer l2.Close()
			repairOf(t, l2, RepairMetadata, 0)
		})
	}
}
