package vfs

import (
	"io"
	"math/rand/v2"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Mem is an in-memory filesystem that tracks durability the way a strict
// POSIX filesystem promises it: a file's bytes are durable once the file is
// synced, and a directory entry (creation, rename, removal) is durable once
// its directory is synced. CrashClone returns what a power cut would leave.
//
// Open files keep working after their name is removed, as on Linux.
type Mem struct {
	mu       sync.Mutex
	root     *memNode
	capacity int64 // 0: unlimited
	used     int64 // bytes held by files reachable or open
}

type memNode struct {
	dir bool
	// For files.
	data   []byte
	synced []byte
	// clean is how long a prefix of data is known to equal synced, so a
	// sync copies only what changed after it (segments only grow).
	clean int
	// For directories: the current and the durable entries.
	entries       map[string]*memNode
	syncedEntries map[string]*memNode
	modTime       time.Time
}

func newDirNode() *memNode {
	return &memNode{dir: true, entries: map[string]*memNode{}, syncedEntries: map[string]*memNode{}}
}

// NewMem returns an empty in-memory filesystem with unlimited capacity.
func NewMem() *Mem { return &Mem{root: newDirNode()} }

// SetCapacity makes the filesystem report size bytes in DiskUsage and fail
// writes past it with ENOSPC. 0 means unlimited.
func (m *Mem) SetCapacity(size int64) {
	m.mu.Lock()
	m.capacity = size
	m.mu.Unlock()
}

// Used returns the bytes held by all files.
func (m *Mem) Used() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.used
}

func splitPath(name string) []string {
	name = path.Clean("/" + strings.ReplaceAll(name, "\\", "/"))
	if name == "/" {
		return nil
	}
	return strings.Split(name[1:], "/")
}

// lookupLocked returns the parent directory of name and the base name.
func (m *Mem) parentLocked(name string) (*memNode, string, error) {
	parts := splitPath(name)
	if len(parts) == 0 {
		return nil, "", os.ErrInvalid
	}
	dir := m.root
	for _, p := range parts[:len(parts)-1] {
		next, ok := dir.entries[p]
		if !ok {
			return nil, "", os.ErrNotExist
		}
		if !next.dir {
			return nil, "", syscall.ENOTDIR
		}
		dir = next
	}
	return dir, parts[len(parts)-1], nil
}

func (m *Mem) nodeLocked(name string) (*memNode, error) {
	parts := splitPath(name)
	n := m.root
	for _, p := range parts {
		if !n.dir {
			return nil, syscall.ENOTDIR
		}
		next, ok := n.entries[p]
		if !ok {
			return nil, os.ErrNotExist
		}
		n = next
	}
	return n, nil
}

// OpenFile implements FS.
func (m *Mem) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir, base, err := m.parentLocked(name)
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	n, ok := dir.entries[base]
	switch {
	case ok && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, pathErr("open", name, os.ErrExist)
	case ok && n.dir:
		if flag&(os.O_WRONLY|os.O_RDWR) != 0 {
			return nil, pathErr("open", name, syscall.EISDIR)
		}
	case !ok && flag&os.O_CREATE == 0:
		return nil, pathErr("open", name, os.ErrNotExist)
	case !ok:
		n = &memNode{modTime: time.Now()}
		dir.entries[base] = n
	}
	if flag&os.O_TRUNC != 0 && !n.dir {
		m.used -= int64(len(n.data))
		n.data = nil
		n.clean = 0
	}
	return &memFile{fs: m, node: n, name: name, writable: flag&(os.O_WRONLY|os.O_RDWR) != 0}, nil
}

// Remove implements FS.
func (m *Mem) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir, base, err := m.parentLocked(name)
	if err != nil {
		return pathErr("remove", name, err)
	}
	n, ok := dir.entries[base]
	if !ok {
		return pathErr("remove", name, os.ErrNotExist)
	}
	if n.dir && len(n.entries) > 0 {
		return pathErr("remove", name, syscall.ENOTEMPTY)
	}
	delete(dir.entries, base)
	m.releaseLocked(n)
	return nil
}

// releaseLocked accounts for the space of a node that is no longer
// reachable. Space of open unlinked files is released at once, which is
// simpler than Linux and harmless for tests.
func (m *Mem) releaseLocked(n *memNode) {
	if !n.dir {
		m.used -= int64(len(n.data))
		return
	}
	for _, c := range n.entries {
		m.releaseLocked(c)
	}
}

// RemoveAll implements FS.
func (m *Mem) RemoveAll(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir, base, err := m.parentLocked(name)
	if err != nil {
		if err == os.ErrNotExist {
			return nil
		}
		return pathErr("removeall", name, err)
	}
	if n, ok := dir.entries[base]; ok {
		delete(dir.entries, base)
		m.releaseLocked(n)
	}
	return nil
}

// Rename implements FS.
func (m *Mem) Rename(oldname, newname string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	odir, obase, err := m.parentLocked(oldname)
	if err != nil {
		return pathErr("rename", oldname, err)
	}
	n, ok := odir.entries[obase]
	if !ok {
		return pathErr("rename", oldname, os.ErrNotExist)
	}
	ndir, nbase, err := m.parentLocked(newname)
	if err != nil {
		return pathErr("rename", newname, err)
	}
	if old, ok := ndir.entries[nbase]; ok && old != n {
		if old.dir && len(old.entries) > 0 {
			return pathErr("rename", newname, syscall.ENOTEMPTY)
		}
		m.releaseLocked(old)
	}
	delete(odir.entries, obase)
	ndir.entries[nbase] = n
	return nil
}

// MkdirAll implements FS.
func (m *Mem) MkdirAll(dir string, perm os.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.root
	for _, p := range splitPath(dir) {
		next, ok := n.entries[p]
		if !ok {
			next = newDirNode()
			n.entries[p] = next
		} else if !next.dir {
			return pathErr("mkdir", dir, syscall.ENOTDIR)
		}
		n = next
	}
	return nil
}

// ReadDir implements FS.
func (m *Mem) ReadDir(dir string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.nodeLocked(dir)
	if err != nil {
		return nil, pathErr("readdir", dir, err)
	}
	if !n.dir {
		return nil, pathErr("readdir", dir, syscall.ENOTDIR)
	}
	names := make([]string, 0, len(n.entries))
	for name := range n.entries {
		names = append(names, name)
	}
	return sortedNames(names), nil
}

// Stat implements FS.
func (m *Mem) Stat(name string) (os.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.nodeLocked(name)
	if err != nil {
		return nil, pathErr("stat", name, err)
	}
	return memInfo{name: path.Base("/" + name), size: int64(len(n.data)), dir: n.dir, mod: n.modTime}, nil
}

// SyncDir implements FS.
func (m *Mem) SyncDir(dir string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.nodeLocked(dir)
	if err != nil {
		return pathErr("syncdir", dir, err)
	}
	if !n.dir {
		return pathErr("syncdir", dir, syscall.ENOTDIR)
	}
	n.syncedEntries = make(map[string]*memNode, len(n.entries))
	for k, v := range n.entries {
		n.syncedEntries[k] = v
	}
	return nil
}

// DiskUsage implements FS.
func (m *Mem) DiskUsage(string) (DiskUsage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.capacity == 0 {
		return DiskUsage{Total: 1 << 40, Free: 1<<40 - uint64(m.used)}, nil
	}
	free := m.capacity - m.used
	if free < 0 {
		free = 0
	}
	return DiskUsage{Total: uint64(m.capacity), Free: uint64(free)}, nil
}

// CrashOptions shapes what CrashClone keeps of data that was not synced.
type CrashOptions struct {
	// Rand, when set, keeps a random prefix of each file's unsynced
	// appended bytes (a torn write) and sometimes replaces that prefix with
	// zeros (an inode whose size reached the disk before its data did).
	// When nil every unsynced byte is lost.
	Rand *rand.Rand
}

// CrashClone returns a new filesystem holding what a power cut at this
// instant would leave: durable directory entries and durable file bytes,
// plus, with opts.Rand, torn remains of unsynced appends. The receiver is
// not changed, so a process still running on it does not disturb the clone.
func (m *Mem) CrashClone(opts CrashOptions) *Mem {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := &Mem{capacity: m.capacity}
	seen := map[*memNode]*memNode{}
	c.root = c.cloneDurableLocked(m.root, opts, seen)
	return c
}

func (c *Mem) cloneDurableLocked(n *memNode, opts CrashOptions, seen map[*memNode]*memNode) *memNode {
	if done, ok := seen[n]; ok {
		return done
	}
	if n.dir {
		d := newDirNode()
		seen[n] = d
		for name, child := range n.syncedEntries {
			cc := c.cloneDurableLocked(child, opts, seen)
			d.entries[name] = cc
			d.syncedEntries[name] = cc
		}
		return d
	}
	data := append([]byte(nil), n.synced...)
	if opts.Rand != nil && len(n.data) > len(n.synced) && string(n.data[:len(n.synced)]) == string(n.synced) {
		extra := n.data[len(n.synced):]
		keep := opts.Rand.IntN(len(extra) + 1)
		if opts.Rand.IntN(4) == 0 {
			data = append(data, make([]byte, keep)...)
		} else {
			data = append(data, extra[:keep]...)
		}
	}
	f := &memNode{data: data, synced: append([]byte(nil), data...), clean: len(data), modTime: n.modTime}
	c.used += int64(len(data))
	seen[n] = f
	return f
}

type memFile struct {
	fs       *Mem
	node     *memNode
	name     string
	writable bool
	closed   bool
}

func (f *memFile) Name() string { return f.name }

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return 0, pathErr("read", f.name, os.ErrClosed)
	}
	if off < 0 {
		return 0, pathErr("read", f.name, os.ErrInvalid)
	}
	if off >= int64(len(f.node.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.node.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return 0, pathErr("write", f.name, os.ErrClosed)
	}
	if !f.writable {
		return 0, pathErr("write", f.name, syscall.EBADF)
	}
	end := off + int64(len(p))
	grow := end - int64(len(f.node.data))
	if grow > 0 && f.fs.capacity > 0 && f.fs.used+grow > f.fs.capacity {
		return 0, pathErr("write", f.name, syscall.ENOSPC)
	}
	if grow > 0 {
		f.node.data = append(f.node.data, make([]byte, grow)...)
		f.fs.used += grow
	}
	copy(f.node.data[off:], p)
	f.node.clean = min(f.node.clean, int(off))
	f.node.modTime = time.Now()
	return len(p), nil
}

func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return pathErr("sync", f.name, os.ErrClosed)
	}
	f.node.synced = append(f.node.synced[:f.node.clean], f.node.data[f.node.clean:]...)
	f.node.clean = len(f.node.data)
	return nil
}

// Allocate implements Allocator: the reservation changes nothing visible.
func (f *memFile) Allocate(off, n int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return pathErr("allocate", f.name, os.ErrClosed)
	}
	if !f.writable {
		return pathErr("allocate", f.name, os.ErrPermission)
	}
	if off < 0 || n <= 0 {
		return pathErr("allocate", f.name, os.ErrInvalid)
	}
	return nil
}

func (f *memFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return pathErr("truncate", f.name, os.ErrClosed)
	}
	cur := int64(len(f.node.data))
	switch {
	case size < cur:
		f.node.data = f.node.data[:size:size]
		f.node.clean = min(f.node.clean, int(size))
	case size > cur:
		f.node.data = append(f.node.data, make([]byte, size-cur)...)
	}
	f.fs.used += size - cur
	return nil
}

func (f *memFile) Size() (int64, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	return int64(len(f.node.data)), nil
}

func (f *memFile) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return pathErr("close", f.name, os.ErrClosed)
	}
	f.closed = true
	return nil
}

type memInfo struct {
	name string
	size int64
	dir  bool
	mod  time.Time
}

func (i memInfo) Name() string       { return i.name }
func (i memInfo) Size() int64        { return i.size }
func (i memInfo) ModTime() time.Time { return i.mod }
func (i memInfo) IsDir() bool        { return i.dir }
func (i memInfo) Sys() any           { return nil }
func (i memInfo) Mode() os.FileMode {
	if i.dir {
		return os.ModeDir | 0o755
	}
	return 0o644
}
