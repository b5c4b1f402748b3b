package commitlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

const (
	suffixLog       = ".log"
	suffixIndex     = ".index"
	suffixTimeIndex = ".timeindex"
	suffixCleaned   = ".cleaned"
	indexEntrySize  = 8
	timeEntrySize   = 12
)

// segmentName returns "<base, 20 digits><suffix>", Kafka's naming.
func segmentName(base int64, suffix string) string {
	return fmt.Sprintf("%020d%s", base, suffix)
}

// parseSegmentName returns the base offset of a ".log" file name.
func parseSegmentName(name string) (int64, bool) {
	if !strings.HasSuffix(name, suffixLog) || len(name) != 20+len(suffixLog) {
		return 0, false
	}
	base, err := strconv.ParseInt(name[:20], 10, 64)
	return base, err == nil && base >= 0
}

type indexEntry struct {
	rel uint32 // last offset of the batch at pos, relative to the segment base
	pos uint32
}

type timeEntry struct {
	ts  int64  // largest timestamp up to and including rel
	rel uint32 // last offset of the batch that brought it, relative to the base
}

// segment is one .log file with its sparse offset and time indexes.
//
// The active segment (the last one) keeps its index entries in memory and
// writes them out when it is sealed or the log closes; sealed segments
// search their index files with positioned reads, so their indexes cost no
// memory. Readers hold a reference while they use the file; a deleted or
// replaced segment's file is closed when the last reference goes.
type segment struct {
	dir  string
	base int64
	file vfs.File
	refs atomic.Int32

	// Written by the committer (or by recovery before the partition is
	// shared), read by everyone.
	size     atomic.Int64 // bytes written
	readable atomic.Int64 // bytes readers may see: durable under the flush policy
	next     atomic.Int64 // offset after the last batch written
	maxTs    atomic.Int64 // largest record timestamp written, -1 when unknown
	// readMaxTs is the largest record timestamp in the readable bytes, -1
	// when none (Partition.MaxTimestamp): maxTs moves when the committer
	// writes a batch, readMaxTs when the publisher makes it readable.
	readMaxTs atomic.Int64
	logTime   atomic.Int64 // log-clock ms of the last append
	// allocated is how far the committer has reserved the active file's
	// blocks ahead of its writes (preallocate); owned by the committer.
	allocated int64
	sealed    atomic.Bool
	// indexGone is set when compaction replaces the segment: its index
	// files may then describe the new file, so lookups scan instead.
	indexGone atomic.Bool
	// indexBad is set when a lookup found an index entry that does not
	// describe the batch it points at; lookups scan from the start until
	// repairIndex has rebuilt the index and cleared it.
	indexBad atomic.Bool
	// repairMu serializes index repairs of this segment (repair.go),
	// including their scans; taken before filesMu.
	repairMu sync.Mutex
	// filesMu serializes changing this segment's index files or its
	// in-memory index wholesale: sealing it (roll, clean close), a
	// compaction swapping it, a repair installing a rebuilt index,
	// retention removing its files. Held across those small writes and
	// removals only, never across a scan; taken before Partition.segMu.
	filesMu sync.Mutex

	// holes are the damaged ranges reads pass over (damage.go).
	holes holes

	idx struct {
		sync.RWMutex
		offsets []indexEntry // in memory while active
		times   []timeEntry
		onDisk  bool // sealed: search the files instead
	}

	// Committer-owned.
	bytesSinceIndex int64
	createdLog      int64 // log-clock ms of the first append, for segment_age
}

func (s *segment) path(suffix string) string {
	return filepath.Join(s.dir, segmentName(s.base, suffix))
}

func (s *segment) acquire() { s.refs.Add(1) }

func (s *segment) release() {
	if s.refs.Add(-1) == 0 {
		_ = s.file.Close()
	}
}

// addIndexEntries records index entries for a batch written at pos, as the
// committer and recovery do for the active segment.
func (s *segment) addIndexEntries(h BatchHeader, pos int64, interval int) {
	maxTs := s.maxTs.Load()
	if h.MaxTimestamp > maxTs {
		maxTs = h.MaxTimestamp
		s.maxTs.Store(maxTs)
	}
	s.bytesSinceIndex += h.Size()
	if pos != 0 && s.bytesSinceIndex < int64(interval) {
		return
	}
	s.bytesSinceIndex = 0
	rel := uint32(h.LastOffset() - s.base)
	s.idx.Lock()
	s.idx.offsets = append(s.idx.offsets, indexEntry{rel: rel, pos: uint32(pos)})
	if n := len(s.idx.times); maxTs >= 0 && (n == 0 || maxTs > s.idx.times[n-1].ts) {
		s.idx.times = append(s.idx.times, timeEntry{ts: maxTs, rel: rel})
	}
	s.idx.Unlock()
}

// encodeIndexes serializes the in-memory indexes, adding a final time entry
// for the segment's largest timestamp as Kafka does when a segment rolls.
func (s *segment) encodeIndexes() (offsets, times []byte) {
	s.idx.RLock()
	defer s.idx.RUnlock()
	offsets = make([]byte, 0, len(s.idx.offsets)*indexEntrySize)
	for _, e := range s.idx.offsets {
		offsets = binary.BigEndian.AppendUint32(offsets, e.rel)
		offsets = binary.BigEndian.AppendUint32(offsets, e.pos)
	}
	tes := s.idx.times
	if maxTs, last := s.maxTs.Load(), s.next.Load()-1; maxTs >= 0 && last >= s.base &&
		(len(tes) == 0 || maxTs > tes[len(tes)-1].ts) {
		tes = append(tes[:len(tes):len(tes)], timeEntry{ts: maxTs, rel: uint32(last - s.base)})
	}
	times = make([]byte, 0, len(tes)*timeEntrySize)
	for _, e := range tes {
		times = binary.BigEndian.AppendUint64(times, uint64(e.ts))
		times = binary.BigEndian.AppendUint32(times, e.rel)
	}
	return offsets, times
}

// writeIndexes replaces both index files atomically with the in-memory
// entries.
func (s *segment) writeIndexes(fs vfs.FS) error {
	offsets, times := s.encodeIndexes()
	if err := vfs.WriteFileAtomic(fs, s.path(suffixIndex), offsets); err != nil {
		return err
	}
	return vfs.WriteFileAtomic(fs, s.path(suffixTimeIndex), times)
}

// dropMemoryIndex switches a sealed segment to searching its index files.
func (s *segment) dropMemoryIndex() {
	s.idx.Lock()
	s.idx.offsets, s.idx.times, s.idx.onDisk = nil, nil, true
	s.idx.Unlock()
}

// lookupPos returns the index entry to start a search for offset from:
// the last indexed batch whose last offset (base+rel) is below offset.
// ok is false when there is none (or the index is not to be trusted), and
// the search starts at position 0.
func (s *segment) lookupPos(fs vfs.FS, offset int64) (e indexEntry, ok bool) {
	rel := offset - s.base
	if rel <= 0 || s.indexGone.Load() || s.indexBad.Load() {
		return indexEntry{}, false
	}
	s.idx.RLock()
	onDisk := s.idx.onDisk
	if !onDisk {
		es := s.idx.offsets
		i := sort.Search(len(es), func(i int) bool { return int64(es[i].rel) >= rel })
		if i > 0 {
			e, ok = es[i-1], true
		}
		s.idx.RUnlock()
		return e, ok
	}
	s.idx.RUnlock()
	b, ok := searchIndexFile(fs, s.path(suffixIndex), indexEntrySize, func(e []byte) bool {
		return int64(binary.BigEndian.Uint32(e)) >= rel
	})
	if !ok {
		return indexEntry{}, false
	}
	return indexEntry{rel: binary.BigEndian.Uint32(b), pos: binary.BigEndian.Uint32(b[4:])}, true
}

// lookupTime returns the time index entry to start a search for the first
// record with timestamp >= ts from: the last entry whose timestamp is below
// ts, so every record up to its offset is older. ok is false when there is
// none (or the index is not to be trusted): the search starts at the base.
func (s *segment) lookupTime(fs vfs.FS, ts int64) (e timeEntry, ok bool) {
	if s.indexGone.Load() || s.indexBad.Load() {
		return timeEntry{}, false
	}
	s.idx.RLock()
	onDisk := s.idx.onDisk
	if !onDisk {
		es := s.idx.times
		i := sort.Search(len(es), func(i int) bool { return es[i].ts >= ts })
		if i > 0 {
			e, ok = es[i-1], true
		}
		s.idx.RUnlock()
		return e, ok
	}
	s.idx.RUnlock()
	b, ok := searchIndexFile(fs, s.path(suffixTimeIndex), timeEntrySize, func(e []byte) bool {
		return int64(binary.BigEndian.Uint64(e)) >= ts
	})
	if !ok {
		return timeEntry{}, false
	}
	return timeEntry{ts: int64(binary.BigEndian.Uint64(b)), rel: binary.BigEndian.Uint32(b[8:])}, true
}

// searchIndexFile binary-searches fixed-size entries in an index file for
// the first entry where ge is true and returns the entry before it. ok is
// false when there is no such earlier entry (or the file is unreadable, in
// which case the caller scans from the segment start). The entry is not
// checked here: the caller validates it against the batch it names.
func searchIndexFile(fs vfs.FS, name string, size int, ge func([]byte) bool) ([]byte, bool) {
	f, err := fs.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	fsize, err := f.Size()
	if err != nil {
		return nil, false
	}
	n := int(fsize / int64(size))
	buf := make([]byte, size)
	var readErr error
	i := sort.Search(n, func(i int) bool {
		if _, err := f.ReadAt(buf, int64(i*size)); err != nil {
			readErr = err
			return true
		}
		return ge(buf)
	})
	if readErr != nil || i == 0 {
		return nil, false
	}
	if _, err := f.ReadAt(buf, int64((i-1)*size)); err != nil {
		return nil, false
	}
	return buf, true
}

// readHeaderAt reads the batch header at pos.
func readHeaderAt(f vfs.File, pos int64, buf []byte) (BatchHeader, error) {
	buf = buf[:BatchHeaderSize]
	if _, err := f.ReadAt(buf, pos); err != nil {
		if errors.Is(err, io.EOF) {
			return BatchHeader{}, fmt.Errorf("%w: short header at %d", ErrCorruptBatch, pos)
		}
		return BatchHeader{}, err
	}
	h, _ := ParseBatchHeader(buf)
	return h, h.checkFraming()
}

// errBadIndex marks an index entry that does not describe the batch it
// points at (a wrong position, offset or timestamp).
var errBadIndex = errors.New("commitlog: index entry does not match the segment")

// locate returns the position and header of the first batch whose last
// offset is >= offset, reading no further than limit; pos is limit when
// there is none. It starts at the offset index's entry for offset after
// checking that the entry names the batch found there, and fails with
// errBadIndex when it does not (the caller repairs the index and scans from
// the start). Other errors are read or framing errors at pos.
func (s *segment) locate(fs vfs.FS, offset, limit int64) (int64, BatchHeader, error) {
	e, ok := s.lookupPos(fs, offset)
	if !ok {
		return s.scanFrom(0, offset, limit)
	}
	pos := int64(e.pos)
	if h, ok := s.holes.at(pos); ok {
		return s.scanFrom(h.end, offset, limit)
	}
	if pos+BatchHeaderSize > limit {
		if s.sealed.Load() && limit == s.size.Load() {
			return 0, BatchHeader{}, fmt.Errorf("%w: offset index entry %d@%d points past the end %d", errBadIndex, s.base+int64(e.rel), pos, limit)
		}
		// An entry of a batch readers may not see yet (unpublished, or
		// past damage): the offset, which lies after it, is not readable.
		return limit, BatchHeader{}, nil
	}
	var buf [BatchHeaderSize]byte
	h, err := readHeaderAt(s.file, pos, buf[:])
	switch {
	case errors.Is(err, ErrCorruptBatch):
		return 0, BatchHeader{}, fmt.Errorf("%w: offset index entry %d@%d: %w", errBadIndex, s.base+int64(e.rel), pos, err)
	case err != nil:
		return pos, h, err
	case h.LastOffset() != s.base+int64(e.rel):
		return 0, BatchHeader{}, fmt.Errorf("%w: offset index entry names offset %d at %d, the batch there ends at %d",
			errBadIndex, s.base+int64(e.rel), pos, h.LastOffset())
	}
	// The entry's batch ends below offset: search on from the next one.
	return s.scanFrom(pos+h.Size(), offset, limit)
}

// scanFrom walks batch headers from pos (a batch boundary) to the first
// batch whose last offset is >= offset, reading no further than limit.
func (s *segment) scanFrom(pos, offset, limit int64) (int64, BatchHeader, error) {
	var buf [BatchHeaderSize]byte
	for pos+BatchHeaderSize <= limit {
		if h, ok := s.holes.at(pos); ok {
			pos = h.end // damaged: passed over
			continue
		}
		h, err := readHeaderAt(s.file, pos, buf[:])
		if err != nil {
			return pos, h, err
		}
		if h.LastOffset() >= offset {
			return pos, h, nil
		}
		pos += h.Size()
	}
	return limit, BatchHeader{}, nil
}
