package commitlog

import (
	"testing"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

// received reports whether w signalled within d.
func received(w *Watcher, d time.Duration) bool {
	select {
	case <-w.C():
		return true
	case <-time.After(d):
		return false
	}
}

// TestWatcherWakesOnAnyPartition: one Watcher over several partitions
// wakes for an append to any of them, once per burst, and no more after
// Stop; a deleted topic wakes it too.
func TestWatcherWakesOnAnyPartition(t *testing.T) {
	l := openTestLog(t, vfs.NewMem())
	defer l.Close()
	a := mustTopic(t, l, "a", TopicConfig{Partitions: 2})
	b := mustTopic(t, l, "b", TopicConfig{Partitions: 1})
	pa1, _ := a.Partition(1)
	pa0, _ := a.Partition(0)
	pb, _ := b.Partition(0)

	w := NewWatcher()
	w.Watch(pa0)
	w.Watch(pa1)
	w.Watch(pa1) // twice is once
	w.Watch(pb)
	if len(w.parts) != 3 || len(pa1.watchers) != 1 {
		t.Fatalf("watching %d partitions, pa1 has %d watchers", len(w.parts), len(pa1.watchers))
	}
	if received(w, 20*time.Millisecond) {
		t.Fatal("signalled before any change")
	}
	mustAppend(t, pb, rec("", "x", 1))
	if !received(w, 5*time.Second) {
		t.Fatal("no signal after an append to the last watched partition")
	}
	mustAppend(t, pa1, rec("", "y", 1))
	mustAppend(t, pa1, rec("", "z", 1))
	if !received(w, 5*time.Second) {
		t.Fatal("no signal after appends to a partition")
	}
	if received(w, 20*time.Millisecond) {
		t.Fatal("a second signal for changes already reported")
	}

	w.Stop()
	if len(pa0.watchers)+len(pa1.watchers)+len(pb.watchers) != 0 {
		t.Fatal("Stop left watches behind")
	}
	mustAppend(t, pa0, rec("", "after stop", 1))
	if received(w, 50*time.Millisecond) {
		t.Fatal("signalled after Stop")
	}

	w.Watch(pb)
	if err := l.DeleteTopic("b"); err != nil {
		t.Fatal(err)
	}
	if !received(w, 5*time.Second) {
		t.Fatal("no signal when the watched partition's topic was deleted")
	}
	w.Stop()
}
