package vfs

import (
	"os"
	"sync"
	"sync/atomic"
)

// PowerCut wraps a Mem and cuts the power at operation index At: that
// operation and every later one fail with ErrInjected, and Snapshot returns
// the filesystem as the cut left it. Operations run under a shared lock and
// the cut takes it exclusively, so no operation is half-way through when
// the snapshot is taken: whatever an operation before the cut made durable
// is in the snapshot, and nothing after it is.
type PowerCut struct {
	mem  *Mem
	at   int64
	opts CrashOptions

	mu   sync.RWMutex
	n    atomic.Int64
	dead atomic.Bool
	snap *Mem
}

// NewPowerCut returns a filesystem over mem that loses power at operation
// index at (counting from 0); a negative index never cuts.
func NewPowerCut(mem *Mem, at int64, opts CrashOptions) *PowerCut {
	return &PowerCut{mem: mem, at: at, opts: opts}
}

// Snapshot returns the filesystem after the cut, or nil before it.
func (p *PowerCut) Snapshot() *Mem {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.snap
}

// Ops returns how many operations were attempted.
func (p *PowerCut) Ops() int64 { return p.n.Load() }

// enter starts an operation; done must be called when it ends.
func (p *PowerCut) enter(op Op, name string) (done func(), err error) {
	p.mu.RLock()
	if p.dead.Load() {
		p.mu.RUnlock()
		return nil, pathErr(op.String(), name, ErrInjected)
	}
	if p.n.Add(1)-1 != p.at {
		return p.mu.RUnlock, nil
	}
	p.mu.RUnlock()
	p.mu.Lock()
	if !p.dead.Load() {
		p.snap = p.mem.CrashClone(p.opts)
		p.dead.Store(true)
	}
	p.mu.Unlock()
	return nil, pathErr(op.String(), name, ErrInjected)
}

func (p *PowerCut) run(op Op, name string, fn func() error) error {
	done, err := p.enter(op, name)
	if err != nil {
		return err
	}
	defer done()
	return fn()
}

// OpenFile implements FS.
func (p *PowerCut) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	var f File
	err := p.run(OpOpen, name, func() (err error) { f, err = p.mem.OpenFile(name, flag, perm); return })
	if err != nil {
		return nil, err
	}
	return &powerCutFile{File: f, p: p}, nil
}

// Remove implements FS.
func (p *PowerCut) Remove(name string) error {
	return p.run(OpRemove, name, func() error { return p.mem.Remove(name) })
}

// RemoveAll implements FS.
func (p *PowerCut) RemoveAll(name string) error {
	return p.run(OpRemoveAll, name, func() error { return p.mem.RemoveAll(name) })
}

// Rename implements FS.
func (p *PowerCut) Rename(oldname, newname string) error {
	return p.run(OpRename, oldname, func() error { return p.mem.Rename(oldname, newname) })
}

// MkdirAll implements FS.
func (p *PowerCut) MkdirAll(dir string, perm os.FileMode) error {
	return p.run(OpMkdirAll, dir, func() error { return p.mem.MkdirAll(dir, perm) })
}

// ReadDir implements FS.
func (p *PowerCut) ReadDir(dir string) (names []string, err error) {
	err = p.run(OpReadDir, dir, func() (err error) { names, err = p.mem.ReadDir(dir); return })
	return names, err
}

// Stat implements FS.
func (p *PowerCut) Stat(name string) (fi os.FileInfo, err error) {
	err = p.run(OpStat, name, func() (err error) { fi, err = p.mem.Stat(name); return })
	return fi, err
}

// SyncDir implements FS.
func (p *PowerCut) SyncDir(dir string) error {
	return p.run(OpSyncDir, dir, func() error { return p.mem.SyncDir(dir) })
}

// DiskUsage implements FS.
func (p *PowerCut) DiskUsage(dir string) (du DiskUsage, err error) {
	err = p.run(OpDiskUsage, dir, func() (err error) { du, err = p.mem.DiskUsage(dir); return })
	return du, err
}

type powerCutFile struct {
	File
	p *PowerCut
}

func (f *powerCutFile) ReadAt(b []byte, off int64) (n int, err error) {
	err = f.p.run(OpRead, f.Name(), func() (err error) { n, err = f.File.ReadAt(b, off); return })
	return n, err
}

func (f *powerCutFile) WriteAt(b []byte, off int64) (n int, err error) {
	err = f.p.run(OpWrite, f.Name(), func() (err error) { n, err = f.File.WriteAt(b, off); return })
	return n, err
}

func (f *powerCutFile) Sync() error {
	return f.p.run(OpSync, f.Name(), f.File.Sync)
}

// Allocate implements Allocator: a reservation beyond the file's size
// changes no bytes a crash could keep or lose.
func (f *powerCutFile) Allocate(off, n int64) error {
	return f.p.run(OpAllocate, f.Name(), func() error { return Allocate(f.File, off, n) })
}

func (f *powerCutFile) Truncate(size int64) error {
	return f.p.run(OpTruncate, f.Name(), func() error { return f.File.Truncate(size) })
}

func (f *powerCutFile) Size() (n int64, err error) {
	err = f.p.run(OpSize, f.Name(), func() (err error) { n, err = f.File.Size(); return })
	return n, err
}

func (f *powerCutFile) Close() error {
	err := f.File.Close() // released even when the power is cut
	done, ierr := f.p.enter(OpClose, f.Name())
	if ierr != nil {
		return ierr
	}
	done()
	return err
}
