package state

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/dgraph-io/badger/v4"
	badgeropts "github.com/dgraph-io/badger/v4/options"
	"golang.org/x/sys/unix"
)

// A full disk must never crash the daemon. Badger writes its value log and
// memtables through memory maps of files it extends without allocating
// them: on a full filesystem the first store into such a page is a SIGBUS,
// which kills the process (docs/libraries.md#badger-full-disk). So the
// store never lets badger write without room to spare: every write first
// looks at the free space and is refused with ErrDiskFull below the
// reserve — room for a new value-log file (mapped at twice its size), a
// memtable and the tables a flush and a compaction write. A store opened
// on a filesystem already below the reserve is opened read-only (reads
// serve, writes are refused) and reopened for writing by the first write
// that finds the room back.

// The writes badger makes on its own — a memtable flushed to a table,
// above all the one Close makes — are covered by a ballast: a file of
// ballastSize real bytes kept in the store's directory while there is
// room, removed when the free space falls below the reserve (and before
// Close on a full disk), so badger's own writes find room, and written
// again when the space is back.

// ballastName is the ballast file, in the store's directory.
const ballastName = "ferry-ballast"

// ballastSize covers a memtable flush (one table), manifest and value-log
// headers.
const ballastSize = 2 * memTableSize

// DefaultReserve is the free space below which writes are refused.
const DefaultReserve = 2*valueLogFileSize + 8*memTableSize + 8*baseTableSize

// ErrDiskFull is a write refused because the filesystem holding the store
// has less free space than the reserve; it wraps ENOSPC. Nothing of the
// write is applied.
var ErrDiskFull = fmt.Errorf("state: the disk is full (writes are refused until space returns): %w", syscall.ENOSPC)

// freeBytes is the space the filesystem holding dir has for this process.
func freeBytes(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// roomToWrite reports whether a write may go to badger, reopening a store
// opened read-only on a full disk once there is room. The caller holds
// s.wmu.
func (s *Store) roomToWrite() error {
	if s.inMemory {
		return nil
	}
	free, err := s.free(s.dir)
	if err != nil {
		return nil // no answer: badger's own errors stand
	}
	if free < s.reserve {
		s.releaseBallast()
		return ErrDiskFull
	}
	if !s.readOnly {
		s.keepBallast(free)
		return nil
	}
	if err := s.reopenWritable(); err != nil {
		return err
	}
	s.keepBallast(free)
	return nil
}

// keepBallast writes the ballast when it is missing and there is room.
func (s *Store) keepBallast(free uint64) {
	if s.inMemory || s.Volatile || s.ballast || free < s.reserve+ballastSize {
		return
	}
	name := filepath.Join(s.dir, ballastName)
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return
	}
	_, err = f.Write(make([]byte, ballastSize))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(name)
		return
	}
	s.ballast = true
}

// releaseBallast removes the ballast, giving its room to badger.
func (s *Store) releaseBallast() {
	if !s.ballast {
		return
	}
	if err := os.Remove(filepath.Join(s.dir, ballastName)); err == nil || errors.Is(err, fs.ErrNotExist) {
		s.ballast = false
		s.logger.Warn("state: the disk is nearly full; the store's ballast is released for badger's own writes", "dir", s.dir)
	}
}

// reopenWritable replaces the read-only database with a writable one. The
// caller holds s.wmu and a read hold on s.life; readers keep using the old
// handle until the swap, under s.swap.
func (s *Store) reopenWritable() error {
	s.swap.Lock()
	defer s.swap.Unlock()
	if err := s.db.Close(); err != nil { // releases badger's directory lock
		return fmt.Errorf("state: close %s to reopen it for writing: %w", s.dir, err)
	}
	db, err := badger.Open(s.bopts)
	if err != nil {
		if ro, rerr := openReadOnly(s.bopts); rerr == nil {
			s.db = ro // serve reads as before
		}
		return fmt.Errorf("state: reopen %s for writing: %w", s.dir, err)
	}
	s.db, s.readOnly = db, false
	s.logger.Info("state: the disk has room again; the store takes writes", "dir", s.dir)
	return nil
}

// openReadOnly opens the database read-only: a writable open would
// create files badger maps without allocating them. An unclean store that
// needs its memtable cut back cannot be opened so (Open then runs from
// memory, Volatile).
func openReadOnly(bo badger.Options) (*badger.DB, error) {
	return badger.Open(bo.WithReadOnly(true))
}

// ReadOnly reports whether the store is open read-only (a full disk at
// Open; the first write that finds room reopens it).
func (s *Store) ReadOnly() bool {
	s.swap.RLock()
	defer s.swap.RUnlock()
	return s.readOnly
}

// Probe opens the store in dir read-only, verifying every table's
// checksum, and closes it: it reports whether Open would find the store
// sound. A store that needs an unclean tail cut is sound. A missing
// directory is sound (Open creates it). Badger panics on some damaged
// tables in goroutines of its own, which no recover can catch: run Probe
// in a child process and treat its crash as damage.
func Probe(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); errors.Is(err, fs.ErrNotExist) {
		return nil // no store yet
	}
	bo := badgerOptions(dir, defaultOptions()).WithChecksumVerificationMode(badgeropts.OnTableRead)
	db, err := badger.Open(bo.WithReadOnly(true))
	if err != nil && strings.Contains(err.Error(), badger.ErrTruncateNeeded.Error()) {
		return nil // an unclean store: Open cuts its memtable log back (badger wraps without %w)
	}
	if err != nil {
		return fmt.Errorf("state: %s: %w", dir, err)
	}
	return db.Close()
}
