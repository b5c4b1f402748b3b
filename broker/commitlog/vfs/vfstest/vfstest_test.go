package vfstest

import (
	"os"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

func open(t *testing.T, fs vfs.FS, name string) vfs.File {
	t.Helper()
	f, err := fs.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestBlockingFSHoldsSelectedSyncs: while blocked, a selected file's Sync
// waits and is reported; another file's runs; after Unblock both run.
func TestBlockingFSHoldsSelectedSyncs(t *testing.T) {
	fs := NewBlockingFS(vfs.NewMem(), ".log")
	seg, idx := open(t, fs, "/0.log"), open(t, fs, "/0.index")
	if err := seg.Sync(); err != nil { // not blocked: runs, not reported
		t.Fatal(err)
	}
	fs.Block()
	fs.Block() // again: nothing
	done := make(chan error, 1)
	go func() { done <- seg.Sync() }()
	select {
	case name := <-fs.Held():
		if name != "/0.log" {
			t.Fatalf("held %q", name)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the segment fsync was not reported held")
	}
	if err := idx.Sync(); err != nil { // not selected: never held
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("a held fsync returned (%v) before Unblock", err)
	case <-time.After(20 * time.Millisecond):
	}
	fs.Unblock()
	fs.Unblock() // again: nothing
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := seg.Sync(); err != nil {
		t.Fatal(err)
	}
	if n := fs.Syncs(); n != 3 {
		t.Fatalf("%d segment fsyncs counted, want 3", n)
	}
	select {
	case name := <-fs.Held():
		t.Fatalf("%s reported held while not blocked", name)
	default:
	}
}

// TestBlockingFSEmptySuffixSelectsAll: "" holds every file's fsync.
func TestBlockingFSEmptySuffixSelectsAll(t *testing.T) {
	fs := NewBlockingFS(vfs.NewMem(), "")
	f := open(t, fs, "/state.json")
	fs.Block()
	done := make(chan error, 1)
	go func() { done <- f.Sync() }()
	if name := <-fs.Held(); name != "/state.json" {
		t.Fatalf("held %q", name)
	}
	fs.Unblock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
