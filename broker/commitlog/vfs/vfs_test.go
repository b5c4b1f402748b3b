package vfs

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func write(t *testing.T, fs FS, name, data string, sync bool) File {
	t.Helper()
	f, err := fs.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	size, _ := f.Size()
	if _, err := f.WriteAt([]byte(data), size); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func read(t *testing.T, fs FS, name string) (string, bool) {
	t.Helper()
	b, err := ReadFile(fs, name)
	if errors.Is(err, os.ErrNotExist) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b), true
}

func TestMemCrashKeepsOnlyDurableState(t *testing.T) {
	m := NewMem()
	m.MkdirAll("/d", 0o755)
	m.SyncDir("/")
	f := write(t, m, "/d/synced", "durable", true)
	write(t, m, "/d/synced", "+lost", false)
	write(t, m, "/d/nodirsync", "data", true)
	m.SyncDir("/d") // both entries durable now
	write(t, m, "/d/later", "x", true)
	f.Close()

	c := m.CrashClone(CrashOptions{})
	if got, _ := read(t, c, "/d/synced"); got != "durable" {
		t.Fatalf("synced file after crash: %q", got)
	}
	if got, ok := read(t, c, "/d/nodirsync"); !ok || got != "data" {
		t.Fatalf("file with synced data and directory: %q %v", got, ok)
	}
	if _, ok := read(t, c, "/d/later"); ok {
		t.Fatal("a file whose directory entry was never synced survived the crash")
	}
	// Renames and removals are durable only with a directory sync.
	m.Rename("/d/synced", "/d/renamed")
	m.Remove("/d/nodirsync")
	c = m.CrashClone(CrashOptions{})
	if _, ok := read(t, c, "/d/synced"); !ok {
		t.Fatal("unsynced rename took effect")
	}
	if _, ok := read(t, c, "/d/nodirsync"); !ok {
		t.Fatal("unsynced removal took effect")
	}
	m.SyncDir("/d")
	c = m.CrashClone(CrashOptions{})
	if _, ok := read(t, c, "/d/renamed"); !ok {
		t.Fatal("synced rename lost")
	}
	if _, ok := read(t, c, "/d/nodirsync"); ok {
		t.Fatal("synced removal undone")
	}
}

func TestMemCrashTearsUnsyncedAppends(t *testing.T) {
	m := NewMem()
	f := write(t, m, "/f", "AAAA", true)
	m.SyncDir("/")
	write(t, m, "/f", "BBBBBBBB", false)
	f.Close()
	seen := map[string]bool{}
	for seed := uint64(0); seed < 200; seed++ {
		c := m.CrashClone(CrashOptions{Rand: rand.New(rand.NewPCG(seed, 0))})
		got, _ := read(t, c, "/f")
		if len(got) < 4 || got[:4] != "AAAA" || len(got) > 12 {
			t.Fatalf("torn file %q lost synced data or grew", got)
		}
		seen[got] = true
	}
	if len(seen) < 5 {
		t.Fatalf("only %d distinct torn outcomes", len(seen))
	}
}

func TestMemCapacityAndOpenUnlinked(t *testing.T) {
	m := NewMem()
	m.SetCapacity(10)
	f := write(t, m, "/f", "0123456789", false)
	if _, err := f.WriteAt([]byte("x"), 10); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write past capacity: %v", err)
	}
	du, _ := m.DiskUsage("/")
	if du.Free != 0 || du.Total != 10 {
		t.Fatalf("usage %+v", du)
	}
	m.Remove("/f")
	buf := make([]byte, 4)
	if _, err := f.ReadAt(buf, 0); err != nil || string(buf) != "0123" {
		t.Fatalf("read from an open unlinked file: %q %v", buf, err)
	}
	if du, _ := m.DiskUsage("/"); du.Free != 10 {
		t.Fatalf("space not released: %+v", du)
	}
}

func TestErrorFSInjectsAndTears(t *testing.T) {
	m := NewMem()
	inj := &InjectAt{Index: 2}
	e := NewErrorFS(m, inj)
	f, err := e.OpenFile("/f", os.O_RDWR|os.O_CREATE, 0o644) // op 0
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("hello"), 0); err != nil { // op 1
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("worldwide"), 5); !errors.Is(err, ErrInjected) { // op 2
		t.Fatalf("op 2: %v", err)
	}
	if err := f.Sync(); err != nil { // op 3: not sticky
		t.Fatal(err)
	}
	got, _ := read(t, m, "/f")
	if got != "helloworl" {
		t.Fatalf("torn write left %q, want the first half of the failed write", got)
	}
	if fired, what := inj.Fired(); !fired || what != "write /f" {
		t.Fatalf("fired %v at %q", fired, what)
	}
}

func TestInjectFuncFailsByName(t *testing.T) {
	m := NewMem()
	write(t, m, "/a", "aaa", true).Close()
	write(t, m, "/b", "bbb", true).Close()
	e := NewErrorFS(m, InjectFunc(func(op Op, name string) error {
		if op == OpOpen && name == "/b" {
			return ErrInjected
		}
		return nil
	}))
	if f, err := e.OpenFile("/a", os.O_RDONLY, 0); err != nil {
		t.Fatalf("open /a: %v", err)
	} else {
		f.Close()
	}
	_, err := e.OpenFile("/b", os.O_RDONLY, 0)
	var pe *os.PathError
	if !errors.Is(err, ErrInjected) || !errors.As(err, &pe) || pe.Path != "/b" || pe.Op != "open" {
		t.Fatalf("open /b: %v", err)
	}
}

func TestPowerCutSnapshotsAtTheCut(t *testing.T) {
	m := NewMem()
	p := NewPowerCut(m, 3, CrashOptions{})
	f, _ := p.OpenFile("/f", os.O_RDWR|os.O_CREATE, 0o644)   // 0
	f.WriteAt([]byte("abc"), 0)                              // 1
	f.Sync()                                                 // 2
	if err := p.SyncDir("/"); !errors.Is(err, ErrInjected) { // 3: the cut
		t.Fatalf("op 3: %v", err)
	}
	if _, err := f.WriteAt([]byte("d"), 3); !errors.Is(err, ErrInjected) {
		t.Fatal("operations after the cut must fail")
	}
	snap := p.Snapshot()
	if _, ok := read(t, snap, "/f"); ok {
		t.Fatal("file survived although its directory was never synced before the cut")
	}
}

func TestOSFS(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "a")
	if err := WriteFileAtomic(OS, name, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(OS, name, []byte("two")); err != nil {
		t.Fatal(err)
	}
	if got, _ := read(t, OS, name); got != "two" {
		t.Fatalf("got %q", got)
	}
	names, _ := OS.ReadDir(dir)
	if len(names) != 1 {
		t.Fatalf("leftover files: %v", names)
	}
	du, err := OS.DiskUsage(dir)
	if err != nil || du.Total == 0 || du.Free > du.Total {
		t.Fatalf("disk usage %+v %v", du, err)
	}
	f, _ := OS.OpenFile(name, os.O_RDONLY, 0)
	defer f.Close()
	if _, ok := f.(Fder); !ok {
		t.Fatal("OS files must expose their descriptor for sendfile")
	}
	tail, err := ReadFileTail(OS, name, 2)
	if err != nil || string(tail.Tail) != "wo" || tail.Size != 3 {
		t.Fatalf("tail %+v %v", tail, err)
	}
}
