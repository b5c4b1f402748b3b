// Package vfstest holds vfs.FS wrappers for tests of the packages that
// store through the log: BlockingFS holds fsyncs back until the test lets
// them go, to show what a caller sees while its data is not yet durable.
// Faults by operation index or by name are vfs.ErrorFS's job.
package vfstest

import (
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

// heldCap is how many unread names Held buffers; a held fsync whose name
// does not fit is held all the same, but not reported.
const heldCap = 64

// BlockingFS is a vfs.FS whose file fsyncs a test can hold back: between
// Block and Unblock every File.Sync of a selected file waits, after
// reporting its name on Held, and runs once Unblock is called. Directory
// fsyncs (SyncDir) are never held.
type BlockingFS struct {
	vfs.FS
	suffix string
	held   chan string
	syncs  atomic.Int64 // fsyncs of selected files started, held or not

	mu struct {
		sync.Mutex
		gate chan struct{} // closed by Unblock; nil while not blocked
	}
}

// NewBlockingFS wraps fs, not blocked. It selects the files whose names end
// in suffix (".log": the log's segment files); "" selects every file.
func NewBlockingFS(fs vfs.FS, suffix string) *BlockingFS {
	return &BlockingFS{FS: fs, suffix: suffix, held: make(chan string, heldCap)}
}

// Block holds every fsync of a selected file from now until Unblock.
// Blocking a blocked filesystem does nothing.
func (b *BlockingFS) Block() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mu.gate == nil {
		b.mu.gate = make(chan struct{})
	}
}

// Unblock lets every held fsync run, and those that follow. Unblocking a
// filesystem that is not blocked does nothing, so it can be deferred.
func (b *BlockingFS) Unblock() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mu.gate != nil {
		close(b.mu.gate)
		b.mu.gate = nil
	}
}

// Held receives the name of each fsync as it is held (up to 64 unread;
// more are held but not reported).
func (b *BlockingFS) Held() <-chan string { return b.held }

// Syncs returns how many fsyncs of selected files have started since the
// filesystem was made, blocked or not.
func (b *BlockingFS) Syncs() int64 { return b.syncs.Load() }

// OpenFile opens name in the wrapped filesystem; the file's Sync obeys b.
func (b *BlockingFS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	f, err := b.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &blockingFile{File: f, fs: b}, nil
}

// blockingFile is a file of a BlockingFS.
type blockingFile struct {
	vfs.File
	fs *BlockingFS
}

// Sync waits while the filesystem is blocked, if the file is selected.
func (f *blockingFile) Sync() error {
	if b := f.fs; strings.HasSuffix(f.Name(), b.suffix) {
		b.syncs.Add(1)
		b.mu.Lock()
		gate := b.mu.gate
		b.mu.Unlock()
		if gate != nil {
			select {
			case b.held <- f.Name():
			default:
			}
			<-gate
		}
	}
	return f.File.Sync()
}
