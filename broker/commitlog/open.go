package commitlog

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

const stateFile = "state.json"

// partitionState is a partition's small metadata file, replaced atomically
// when the partition opens (marking it unclean), when a segment rolls, and
// at clean shutdown (marking it clean with what a reopen needs to skip
// scanning).
type partitionState struct {
	Version       int              `json:"version"`
	Clean         bool             `json:"clean"`
	NextOffset    int64            `json:"next_offset"`
	ActiveBase    int64            `json:"active_base"`
	ActiveSize    int64            `json:"active_size"`
	ActiveMaxTs   int64            `json:"active_max_timestamp"`
	ActiveCreated int64            `json:"active_created_log_ms"`
	LogClockMs    int64            `json:"log_clock_ms"`
	SegmentLogMs  map[string]int64 `json:"segment_log_ms"`
	CleanedTo     int64            `json:"cleaned_to"`
}

func readState(fs vfs.FS, dir string) (partitionState, error) {
	var st partitionState
	b, err := vfs.ReadFile(fs, filepath.Join(dir, stateFile))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("commitlog: %s: %w", filepath.Join(dir, stateFile), err)
	}
	return st, nil
}

// writeState replaces the partition's state file. clean is only true at
// shutdown, after every segment is durable.
func (p *Partition) writeState(clean bool) error {
	p.segMu.RLock()
	segs := append([]*segment(nil), p.segs...)
	p.segMu.RUnlock()
	if len(segs) == 0 {
		return fmt.Errorf("commitlog: topic %q partition %d: write %s: %w", p.topic.name, p.id, stateFile, p.goneErr())
	}
	active := segs[len(segs)-1]
	st := partitionState{
		Version:       1,
		Clean:         clean,
		NextOffset:    p.next,
		ActiveBase:    active.base,
		ActiveSize:    active.size.Load(),
		ActiveMaxTs:   active.maxTs.Load(),
		ActiveCreated: active.createdLog,
		LogClockMs:    p.log.logNowMs(),
		SegmentLogMs:  make(map[string]int64, len(segs)),
		CleanedTo:     p.cleanedTo.Load(),
	}
	for _, s := range segs {
		st.SegmentLogMs[strconv.FormatInt(s.base, 10)] = s.logTime.Load()
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("commitlog: topic %q partition %d: encode %s: %w", p.topic.name, p.id, stateFile, err)
	}
	if err := vfs.WriteFileAtomic(p.log.opts.fs, filepath.Join(p.dir, stateFile), b); err != nil {
		return fmt.Errorf("commitlog: topic %q partition %d: write %s: %w", p.topic.name, p.id, stateFile, err)
	}
	return nil
}

// openPartition loads a partition directory. After a clean shutdown it
// reads only metadata; after an unclean one it validates the active
// segment (the only one that may hold unsynced bytes: a segment is fsynced
// with its indexes before the next one is created) and truncates it at the
// first invalid or partial batch. Sealed segments get an O(1) index check
// and are rescanned only when that fails; damage found there is reported
// and skipped, never fatal.
func (l *Log) openPartition(t *Topic, id int32, dir string, st partitionState, stErr error) (*Partition, error) {
	fs := l.opts.fs
	cfg := t.Config()
	p := &Partition{topic: t, id: id, dir: dir, log: l, notify: make(chan struct{})}
	p.report = RecoveryReport{Topic: t.name, Partition: id}
	fail := func(what string, err error) (*Partition, error) {
		releaseAll(p.segs)
		return nil, fmt.Errorf("commitlog: topic %q partition %d: %s: %w", t.name, id, what, err)
	}
	names, err := fs.ReadDir(dir)
	if err != nil {
		return fail("list "+dir, err)
	}
	var bases []int64
	have := map[string]bool{}
	for _, n := range names {
		have[n] = true
		if b, ok := parseSegmentName(n); ok {
			bases = append(bases, b)
		}
	}
	for _, n := range names {
		stale := strings.HasSuffix(n, ".tmp") || strings.HasSuffix(n, suffixCleaned)
		if base, ok := indexBase(n); ok && !have[segmentName(base, suffixLog)] {
			stale = true // index of a segment that is gone
		}
		if stale {
			if err := fs.Remove(filepath.Join(dir, n)); err != nil {
				return fail("remove leftover "+n, err)
			}
			l.noteRepair(slog.LevelWarn, Repair{Kind: RepairLeftover, Topic: t.name, Partition: id,
				Detail: fmt.Sprintf("removed %s, left by an interrupted index write, compaction or segment removal", filepath.Join(dir, n))})
		}
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	clean := stErr == nil && st.Clean
	p.report.Clean = clean
	if len(bases) == 0 {
		base := int64(0)
		if stErr == nil {
			base = st.NextOffset
		}
		seg, err := l.createSegment(dir, base)
		if err != nil {
			return fail("create the first segment", err)
		}
		p.segs = []*segment{seg}
		if err := fs.SyncDir(dir); err != nil {
			return fail("sync "+dir, err)
		}
		p.next = base
	}
	for i := 0; i < len(bases); i++ {
		base := bases[i]
		last := i == len(bases)-1
		seg := &segment{dir: dir, base: base}
		seg.refs.Store(1)
		seg.maxTs.Store(-1)
		seg.logTime.Store(-1)
		if ms, ok := st.SegmentLogMs[strconv.FormatInt(base, 10)]; ok && stErr == nil {
			seg.logTime.Store(ms)
		}
		flag := os.O_RDONLY
		if last {
			flag = os.O_RDWR
		}
		f, err := fs.OpenFile(seg.path(suffixLog), flag, 0)
		if err != nil {
			if last {
				return fail("open the active segment", err)
			}
			p.unreadableSealed(seg, bases[i+1], fmt.Errorf("open: %w", err))
			continue
		}
		seg.file = l.files.wrap(seg, seg.path(suffixLog), f, last)
		size, err := f.Size()
		if err != nil {
			if last {
				_ = f.Close()
				return fail("size the active segment", err)
			}
			_ = f.Close()
			p.unreadableSealed(seg, bases[i+1], fmt.Errorf("size: %w", err))
			continue
		}
		seg.size.Store(size)
		p.segs = append(p.segs, seg)
		if !last {
			seg.next.Store(bases[i+1])
			p.openSealed(seg, size, cfg.IndexIntervalBytes)
			if cfg.Cleanup.compacts() && seg.readable.Load() == size {
				// A merge interrupted after its rename leaves the run's
				// later segments behind, overlapping this one.
				if end, err := p.segmentEnd(seg, size); err == nil {
					for i+2 < len(bases) && p.mergeLeftover(bases[i+1], end) {
						bases = slices.Delete(bases, i+1, i+2)
					}
					seg.next.Store(bases[i+1])
				}
			}
			if cfg.Cleanup.compacts() || seg.readable.Load() < size {
				continue // compaction leaves gaps; damage is reported already
			}
			end, err := p.segmentEnd(seg, size)
			if err != nil || end >= bases[i+1] {
				continue
			}
			seg.next.Store(end)
			if i+1 == len(bases)-1 && p.moveStray(bases[i+1], end) {
				fresh, err := l.createSegment(dir, end)
				if err != nil {
					return fail("create the active segment", err)
				}
				p.segs = append(p.segs, fresh)
				if err := fs.SyncDir(dir); err != nil {
					return fail("sync "+dir, err)
				}
				p.next = end
				break
			}
			p.recordDamage(RepairGap, Damage{Segment: seg.base, Position: size, FirstOffset: end, NextOffset: bases[i+1],
				Reason: "no segment file holds them: a file is gone"}, "offsets missing between segments")
			continue
		}
		if err := p.openActive(seg, size, clean, st, cfg.IndexIntervalBytes); err != nil {
			return fail("recover the active segment", err)
		}
	}
	for _, s := range p.segs {
		s.readMaxTs.Store(s.maxTs.Load()) // recovered: every byte kept is readable
	}
	p.hwm.Store(p.next)
	p.logStart.Store(p.segs[0].base)
	p.cleanedTo.Store(st.CleanedTo)
	var total int64
	for _, s := range p.segs {
		total += s.size.Load()
	}
	p.bytes.Store(total)
	return p, nil
}

// segmentEnd is the offset after the last batch of seg (size bytes),
// found from its offset index's last entry by walking the few batch
// headers after it.
func (p *Partition) segmentEnd(seg *segment, size int64) (int64, error) {
	pos := int64(0)
	if e, ok := seg.lookupPos(p.log.opts.fs, math.MaxInt64); ok {
		pos = int64(e.pos)
	}
	end := seg.base
	var hb [BatchHeaderSize]byte
	for pos+BatchHeaderSize <= size {
		if hl, ok := seg.holes.at(pos); ok {
			end, pos = max(end, hl.next), hl.end
			continue
		}
		h, err := readHeaderAt(seg.file, pos, hb[:])
		if err != nil {
			return end, err
		}
		end, pos = h.NextOffset(), pos+h.Size()
	}
	return end, nil
}

// moveStray moves the segment file at base aside when it is empty and
// starts past the partition's end: not a file Ferry wrote (Ferry starts a
// segment exactly where the last one ends), which would otherwise move the
// high watermark. It reports whether it did.
func (p *Partition) moveStray(base, end int64) bool {
	fs := p.log.opts.fs
	name := filepath.Join(p.dir, segmentName(base, suffixLog))
	fi, err := fs.Stat(name)
	if err != nil || fi.Size() != 0 {
		return false
	}
	aside := name + ".stray"
	if err := fs.Rename(name, aside); err != nil {
		return false
	}
	_ = fs.SyncDir(p.dir)
	p.log.noteRepair(slog.LevelWarn, p.repair(RepairStray,
		"moved aside an empty segment file at offset %d, past the partition's end %d, that Ferry did not write (kept as %s)", base, end, aside))
	return true
}

// unreadableSealed keeps a sealed segment that cannot be opened or sized
// in the list as an empty, damaged placeholder: its offsets are reported
// lost, reads skip to the next segment, and retention deletes it in turn.
func (p *Partition) unreadableSealed(seg *segment, next int64, cause error) {
	l := p.log
	seg.file = unreadableFile{name: seg.path(suffixLog), err: cause}
	seg.sealed.Store(true)
	seg.indexGone.Store(true) // its index files describe a file we cannot read
	seg.next.Store(next)
	seg.idx.onDisk = true
	lost := int64(-1)
	if fi, err := l.opts.fs.Stat(seg.path(suffixLog)); err == nil {
		lost = fi.Size()
	}
	p.recordDamage(RepairDamage, Damage{Segment: seg.base, LostBytes: lost, FirstOffset: seg.base, NextOffset: next, Reason: cause.Error()},
		"cannot read a sealed segment, serving the rest of the partition")
	p.segs = append(p.segs, seg)
}

// unreadableFile stands in for a segment file that could not be opened:
// every operation fails with the reason.
type unreadableFile struct {
	name string
	err  error
}

func (f unreadableFile) ReadAt([]byte, int64) (int, error)  { return 0, f.err }
func (f unreadableFile) WriteAt([]byte, int64) (int, error) { return 0, f.err }
func (f unreadableFile) Close() error                       { return nil }
func (f unreadableFile) Sync() error                        { return f.err }
func (f unreadableFile) Truncate(int64) error               { return f.err }
func (f unreadableFile) Size() (int64, error)               { return 0, f.err }
func (f unreadableFile) Name() string                       { return f.name }

func indexBase(name string) (int64, bool) {
	for _, suf := range []string{suffixIndex, suffixTimeIndex} {
		if strings.HasSuffix(name, suf) && len(name) == 20+len(suf) {
			b, err := strconv.ParseInt(name[:20], 10, 64)
			return b, err == nil
		}
	}
	return 0, false
}

// openSealed checks a sealed segment's indexes and rebuilds them (with a
// full validation scan) when they are missing or wrong. Nothing here is
// fatal: damage is reported and skipped, and indexes that cannot be
// written are kept in memory.
func (p *Partition) openSealed(seg *segment, size int64, interval int) {
	seg.sealed.Store(true)
	seg.readable.Store(size)
	seg.idx.onDisk = true
	err := p.checkIndexes(seg, size)
	if err == nil {
		return
	}
	res := scanSegment(seg, size, false, interval)
	seg.next.Store(max(seg.next.Load(), res.next))
	p.installHoles(seg, res)
	p.report.IndexRebuilt = append(p.report.IndexRebuilt, seg.base)
	p.report.ScannedBytes += res.validBytes
	l := p.log
	l.stats.indexRebuilds.Add(1)
	l.noteRepair(slog.LevelWarn, p.repair(RepairIndexRebuilt, "rebuilt the index of segment %d from a scan: %v", seg.base, err))
	if res.stop != nil {
		seg.readable.Store(res.validBytes)
		p.recordDamage(RepairDamage, Damage{Segment: seg.base, Position: res.validBytes, LostBytes: size - res.validBytes,
			FirstOffset: res.next, NextOffset: seg.next.Load(), Reason: res.stop.Error()},
			"damaged sealed segment, its rest passed over (no valid batch follows)")
	}
	if err := seg.writeIndexes(l.opts.fs); err != nil {
		// The scan left the entries in memory: serve from them, and let
		// the next open try again.
		p.report.IndexUnwritten = append(p.report.IndexUnwritten, seg.base)
		l.stats.indexWriteErrors.Add(1)
		l.opts.logger.Warn("commitlog: cannot write a rebuilt segment index, keeping it in memory",
			"topic", p.topic.name, "partition", p.id, "segment", seg.base, "err", err)
		return
	}
	seg.dropMemoryIndex()
}

// openActive loads the active segment. After a clean shutdown it is
// trusted once its indexes and the batches they do not cover (from the
// last entry to the end, CRC included) check out; otherwise it is
// scanned. After an unclean shutdown the scan truncates the unsynced tail
// at the first invalid or partial batch. After a clean one nothing was
// unsynced: damage at the end is kept and passed over like any other, and
// offsets continue from the clean state, so none is ever given twice.
func (p *Partition) openActive(seg *segment, size int64, clean bool, st partitionState, interval int) error {
	l := p.log
	seg.createdLog = st.ActiveCreated
	trusted := clean && st.ActiveBase == seg.base && st.ActiveSize == size
	if trusted {
		err := p.loadActiveIndexes(seg, size)
		if err == nil {
			err = checkTail(seg, size, st.NextOffset)
		}
		if err == nil {
			seg.maxTs.Store(st.ActiveMaxTs)
			seg.next.Store(st.NextOffset)
			seg.readable.Store(size)
			p.next = st.NextOffset
			return nil
		}
		p.report.IndexRebuilt = append(p.report.IndexRebuilt, seg.base)
		l.stats.indexRebuilds.Add(1)
		l.noteRepair(slog.LevelWarn, p.repair(RepairIndexRebuilt,
			"active segment %d failed its check after a clean shutdown, rescanned: %v", seg.base, err))
	}
	res := scanSegment(seg, size, true, interval)
	p.installHoles(seg, res)
	p.report.ScannedBytes += res.validBytes
	next := res.next
	switch {
	case res.validBytes < size && trusted:
		// Durable, acknowledged bytes that no longer check out: damage.
		h := hole{pos: res.validBytes, end: size, first: res.next, next: max(st.NextOffset, res.next)}
		if seg.holes.add(h) {
			p.reportHole(seg, h, res.stop)
		}
		next = h.next
	case res.validBytes < size:
		if err := seg.file.Truncate(res.validBytes); err != nil {
			return fmt.Errorf("truncate segment %d to %d bytes: %w", seg.base, res.validBytes, err)
		}
		if err := seg.file.Sync(); err != nil {
			return fmt.Errorf("sync segment %d after truncation: %w", seg.base, err)
		}
		p.report.TruncatedBytes = size - res.validBytes
		if res.stop != nil {
			p.report.TruncateReason = res.stop.Error()
		}
		what := "cut the unsynced tail left by an unclean shutdown"
		if clean {
			what = "cut bytes past the end recorded at a clean shutdown"
		}
		l.noteRepair(slog.LevelWarn, p.repair(RepairTruncated, "%s: %d bytes of segment %d from position %d (next offset %d): %v",
			what, size-res.validBytes, seg.base, res.validBytes, res.next, res.stop))
		size = res.validBytes
	}
	if clean && st.ActiveBase == seg.base && next < st.NextOffset {
		// Fewer offsets than were acknowledged at the clean shutdown (the
		// file was cut short): they are lost, reported, and never given
		// again; the next append starts a new segment at the clean next.
		p.recordDamage(RepairDamage, Damage{Segment: seg.base, Position: size, FirstOffset: next, NextOffset: st.NextOffset,
			Reason: fmt.Sprintf("the segment ends at offset %d, the clean shutdown recorded %d", next, st.NextOffset)},
			"active segment lost offsets acknowledged before a clean shutdown")
		if size == 0 { // nothing left in it: start over at the clean next
			_ = seg.file.Close()
			if err := l.opts.fs.Remove(seg.path(suffixLog)); err != nil {
				return fmt.Errorf("remove the empty segment %d: %w", seg.base, err)
			}
			fresh, err := l.createSegment(p.dir, st.NextOffset)
			if err != nil {
				return fmt.Errorf("create a segment at %d: %w", st.NextOffset, err)
			}
			if err := l.opts.fs.SyncDir(p.dir); err != nil {
				return fmt.Errorf("sync %s: %w", p.dir, err)
			}
			p.segs[len(p.segs)-1] = fresh
			p.next = st.NextOffset
			return nil
		}
		seg.size.Store(size)
		seg.readable.Store(size)
		seg.next.Store(next) // what the segment holds; the gap lies between it and the next one
		p.next = st.NextOffset
		p.forceRoll.Store(true)
		return nil
	}
	seg.size.Store(size)
	seg.readable.Store(size)
	seg.next.Store(next)
	p.next = next
	return nil
}

// checkTail verifies, after a clean shutdown, the batches of the active
// segment its offset index does not cover (from the last entry to the
// end): whole, CRC-valid, ending at size with offset next.
func checkTail(seg *segment, size, next int64) error {
	pos := int64(0)
	seg.idx.RLock()
	if n := len(seg.idx.offsets); n > 0 {
		pos = int64(seg.idx.offsets[n-1].pos)
	}
	seg.idx.RUnlock()
	var hb [BatchHeaderSize]byte
	end := int64(-1)
	for pos < size {
		h, err := readHeaderAt(seg.file, pos, hb[:])
		if err != nil {
			return fmt.Errorf("batch at %d: %w", pos, err)
		}
		if pos+h.Size() > size {
			return fmt.Errorf("%w: batch at %d runs past the end %d", ErrCorruptBatch, pos, size)
		}
		if !validAt(seg, pos, h) {
			return fmt.Errorf("%w: crc mismatch at %d", ErrCorruptBatch, pos)
		}
		end = h.NextOffset()
		pos += h.Size()
	}
	if end >= 0 && end != next {
		return fmt.Errorf("%w: the last batch ends at offset %d, the clean shutdown recorded %d", ErrCorruptBatch, end, next)
	}
	return nil
}

// checkIndexes is the cheap sanity check of a segment's indexes: the files
// exist with whole entries, the last offset entry points at a batch whose
// last offset it names, and (sealed segments) the last time entry names a
// batch no newer than it says — one index search. Wrong entries in the
// middle are found by the reads that use them (repair.go).
func (p *Partition) checkIndexes(seg *segment, size int64) error {
	fs := p.log.opts.fs
	idx, err := vfs.ReadFileTail(fs, seg.path(suffixIndex), indexEntrySize)
	if err != nil {
		return err
	}
	if idx.Size%indexEntrySize != 0 {
		return fmt.Errorf("offset index size %d is not a multiple of %d", idx.Size, indexEntrySize)
	}
	if size > 0 && idx.Size == 0 {
		return errors.New("offset index is empty")
	}
	if idx.Size > 0 {
		rel, pos := binary.BigEndian.Uint32(idx.Tail), binary.BigEndian.Uint32(idx.Tail[4:])
		if int64(pos)+BatchHeaderSize > size {
			return fmt.Errorf("offset index points at %d past the segment end %d", pos, size)
		}
		h, err := readHeaderAt(seg.file, int64(pos), make([]byte, BatchHeaderSize))
		if err != nil {
			return fmt.Errorf("offset index points at an invalid batch: %w", err)
		}
		if h.LastOffset() != seg.base+int64(rel) {
			return fmt.Errorf("offset index names offset %d, batch holds %d", seg.base+int64(rel), h.LastOffset())
		}
	}
	tix, err := vfs.ReadFileTail(fs, seg.path(suffixTimeIndex), timeEntrySize)
	if err != nil {
		return err
	}
	if tix.Size%timeEntrySize != 0 {
		return fmt.Errorf("time index size %d is not a multiple of %d", tix.Size, timeEntrySize)
	}
	if tix.Size > 0 {
		ts, last := int64(binary.BigEndian.Uint64(tix.Tail)), seg.base+int64(binary.BigEndian.Uint32(tix.Tail[8:]))
		if seg.idx.onDisk {
			// Sealed: the last entry gives the segment's largest timestamp,
			// which decides whether time lookups search the segment at all.
			// It must name a batch that ends at its offset and holds
			// nothing newer.
			pos, h, err := seg.locate(fs, last, size)
			switch {
			case err != nil:
				return fmt.Errorf("time index's last entry (offset %d): %w", last, err)
			case pos >= size || h.LastOffset() != last:
				return fmt.Errorf("time index's last entry names offset %d, no batch ends there", last)
			case h.MaxTimestamp > ts:
				return fmt.Errorf("time index's last entry says %d up to offset %d, the batch holds %d", ts, last, h.MaxTimestamp)
			}
		}
		seg.maxTs.Store(ts)
	}
	return nil
}

// loadActiveIndexes reads the active segment's index files into memory.
func (p *Partition) loadActiveIndexes(seg *segment, size int64) error {
	if err := p.checkIndexes(seg, size); err != nil {
		return err
	}
	fs := p.log.opts.fs
	ob, err := vfs.ReadFile(fs, seg.path(suffixIndex))
	if err != nil {
		return err
	}
	tb, err := vfs.ReadFile(fs, seg.path(suffixTimeIndex))
	if err != nil {
		return err
	}
	offs := make([]indexEntry, 0, len(ob)/indexEntrySize)
	for i := 0; i+indexEntrySize <= len(ob); i += indexEntrySize {
		e := indexEntry{rel: binary.BigEndian.Uint32(ob[i:]), pos: binary.BigEndian.Uint32(ob[i+4:])}
		if n := len(offs); n > 0 && (e.rel <= offs[n-1].rel || e.pos <= offs[n-1].pos) {
			return fmt.Errorf("offset index entry %d is not increasing", n)
		}
		offs = append(offs, e)
	}
	times := make([]timeEntry, 0, len(tb)/timeEntrySize)
	for i := 0; i+timeEntrySize <= len(tb); i += timeEntrySize {
		times = append(times, timeEntry{ts: int64(binary.BigEndian.Uint64(tb[i:])), rel: binary.BigEndian.Uint32(tb[i+8:])})
	}
	seg.idx.Lock()
	seg.idx.offsets, seg.idx.times, seg.idx.onDisk = offs, times, false
	seg.idx.Unlock()
	// Index entries are added every interval bytes after the last one;
	// resume that spacing from the last indexed batch.
	if n := len(offs); n > 0 {
		seg.bytesSinceIndex = size - int64(offs[n-1].pos)
	}
	return nil
}
