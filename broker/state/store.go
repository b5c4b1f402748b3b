package state

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Sentinel errors.
var (
	// ErrNotFound means the key does not exist.
	ErrNotFound = errors.New("state: not found")
	// ErrClosed is returned by every call on a closed Store.
	ErrClosed = errors.New("state: closed")
	// ErrTxnDone means a Txn was used after its Update returned.
	ErrTxnDone = errors.New("state: transaction used outside its Update")
	// ErrTooLarge means a key or value exceeds MaxKeySize or MaxValueSize.
	ErrTooLarge = errors.New("state: too large")
)

// Size limits, checked before badger sees a write (badger's own errors
// for oversized entries quote the first KiB of the value, which may be a
// secret). Large values are also what 32-bit ARM handles worst.
const (
	MaxKeySize   = 4 << 10
	MaxValueSize = 256 << 10
)

// Store is a small durable key-value store. It is safe for concurrent use.
type Store struct {
	db     *badger.DB // guarded by swap: replaced when a read-only store reopens
	logger *slog.Logger

	dir      string
	bopts    badger.Options
	inMemory bool
	reserve  uint64                       // free bytes below which writes are refused (space.go)
	free     func(string) (uint64, error) // the filesystem's free space (tests replace it)
	readOnly bool                         // guarded by swap and wmu: opened read-only on a full disk
	ballast  bool                         // guarded by wmu: the ballast file is in place (space.go)
	// Rebuilt names the copy of a store that could not be opened and was
	// moved aside (Open, WithRebuildOnDamage); "" when none.
	Rebuilt string
	// Volatile is set when the store had to run in memory (a full disk and
	// an unclean store): nothing written survives a restart.
	Volatile bool

	// swap guards db: readers and the writer hold it for reading while
	// they use db; reopening a read-only store holds it for writing.
	swap sync.RWMutex

	// life guards db against use after Close: every call holds it for
	// reading while it uses db, Close takes it for writing to set closed.
	life   sync.RWMutex
	closed bool // guarded by life

	// wmu serializes writers (Set, Delete, Update): with one commit at a
	// time transactions cannot conflict, so Update runs fn exactly once
	// and is serializable without badger's conflict detection.
	wmu sync.Mutex

	stop chan struct{}  // closed by Close to stop the GC loop
	wg   sync.WaitGroup // the GC loop
}

// Open opens (creating if needed) the store in dir.
func Open(dir string, opts ...Option) (*Store, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if !o.inMemory && dir == "" {
		return nil, errors.New("state: open: empty directory")
	}
	if o.free == nil {
		o.free = freeBytes
	}
	s := &Store{logger: o.logger, stop: make(chan struct{}), dir: dir, inMemory: o.inMemory,
		reserve: o.reserve, free: o.free, bopts: badgerOptions(dir, o)}
	db, err := s.open(o)
	if err != nil {
		return nil, err
	}
	s.db = db
	if !s.inMemory && !s.readOnly && !s.Volatile {
		if _, err := os.Stat(filepath.Join(dir, ballastName)); err == nil {
			s.ballast = true
		} else if free, err := s.free(dir); err == nil {
			s.keepBallast(free)
		}
	}
	if !o.inMemory && o.gcInterval > 0 {
		s.wg.Add(1)
		go s.gcLoop(o.gcInterval)
	}
	return s, nil
}

// open opens the database: read-only on a filesystem already below the
// reserve; when that cannot be (an unclean store, or none yet), in
// memory, said loudly; and, WithRebuildOnDamage, from scratch after moving
// a store badger refuses aside.
func (s *Store) open(o options) (*badger.DB, error) {
	if !s.inMemory {
		if err := os.MkdirAll(s.dir, 0o755); err != nil {
			return nil, fmt.Errorf("state: open %s: %w", s.dir, err)
		}
		if free, err := s.free(s.dir); err == nil && free < s.reserve {
			db, err := openReadOnly(s.bopts)
			if err == nil {
				s.readOnly = true
				s.logger.Error("state: the disk is full; the store is open read-only (device changes, attributes and offsets are refused until space returns)",
					"dir", s.dir, "free_bytes", free, "reserve_bytes", s.reserve)
				return db, nil
			}
			s.Volatile = true
			s.logger.Error("state: the disk is full and the store cannot be opened read-only; running from memory: what is written now is lost at the next restart (restart once there is room)",
				"dir", s.dir, "free_bytes", free, "err", err)
			return badger.Open(badgerOptions("", options{logger: o.logger, inMemory: true}))
		}
	}
	db, err := badger.Open(s.bopts)
	if err == nil || s.inMemory || !o.rebuild {
		if err != nil {
			return nil, fmt.Errorf("state: open %s: %w", s.dir, err)
		}
		return db, nil
	}
	aside, merr := moveAside(s.dir)
	if merr != nil {
		return nil, fmt.Errorf("state: open %s: %w (moving it aside failed: %w)", s.dir, err, merr)
	}
	s.Rebuilt = aside
	s.logger.Error("state: the store cannot be opened; moved aside and started anew (config-listed devices are registered again; devices added at runtime, attributes and consumer-group offsets are in the old copy)",
		"dir", s.dir, "kept_as", aside, "err", err)
	db, err = badger.Open(s.bopts)
	if err != nil {
		return nil, fmt.Errorf("state: open %s anew: %w", s.dir, err)
	}
	return db, nil
}

// moveAside renames a damaged store out of the way, keeping it for
// inspection, and returns its new name.
func moveAside(dir string) (string, error) {
	aside := fmt.Sprintf("%s.broken-%s", dir, time.Now().UTC().Format("20060102T150405.000000000Z"))
	return aside, os.Rename(dir, aside)
}

// MoveAside renames the store directory dir out of the way (a store
// Probe found damaged), for Open to start anew; it returns the new name.
func MoveAside(dir string) (string, error) { return moveAside(dir) }

// Close stops the GC loop, waits for calls in progress and closes the
// database. Later calls return ErrClosed; closing twice is a no-op.
func (s *Store) Close() error {
	s.life.Lock()
	if s.closed {
		s.life.Unlock()
		return nil
	}
	s.closed = true
	s.life.Unlock()

	close(s.stop)
	s.wg.Wait()
	s.wmu.Lock()
	if !s.inMemory && !s.readOnly {
		// Close writes the memtable out as a table: on a nearly full disk,
		// give badger the ballast's room for it.
		if free, err := s.free(s.dir); err == nil && free < s.reserve+ballastSize {
			s.releaseBallast()
		}
	}
	s.wmu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("state: close: %w", err)
	}
	return nil
}

// acquire holds the store open for one call; release with s.life.RUnlock.
func (s *Store) acquire() error {
	s.life.RLock()
	if s.closed {
		s.life.RUnlock()
		return ErrClosed
	}
	return nil
}

// read runs fn with the database for reading.
func (s *Store) read(fn func(db *badger.DB) error) error {
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.life.RUnlock()
	s.swap.RLock()
	defer s.swap.RUnlock()
	return fn(s.db)
}

// write runs fn with the database for writing, one writer at a time, once
// the disk has room (space.go).
func (s *Store) write(fn func(db *badger.DB) error) error {
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.life.RUnlock()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.roomToWrite(); err != nil {
		return err
	}
	s.swap.RLock()
	defer s.swap.RUnlock()
	return fn(s.db)
}

// Get returns a copy of the value of key, or ErrNotFound.
func (s *Store) Get(key []byte) ([]byte, error) {
	var v []byte
	err := s.read(func(db *badger.DB) error {
		return db.View(func(txn *badger.Txn) error {
			var err error
			v, err = get(txn, key)
			return err
		})
	})
	return v, err
}

// Set stores value under key, durably.
func (s *Store) Set(key, value []byte) error {
	if err := checkSize(key, value); err != nil {
		return err
	}
	return s.write(func(db *badger.DB) error {
		if err := db.Update(func(txn *badger.Txn) error { return txn.Set(key, value) }); err != nil {
			return fmt.Errorf("state: set: %w", err)
		}
		return nil
	})
}

// Delete removes key, durably; deleting a missing key is not an error.
func (s *Store) Delete(key []byte) error {
	if err := checkSize(key, nil); err != nil {
		return err
	}
	return s.write(func(db *badger.DB) error {
		if err := db.Update(func(txn *badger.Txn) error { return txn.Delete(key) }); err != nil {
			return fmt.Errorf("state: delete: %w", err)
		}
		return nil
	})
}

// Update runs fn in one atomic, serializable read-write transaction and
// commits its writes durably if fn returns nil; if fn returns an error
// nothing is written and Update returns that error unchanged. Writers are
// serialized, so fn runs exactly once and sees every earlier commit; it
// should be quick and must not call the Store's methods.
func (s *Store) Update(fn func(tx *Txn) error) error {
	var fnErr error
	err := s.write(func(db *badger.DB) error {
		return db.Update(func(btx *badger.Txn) error {
			tx := &Txn{txn: btx}
			fnErr = fn(tx)
			tx.txn = nil
			return fnErr
		})
	})
	switch {
	case errors.Is(err, ErrDiskFull) || errors.Is(err, ErrClosed):
		return err
	case fnErr != nil:
		return fnErr
	case err != nil:
		return fmt.Errorf("state: commit: %w", err)
	}
	return nil
}

// Scan calls fn for every key starting with prefix, in key order, with
// copies of the key and value that fn may keep. It sees one consistent
// snapshot. An error from fn stops the scan and is returned unchanged.
// fn must not call the Store's methods.
func (s *Store) Scan(prefix []byte, fn func(key, value []byte) error) error {
	return s.read(func(db *badger.DB) error { return s.scan(db, prefix, fn) })
}

func (s *Store) scan(db *badger.DB, prefix []byte, fn func(key, value []byte) error) error {
	return db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{
			Prefix:         prefix,
			PrefetchValues: true,
			PrefetchSize:   16,
		})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			v, err := item.ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("state: scan %q: %w", item.Key(), err)
			}
			if err := fn(item.KeyCopy(nil), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// Txn is a read-write transaction inside Update. It is valid only until
// fn returns and must not be shared between goroutines.
type Txn struct {
	txn *badger.Txn // nil once fn has returned
}

// Get returns a copy of the value of key as this transaction sees it
// (its own writes included), or ErrNotFound.
func (t *Txn) Get(key []byte) ([]byte, error) {
	if t.txn == nil {
		return nil, ErrTxnDone
	}
	return get(t.txn, key)
}

// Set stores value under key when the transaction commits. Key and value
// are copied, so the caller may reuse them.
func (t *Txn) Set(key, value []byte) error {
	if t.txn == nil {
		return ErrTxnDone
	}
	if err := checkSize(key, value); err != nil {
		return err
	}
	// Badger keeps the slices until commit.
	if err := t.txn.Set(clone(key), clone(value)); err != nil {
		return fmt.Errorf("state: set: %w", err)
	}
	return nil
}

// Delete removes key when the transaction commits.
func (t *Txn) Delete(key []byte) error {
	if t.txn == nil {
		return ErrTxnDone
	}
	if err := checkSize(key, nil); err != nil {
		return err
	}
	if err := t.txn.Delete(clone(key)); err != nil {
		return fmt.Errorf("state: delete: %w", err)
	}
	return nil
}

func get(txn *badger.Txn, key []byte) ([]byte, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("state: get: %w", err)
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return nil, fmt.Errorf("state: get: %w", err)
	}
	return v, nil
}

func checkSize(key, value []byte) error {
	if len(key) > MaxKeySize {
		return fmt.Errorf("%w: key of %d bytes (limit %d)", ErrTooLarge, len(key), MaxKeySize)
	}
	if len(value) > MaxValueSize {
		return fmt.Errorf("%w: value of %d bytes (limit %d)", ErrTooLarge, len(value), MaxValueSize)
	}
	return nil
}

// clone copies b.
func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}

// gcLoop runs value-log GC every interval until Close.
func (s *Store) gcLoop(interval time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.runGC()
		}
	}
}

// gcOnce runs one value-log GC round, unless the disk is below the
// reserve (GC writes a new value-log file) or the store is read-only.
func (s *Store) gcOnce() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.readOnly || s.Volatile {
		return badger.ErrNoRewrite
	}
	if free, err := s.free(s.dir); err == nil && free < s.reserve {
		return badger.ErrNoRewrite
	}
	s.swap.RLock()
	defer s.swap.RUnlock()
	return s.db.RunValueLogGC(gcDiscardRatio)
}

// runGC rewrites value-log files while there are files worth rewriting
// (badger rewrites at most one per call).
func (s *Store) runGC() {
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		err := s.gcOnce()
		switch {
		case err == nil:
			// One file rewritten; there may be another.
		case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected):
			// Nothing (more) to reclaim, or a GC is already running.
			return
		default:
			s.logger.Warn("state: value-log GC failed", "err", err)
			return
		}
	}
}
