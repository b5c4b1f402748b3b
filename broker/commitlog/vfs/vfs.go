// Package vfs is the small filesystem interface that every byte of Ferry's
// log goes through, with three implementations:
//
//   - OS, the real filesystem (fdatasync on Linux, directory fsync, statfs);
//   - Mem, an in-memory filesystem that remembers what was made durable and
//     can "crash": CrashClone returns the filesystem as a power cut would
//     leave it (unsynced data and unsynced directory entries gone, or torn);
//   - ErrorFS, a wrapper that injects an error at a chosen operation index,
//     tearing the write it fails, so tests can walk a fault through every
//     operation of a workload.
//
// The interface is deliberately narrow: positioned reads and writes (no
// shared file cursor, so concurrent readers never race), Sync, Truncate and
// the directory operations needed to replace files atomically.
package vfs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
)

// FS is the filesystem the log uses.
type FS interface {
	// OpenFile opens name with os.O_* flags (O_RDONLY, O_RDWR, O_CREATE,
	// O_EXCL, O_TRUNC are honoured).
	OpenFile(name string, flag int, perm os.FileMode) (File, error)
	// Remove removes a file or an empty directory.
	Remove(name string) error
	// RemoveAll removes name and everything below it.
	RemoveAll(name string) error
	// Rename atomically replaces newname with oldname.
	Rename(oldname, newname string) error
	// MkdirAll creates dir and its missing parents.
	MkdirAll(dir string, perm os.FileMode) error
	// ReadDir returns the sorted names in dir.
	ReadDir(dir string) ([]string, error)
	// Stat describes name.
	Stat(name string) (os.FileInfo, error)
	// SyncDir makes dir's entries (creations, renames, removals) durable.
	SyncDir(dir string) error
	// DiskUsage reports the size and free space of the filesystem holding dir.
	DiskUsage(dir string) (DiskUsage, error)
}

// File is an open file. It has no cursor: every read and write is positioned.
type File interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
	// Sync makes the file's data durable.
	Sync() error
	// Truncate changes the file's size.
	Truncate(size int64) error
	// Size returns the current size.
	Size() (int64, error)
	// Name returns the name the file was opened with.
	Name() string
}

// Allocator is implemented by files that can reserve disk blocks for
// bytes not yet written without changing the file's size (fallocate with
// FALLOC_FL_KEEP_SIZE on Linux). Writes into reserved blocks change no
// block allocation, so the fdatasync after them writes the data and not
// the file system's allocation metadata; and since the size is unchanged
// the reservation is never readable: a crash cannot leave bytes there
// that recovery might take for records.
type Allocator interface {
	Allocate(off, n int64) error
}

// Allocate reserves n bytes at off of f when f is an Allocator, else it
// returns an error wrapping errors.ErrUnsupported.
func Allocate(f File, off, n int64) error {
	if a, ok := f.(Allocator); ok {
		return a.Allocate(off, n)
	}
	return fmt.Errorf("allocate %s: %w", f.Name(), errors.ErrUnsupported)
}

// Fder is implemented by files backed by a real descriptor (the OS
// filesystem), so that the Kafka listener can sendfile from them.
type Fder interface {
	Fd() uintptr
}

// DiskUsage is the capacity of a filesystem in bytes.
type DiskUsage struct {
	Total uint64 // size of the filesystem
	Free  uint64 // bytes available to this (unprivileged) process
}

// FreeRatio returns Free/Total, or 1 when the size is unknown.
func (d DiskUsage) FreeRatio() float64 {
	if d.Total == 0 {
		return 1
	}
	return float64(d.Free) / float64(d.Total)
}

// ReadFile reads the whole of name.
func ReadFile(fs FS, name string) ([]byte, error) {
	f, err := fs.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	buf := make([]byte, size)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !(errors.Is(err, io.EOF) && int64(n) == size) {
		return nil, err
	}
	return buf[:n], nil
}

// WriteFileAtomic replaces name with data so that after a crash name holds
// either its old contents or data, never a mix: it writes name+".tmp",
// fsyncs it, renames it over name and fsyncs the directory.
func WriteFileAtomic(fs FS, name string, data []byte) error {
	return WriteFileAtomicMode(fs, name, data, 0o644)
}

// WriteFileAtomicMode is WriteFileAtomic creating the file with perm (a
// leftover temporary file is replaced, so it never keeps wider
// permissions).
func WriteFileAtomicMode(fs FS, name string, data []byte, perm os.FileMode) (err error) {
	tmp := name + ".tmp"
	if err := fs.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	f, err := fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = fs.Remove(tmp)
		}
	}()
	if _, err = f.WriteAt(data, 0); err != nil {
		f.Close()
		return err
	}
	if err = f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = fs.Rename(tmp, name); err != nil {
		return err
	}
	return fs.SyncDir(filepath.Dir(name))
}

// Exists reports whether name exists; errors other than "not exist" are
// returned.
func Exists(fs FS, name string) (bool, error) {
	_, err := fs.Stat(name)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return false, err
}

func sortedNames(names []string) []string {
	sort.Strings(names)
	return names
}

func pathErr(op, name string, err error) error {
	return &os.PathError{Op: op, Path: name, Err: err}
}

// ErrInjected is the error ErrorFS returns at the chosen operation.
var ErrInjected = fmt.Errorf("vfs: injected fault")

// Tail is the end of a file and its size.
type Tail struct {
	Size int64
	Tail []byte // the last n bytes, or fewer when the file is shorter
}

// ReadFileTail returns name's size and its last n bytes.
func ReadFileTail(fs FS, name string, n int) (Tail, error) {
	f, err := fs.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return Tail{}, err
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return Tail{}, err
	}
	k := min(int64(n), size)
	buf := make([]byte, k)
	if k > 0 {
		if _, err := f.ReadAt(buf, size-k); err != nil && !errors.Is(err, io.EOF) {
			return Tail{}, err
		}
	}
	return Tail{Size: size, Tail: buf}, nil
}
