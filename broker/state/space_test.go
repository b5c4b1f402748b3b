package state

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
)

// fakeFree is a filesystem's free space a test sets.
type fakeFree struct{ n atomic.Uint64 }

func (f *fakeFree) free(string) (uint64, error) { return f.n.Load(), nil }

func openDisk(t *testing.T, dir string, opts ...Option) *Store {
	t.Helper()
	s, err := Open(dir, append([]Option{WithLogger(nil), WithGCInterval(0)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestWritesRefusedBelowReserve: below the reserve every kind of write is
// refused with ErrDiskFull (an ENOSPC) before badger sees it, and nothing
// of it is applied; with room back, writes go through.
func TestWritesRefusedBelowReserve(t *testing.T) {
	ff := &fakeFree{}
	ff.n.Store(1 << 30)
	s := openDisk(t, t.TempDir(), WithFreeSpace(ff.free), WithReserve(64<<20))
	defer s.Close()
	if err := s.Set([]byte("a"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	ff.n.Store(10 << 20)
	for name, write := range map[string]func() error{
		"set":    func() error { return s.Set([]byte("a"), []byte("2")) },
		"delete": func() error { return s.Delete([]byte("a")) },
		"update": func() error { return s.Update(func(tx *Txn) error { return tx.Set([]byte("b"), []byte("3")) }) },
	} {
		if err := write(); !errors.Is(err, ErrDiskFull) || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("%s below the reserve: %v", name, err)
		}
	}
	if v, err := s.Get([]byte("a")); err != nil || string(v) != "1" {
		t.Fatalf("a = %q %v after refused writes, want the old value", v, err)
	}
	if _, err := s.Get([]byte("b")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("b after a refused update: %v", err)
	}
	ff.n.Store(1 << 30)
	if err := s.Set([]byte("a"), []byte("2")); err != nil {
		t.Fatal(err)
	}
}

// TestOpenOnFullDisk: a store opened on a filesystem below the reserve is
// opened read-only — reads serve, writes are refused — and the first write
// that finds room reopens it for writing; nothing is lost.
func TestOpenOnFullDisk(t *testing.T) {
	dir := t.TempDir()
	s := openDisk(t, dir)
	for i := range 100 {
		if err := s.Set(fmt.Appendf(nil, "k%03d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()

	ff := &fakeFree{}
	ff.n.Store(1 << 20)
	s = openDisk(t, dir, WithFreeSpace(ff.free), WithReserve(64<<20))
	defer s.Close()
	if !s.ReadOnly() || s.Volatile {
		t.Fatalf("read-only %v, volatile %v on a full disk", s.ReadOnly(), s.Volatile)
	}
	if v, err := s.Get([]byte("k042")); err != nil || string(v) != "v" {
		t.Fatalf("read on a full disk: %q %v", v, err)
	}
	if err := s.Set([]byte("new"), []byte("x")); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("write on a full disk: %v", err)
	}
	ff.n.Store(1 << 30)
	if err := s.Set([]byte("new"), []byte("x")); err != nil {
		t.Fatalf("write with room back: %v", err)
	}
	if s.ReadOnly() {
		t.Fatal("still read-only after a write found room")
	}
	n := 0
	if err := s.Scan(nil, func(k, v []byte) error { n++; return nil }); err != nil || n != 101 {
		t.Fatalf("%d keys %v, want 101", n, err)
	}
}

// TestDamagedStoreRebuilt: a store badger refuses to open (a damaged
// MANIFEST) is moved aside and started anew with WithRebuildOnDamage,
// and fails Open without it.
func TestDamagedStoreRebuilt(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s := openDisk(t, dir)
	s.Set([]byte("a"), []byte("1"))
	s.Close()
	if err := os.WriteFile(filepath.Join(dir, "MANIFEST"), []byte("garbage!"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(dir, WithLogger(nil), WithGCInterval(0)); err == nil {
		s.Close()
		t.Fatal("a damaged store opened without WithRebuildOnDamage")
	}
	s = openDisk(t, dir, WithRebuildOnDamage())
	defer s.Close()
	if s.Rebuilt == "" {
		t.Fatal("Rebuilt not set")
	}
	if _, err := os.Stat(filepath.Join(s.Rebuilt, "MANIFEST")); err != nil {
		t.Fatalf("the damaged copy was not kept: %v", err)
	}
	if _, err := s.Get([]byte("a")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the new store holds %v", err)
	}
	if err := s.Set([]byte("b"), []byte("2")); err != nil {
		t.Fatal(err)
	}
}

// probeChild runs Probe(dir) in a child process, as the daemon does:
// badger panics on some damaged tables in goroutines of its own.
func probeChild(t *testing.T, dir string) error {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "STATE_TEST_PROBE="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

// TestProbe: a sound store (clean or not) and no store at all pass; a
// garbled table — which panics badger in a goroutine of its own — and a
// garbled MANIFEST fail, without taking the caller down.
func TestProbe(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := probeChild(t, dir); err != nil {
		t.Fatalf("no store: %v", err)
	}
	s := openDisk(t, dir)
	for b := range 5 {
		if err := s.Update(func(tx *Txn) error {
			for i := range 1000 {
				if err := tx.Set(fmt.Appendf(nil, "key-%d-%06d", b, i), fmt.Appendf(nil, "value-%06d-padding-padding", i)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close() // the memtable becomes a table
	if err := probeChild(t, dir); err != nil {
		t.Fatalf("sound store: %v", err)
	}
	tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(tables) == 0 {
		t.Fatal("no tables to damage")
	}
	f, err := os.OpenFile(tables[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	f.WriteAt([]byte{0xff, 0xff, 0xff, 0x7f}, fi.Size()-4)
	f.Close()
	if err := probeChild(t, dir); err == nil {
		t.Fatal("a garbled table passed the probe")
	}
}
