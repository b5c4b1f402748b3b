package vfs

import (
	"os"
	"sync"
	"sync/atomic"
)

// Op names an operation for fault injection.
type Op uint8

// The operations ErrorFS counts.
const (
	OpOpen Op = iota
	OpRemove
	OpRemoveAll
	OpRename
	OpMkdirAll
	OpReadDir
	OpStat
	OpSyncDir
	OpDiskUsage
	OpRead
	OpWrite
	OpSync
	OpTruncate
	OpSize
	OpClose
	OpAllocate
)

var opNames = [...]string{"open", "remove", "removeall", "rename", "mkdirall", "readdir", "stat",
	"syncdir", "diskusage", "read", "write", "sync", "truncate", "size", "close", "allocate"}

func (o Op) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return "op?"
}

// Injector decides whether an operation fails.
type Injector interface {
	// MaybeError returns a non-nil error to fail the operation.
	MaybeError(op Op, name string) error
}

// InjectFunc is an Injector from a function, for faults chosen by name
// (fail opening one file, every write of another).
type InjectFunc func(op Op, name string) error

// MaybeError implements Injector.
func (f InjectFunc) MaybeError(op Op, name string) error { return f(op, name) }

// InjectAt fails the operation with index Index (counting from 0, every
// operation counted) and, when Sticky, every operation after it.
type InjectAt struct {
	Index  int64
	Sticky bool
	// Only, when non-nil, restricts counting to these operations.
	Only func(Op) bool

	n     atomic.Int64
	fired atomic.Bool
	mu    sync.Mutex
	what  string
}

// MaybeError implements Injector.
func (i *InjectAt) MaybeError(op Op, name string) error {
	if i.Only != nil && !i.Only(op) {
		return nil
	}
	k := i.n.Add(1) - 1
	if k == i.Index || (i.Sticky && k > i.Index) {
		if i.fired.CompareAndSwap(false, true) {
			i.mu.Lock()
			i.what = op.String() + " " + name
			i.mu.Unlock()
		}
		return ErrInjected
	}
	return nil
}

// Count returns how many operations were counted.
func (i *InjectAt) Count() int64 { return i.n.Load() }

// Fired reports whether the fault was injected, and at what.
func (i *InjectAt) Fired() (bool, string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.fired.Load(), i.what
}

// ErrorFS wraps an FS and consults an Injector before every operation. A
// failed write first writes half of its bytes, as a torn write would.
type ErrorFS struct {
	FS       FS
	Injector Injector
}

// NewErrorFS wraps fs.
func NewErrorFS(fs FS, inj Injector) *ErrorFS { return &ErrorFS{FS: fs, Injector: inj} }

func (e *ErrorFS) check(op Op, name string) error {
	if err := e.Injector.MaybeError(op, name); err != nil {
		return pathErr(op.String(), name, err)
	}
	return nil
}

// OpenFile implements FS.
func (e *ErrorFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	if err := e.check(OpOpen, name); err != nil {
		return nil, err
	}
	f, err := e.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &errorFile{File: f, e: e}, nil
}

// Remove implements FS.
func (e *ErrorFS) Remove(name string) error {
	if err := e.check(OpRemove, name); err != nil {
		return err
	}
	return e.FS.Remove(name)
}

// RemoveAll implements FS.
func (e *ErrorFS) RemoveAll(name string) error {
	if err := e.check(OpRemoveAll, name); err != nil {
		return err
	}
	return e.FS.RemoveAll(name)
}

// Rename implements FS.
func (e *ErrorFS) Rename(oldname, newname string) error {
	if err := e.check(OpRename, oldname); err != nil {
		return err
	}
	return e.FS.Rename(oldname, newname)
}

// MkdirAll implements FS.
func (e *ErrorFS) MkdirAll(dir string, perm os.FileMode) error {
	if err := e.check(OpMkdirAll, dir); err != nil {
		return err
	}
	return e.FS.MkdirAll(dir, perm)
}

// ReadDir implements FS.
func (e *ErrorFS) ReadDir(dir string) ([]string, error) {
	if err := e.check(OpReadDir, dir); err != nil {
		return nil, err
	}
	return e.FS.ReadDir(dir)
}

// Stat implements FS.
func (e *ErrorFS) Stat(name string) (os.FileInfo, error) {
	if err := e.check(OpStat, name); err != nil {
		return nil, err
	}
	return e.FS.Stat(name)
}

// SyncDir implements FS.
func (e *ErrorFS) SyncDir(dir string) error {
	if err := e.check(OpSyncDir, dir); err != nil {
		return err
	}
	return e.FS.SyncDir(dir)
}

// DiskUsage implements FS.
func (e *ErrorFS) DiskUsage(dir string) (DiskUsage, error) {
	if err := e.check(OpDiskUsage, dir); err != nil {
		return DiskUsage{}, err
	}
	return e.FS.DiskUsage(dir)
}

type errorFile struct {
	File
	e *ErrorFS
}

func (f *errorFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.e.check(OpRead, f.Name()); err != nil {
		return 0, err
	}
	return f.File.ReadAt(p, off)
}

func (f *errorFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.e.check(OpWrite, f.Name()); err != nil {
		n, _ := f.File.WriteAt(p[:len(p)/2], off)
		return n, err
	}
	return f.File.WriteAt(p, off)
}

// Allocate implements Allocator when the wrapped file does.
func (f *errorFile) Allocate(off, n int64) error {
	if err := f.e.check(OpAllocate, f.Name()); err != nil {
		return err
	}
	return Allocate(f.File, off, n)
}

func (f *errorFile) Sync() error {
	if err := f.e.check(OpSync, f.Name()); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *errorFile) Truncate(size int64) error {
	if err := f.e.check(OpTruncate, f.Name()); err != nil {
		return err
	}
	return f.File.Truncate(size)
}

func (f *errorFile) Size() (int64, error) {
	if err := f.e.check(OpSize, f.Name()); err != nil {
		return 0, err
	}
	return f.File.Size()
}

func (f *errorFile) Close() error {
	// A failed close still releases the file, as close(2) does.
	err := f.File.Close()
	if ierr := f.e.check(OpClose, f.Name()); ierr != nil {
		return ierr
	}
	return err
}
