package commitlog

import (
	"container/list"
	"os"
	"sync"
	"sync/atomic"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

// Open files of sealed segments.
//
// A partition keeps its active segment's file open for appends. Sealed
// segments are read only now and then (a consumer far behind, a bridge
// catching up, compaction), so their files are kept open only while used
// and recently used: at most WithMaxOpenSegments of them, the least
// recently used closed first, and only while no reader holds the segment
// (a reader holds a segment reference for as long as it uses the file,
// sendfile included). A closed one is reopened, read-only, on its next use.
// Before a segment's file is removed (retention) or replaced (compaction),
// it is opened and pinned, so a reader that still holds the old segment
// keeps reading the old file.

// segmentFiles bounds the sealed segment files a log keeps open.
// Lock order: segmentFiles.mu before lazyFile.mu.
type segmentFiles struct {
	fs     vfs.FS
	max    int // 0: no bound
	closed atomic.Int64

	mu  sync.Mutex
	lru list.List // guarded by mu: *lazyFile, sealed and open, least recently used first
}

// lazyFile is a segment's file whose handle the log may close while the
// segment is unused and reopen on demand.
type lazyFile struct {
	files *segmentFiles
	seg   *segment // refs > 1: a reader holds it
	name  string

	mu     sync.Mutex
	f      vfs.File // guarded by mu: nil while closed
	pinned bool     // guarded by mu: never closed by the bound (active, or going away)
	gone   bool     // guarded by mu: Close was called

	elem *list.Element // guarded by files.mu: in files.lru while sealed and open
}

// wrap makes f, the open file of seg (at name when it is reopened), a
// lazyFile. Active segments are pinned; sealed ones count against the
// bound at once.
func (sf *segmentFiles) wrap(seg *segment, name string, f vfs.File, pinned bool) *lazyFile {
	lf := &lazyFile{files: sf, seg: seg, name: name, f: f, pinned: pinned}
	if !pinned {
		sf.touch(lf)
	}
	return lf
}

// touch marks lf as just used and closes the least recently used idle
// files beyond the bound.
func (sf *segmentFiles) touch(lf *lazyFile) {
	sf.mu.Lock()
	defer sf.mu.Unlock()
	if lf.elem != nil {
		sf.lru.MoveToBack(lf.elem)
	} else {
		lf.elem = sf.lru.PushBack(lf)
	}
	for e := sf.lru.Front(); e != nil && sf.max > 0 && sf.lru.Len() > sf.max; {
		next := e.Next()
		if v := e.Value.(*lazyFile); v != lf && v.closeIfIdle() {
			sf.lru.Remove(e)
			v.elem = nil
			sf.closed.Add(1)
		}
		e = next
	}
}

// forget takes lf off the list (it was pinned or closed for good).
func (sf *segmentFiles) forget(lf *lazyFile) {
	sf.mu.Lock()
	if lf.elem != nil {
		sf.lru.Remove(lf.elem)
		lf.elem = nil
	}
	sf.mu.Unlock()
}

// Open reports the sealed segment files open now.
func (sf *segmentFiles) Open() int {
	sf.mu.Lock()
	defer sf.mu.Unlock()
	return sf.lru.Len()
}

// closeIfIdle closes the handle when the file is sealed, open and no
// reader holds its segment. Called under files.mu.
func (lf *lazyFile) closeIfIdle() bool {
	lf.mu.Lock()
	defer lf.mu.Unlock()
	if lf.pinned || lf.f == nil || lf.seg.refs.Load() > 1 {
		return false
	}
	_ = lf.f.Close()
	lf.f = nil
	return true
}

// handle returns the open file, reopening it read-only when the bound
// closed it. The caller holds a reference on the segment (or is the only
// user, as recovery is), so the handle stays open while it uses it.
func (lf *lazyFile) handle() (vfs.File, error) {
	lf.mu.Lock()
	if lf.gone {
		lf.mu.Unlock()
		return nil, os.ErrClosed
	}
	f, pinned := lf.f, lf.pinned
	if f == nil {
		var err error
		if f, err = lf.files.fs.OpenFile(lf.name, os.O_RDONLY, 0); err != nil {
			lf.mu.Unlock()
			return nil, err
		}
		lf.f = f
	}
	lf.mu.Unlock()
	if !pinned {
		lf.files.touch(lf)
	}
	return f, nil
}

// seal unpins the file of a segment that stopped being active: it counts
// against the bound from now on.
func (lf *lazyFile) seal() {
	lf.mu.Lock()
	lf.pinned = false
	open := lf.f != nil && !lf.gone
	lf.mu.Unlock()
	if open {
		lf.files.touch(lf)
	}
}

// keepOpen opens (if the bound closed it) and pins the file of a segment
// whose file is about to be removed or replaced: readers holding the
// segment keep the file they were reading until they let go of it.
func (lf *lazyFile) keepOpen() error {
	lf.files.forget(lf) // a touch racing with this may list it again: pinned, it is never closed
	lf.mu.Lock()
	defer lf.mu.Unlock()
	if lf.gone {
		return os.ErrClosed
	}
	lf.pinned = true
	if lf.f == nil {
		f, err := lf.files.fs.OpenFile(lf.name, os.O_RDONLY, 0)
		if err != nil {
			return err
		}
		lf.f = f
	}
	return nil
}

// lazy is the segment's lazyFile (nil for a placeholder of an unreadable
// file).
func (s *segment) lazy() *lazyFile {
	lf, _ := s.file.(*lazyFile)
	return lf
}

func (lf *lazyFile) ReadAt(b []byte, off int64) (int, error) {
	f, err := lf.handle()
	if err != nil {
		return 0, err
	}
	return f.ReadAt(b, off)
}

func (lf *lazyFile) WriteAt(b []byte, off int64) (int, error) {
	f, err := lf.handle()
	if err != nil {
		return 0, err
	}
	return f.WriteAt(b, off)
}

func (lf *lazyFile) Sync() error {
	f, err := lf.handle()
	if err != nil {
		return err
	}
	return f.Sync()
}

// Allocate forwards to the open file (vfs.Allocator).
func (lf *lazyFile) Allocate(off, n int64) error {
	f, err := lf.handle()
	if err != nil {
		return err
	}
	return vfs.Allocate(f, off, n)
}

func (lf *lazyFile) Truncate(size int64) error {
	f, err := lf.handle()
	if err != nil {
		return err
	}
	return f.Truncate(size)
}

func (lf *lazyFile) Size() (int64, error) {
	f, err := lf.handle()
	if err != nil {
		return 0, err
	}
	return f.Size()
}

func (lf *lazyFile) Name() string { return lf.name }

// Close closes the file for good (the segment's last reference is gone).
func (lf *lazyFile) Close() error {
	lf.files.forget(lf)
	lf.mu.Lock()
	defer lf.mu.Unlock()
	lf.gone = true
	if lf.f == nil {
		return nil
	}
	err := lf.f.Close()
	lf.f = nil
	return err
}
