package commitlog

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

type ackedRecord struct {
	topic     string
	partition int32
	offset    int64
	key       string
	value     string
}

type ackLog struct {
	mu   sync.Mutex
	recs []ackedRecord
}

func (a *ackLog) add(r ackedRecord) {
	a.mu.Lock()
	a.recs = append(a.recs, r)
	a.mu.Unlock()
}

// crashWorkload drives a log through appends from several pipelining
// writers, segment rolls, a compaction and a clean close. It ignores every
// error (the fault makes many calls fail) and records what was
// acknowledged.
func crashWorkload(fs vfs.FS, acked *ackLog) {
	l, err := Open(testDir, WithFS(fs), WithLogger(quietLogger()), WithRetentionInterval(1<<40))
	if err != nil {
		return
	}
	defer l.Close()
	a, errA := l.EnsureTopic("a", TopicConfig{Partitions: 2, SegmentBytes: 4096, IndexIntervalBytes: 512})
	b, errB := l.EnsureTopic("b", TopicConfig{Cleanup: CleanupCompact, SegmentBytes: 4096})
	ctx := context.Background()
	var wg sync.WaitGroup
	if errA == nil {
		for w := 0; w < 3; w++ {
			wg.Go(func() {
				for round := 0; round < 10; round++ {
					var futs []*Future
					var vals []string
					for i := 0; i < 3; i++ {
						v := fmt.Sprintf("w%d-r%d-i%d-%0120d", w, round, i, 0)
						vals = append(vals, v)
						futs = append(futs, a.Append(ctx, []Record{{Key: []byte("w" + strconv.Itoa(w)), Value: []byte(v)}}))
					}
					for i, f := range futs {
						if off, err := f.Wait(ctx); err == nil {
							part, _ := f.Offset()
							acked.add(ackedRecord{topic: "a", partition: part, offset: off, value: vals[i]})
						}
					}
				}
			})
		}
	}
	if errB == nil {
		wg.Go(func() {
			for i := 0; i < 60; i++ {
				k, v := "k"+strconv.Itoa(i%4), fmt.Sprintf("b%d-%0200d", i, 0)
				f := b.Append(ctx, []Record{{Key: []byte(k), Value: []byte(v)}})
				if off, err := f.Wait(ctx); err == nil {
					acked.add(ackedRecord{topic: "b", offset: off, key: k, value: v})
				}
				if i == 20 || i == 58 { // the second pass merges the cleaned segments
					l.Compact()
				}
			}
		})
	}
	wg.Wait()
}

// verifyRecovered opens fs after a crash and checks every acknowledged
// record of topic a at its offset, dense offsets in every partition, the
// newest acknowledged value of every key of topic b, and that appends
// continue at the high watermark.
func verifyRecovered(t *testing.T, label string, fs vfs.FS, acked []ackedRecord) {
	t.Helper()
	l, err := Open(testDir, WithFS(fs), WithLogger(quietLogger()), WithRetentionInterval(1<<40))
	if err != nil {
		t.Fatalf("%s: reopen after crash failed: %v", label, err)
	}
	defer l.Close()
	stored := map[string]map[int64]Record{}
	for _, tp := range l.Topics() {
		for _, p := range tp.Partitions() {
			recs := readAll(t, p)
			m := map[int64]Record{}
			for i, r := range recs {
				if tp.Name() == "a" && r.Offset != p.StartOffset()+int64(i) {
					t.Fatalf("%s: %s/%d offsets not dense: index %d holds %d", label, tp.Name(), p.ID(), i, r.Offset)
				}
				m[r.Offset] = r
			}
			stored[tp.Name()+"/"+strconv.Itoa(int(p.ID()))] = m
			if tp.Name() == "a" && int64(len(recs)) != p.HighWatermark()-p.StartOffset() {
				t.Fatalf("%s: %s/%d has %d records below hwm %d", label, tp.Name(), p.ID(), len(recs), p.HighWatermark())
			}
			hwm := p.HighWatermark()
			off, err := p.Append(context.Background(), []Record{{Key: []byte("x"), Value: []byte("after")}}).Wait(context.Background())
			if err != nil || off != hwm {
				t.Fatalf("%s: append after recovery: offset %d (hwm %d) err %v", label, off, hwm, err)
			}
		}
	}
	newest := map[string]ackedRecord{}
	for _, a := range acked {
		if a.topic == "b" {
			if cur, ok := newest[a.key]; !ok || a.offset > cur.offset {
				newest[a.key] = a
			}
			continue
		}
		r, ok := stored["a/"+strconv.Itoa(int(a.partition))][a.offset]
		if !ok || string(r.Value) != a.value {
			t.Fatalf("%s: acknowledged a/%d@%d %q lost (found %q, present %v)", label, a.partition, a.offset, a.value, r.Value, ok)
		}
	}
	for k, a := range newest {
		// The newest acknowledged value, or a newer one that was written
		// but not acknowledged, must survive compaction and the crash.
		var best *Record
		for off, r := range stored["b/0"] {
			if string(r.Key) == k && off >= a.offset && (best == nil || off > best.Offset) {
				r := r
				best = &r
			}
		}
		if best == nil || best.Offset == a.offset && string(best.Value) != a.value {
			t.Fatalf("%s: key %s: newest acknowledged value %q@%d lost", label, k, a.value, a.offset)
		}
	}
}

// TestCrashAtEveryOperation cuts the power at every operation index of the
// workload in turn and checks that every acknowledged record is readable
// after reopening, with dense offsets.
func TestCrashAtEveryOperation(t *testing.T) {
	probe := vfs.NewPowerCut(vfs.NewMem(), -1, vfs.CrashOptions{})
	crashWorkload(probe, &ackLog{})
	total := probe.Ops()
	if total < 200 {
		t.Fatalf("workload made only %d operations", total)
	}
	step := int64(1)
	if testing.Short() {
		step = 7
	}
	cuts := 0
	for k := int64(0); k < total+20; k += step {
		mem := vfs.NewMem()
		pc := vfs.NewPowerCut(mem, k, vfs.CrashOptions{Rand: rand.New(rand.NewPCG(uint64(k), 7))})
		var acked ackLog
		crashWorkload(pc, &acked)
		snap := pc.Snapshot()
		if snap == nil {
			snap = mem.CrashClone(vfs.CrashOptions{})
		} else {
			cuts++
		}
		verifyRecovered(t, fmt.Sprintf("cut at op %d of %d", k, total), snap, acked.recs)
	}
	t.Logf("workload of about %d operations; power cut at %d of them", total, cuts)
}

// TestFaultAtEveryOperation fails one operation (tearing it if it is a
// write) and lets the process carry on to a clean close, then crashes with a
// torn tail: sticky errors must keep what was acknowledged intact.
func TestFaultAtEveryOperation(t *testing.T) {
	probe := vfs.NewPowerCut(vfs.NewMem(), -1, vfs.CrashOptions{})
	crashWorkload(probe, &ackLog{})
	total := probe.Ops()
	step := int64(1)
	if testing.Short() {
		step = 7
	}
	for k := int64(0); k < total+20; k += step {
		mem := vfs.NewMem()
		inj := &vfs.InjectAt{Index: k}
		var acked ackLog
		crashWorkload(vfs.NewErrorFS(mem, inj), &acked)
		crashed := mem.CrashClone(vfs.CrashOptions{Rand: rand.New(rand.NewPCG(uint64(k), 11))})
		_, what := inj.Fired()
		verifyRecovered(t, fmt.Sprintf("fault at op %d (%s)", k, what), crashed, acked.recs)
	}
}
