package commitlog

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
)

// Compaction leaves segments small: a compacted topic of a few live keys
// would otherwise keep one file (and its indexes) per segment it ever
// rolled. After each pass, runs of consecutive sealed segments whose
// cleaned sizes together fit in segment_bytes are merged into one, as
// Kafka's cleaner groups segments: the run's batches are copied, in
// order, into "<first base>.log.cleaned", which is fsynced; the run's
// index files are removed and the directory fsynced; the copy is renamed
// over the first segment's .log and the directory fsynced; then the other
// segments' files are removed. A crash before the rename leaves the run
// as it was (the .cleaned copy is a leftover, removed at open); one after
// it leaves the first file holding the whole run next to the rest's old
// files, which open finds overlapping it and removes (mergeLeftover).

// mergeSmall merges runs of small sealed segments of p below the
// retention hold; it returns how many segments went away.
func (p *Partition) mergeSmall(cfg TopicConfig) (int, error) {
	sealed := p.sealedBelowHold()
	defer releaseAll(sealed)

	merged := 0
	for i := 0; i < len(sealed); {
		j, size := i+1, sealed[i].readable.Load()
		for j < len(sealed) && size+sealed[j].readable.Load() <= cfg.rollBytes() &&
			sealed[j].next.Load()-sealed[i].base <= math.MaxUint32 &&
			sealed[j].readable.Load() == sealed[j].size.Load() { // damage stays where it was found
			size += sealed[j].readable.Load()
			j++
		}
		if j-i >= 2 && sealed[i].readable.Load() == sealed[i].size.Load() {
			if err := p.mergeRun(sealed[i:j], cfg); err != nil {
				return merged, err
			}
			merged += j - i - 1
		}
		i = j
	}
	return merged, nil
}

// mergeRun copies the batches of run (consecutive sealed segments) into
// one segment with the first one's base and swaps it in for the run.
func (p *Partition) mergeRun(run []*segment, cfg TopicConfig) error {
	fs := p.log.opts.fs
	first := run[0]
	cleanedPath := first.path(suffixLog) + suffixCleaned
	out, err := fs.OpenFile(cleanedPath, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	abandon := func(err error) error {
		_ = out.Close()
		_ = fs.Remove(cleanedPath)
		return err
	}
	ns := &segment{dir: first.dir, base: first.base, file: out}
	ns.maxTs.Store(-1)
	var pos int64
	logTime := int64(math.MinInt64)
	for _, s := range run {
		err := forEachBatch(s, func(h BatchHeader, b []byte, _ int64) error {
			if _, err := out.WriteAt(b, pos); err != nil {
				return err
			}
			ns.addIndexEntries(h, pos, cfg.IndexIntervalBytes)
			pos += int64(len(b))
			return nil
		})
		if err != nil {
			return abandon(fmt.Errorf("merge segment %d into %d: %w", s.base, first.base, err))
		}
		logTime = max(logTime, s.logTime.Load())
	}
	if err := out.Sync(); err != nil {
		return abandon(err)
	}
	ns.refs.Store(1)
	ns.file = p.log.files.wrap(ns, first.path(suffixLog), out, false) // the merged file, once renamed
	ns.size.Store(pos)
	ns.readable.Store(pos)
	ns.readMaxTs.Store(ns.maxTs.Load())
	ns.next.Store(run[len(run)-1].next.Load())
	ns.logTime.Store(logTime)
	ns.sealed.Store(true)

	for _, s := range run {
		s.filesMu.Lock()
		defer s.filesMu.Unlock()
	}
	for _, s := range run {
		if !p.hasSegment(s) { // deleted meanwhile
			return abandon(nil)
		}
		if lf := s.lazy(); lf != nil {
			if err := lf.keepOpen(); err != nil { // readers holding s keep reading the file they started on
				return abandon(err)
			}
		}
		s.indexGone.Store(true)
	}
	for _, s := range run {
		for _, suf := range []string{suffixIndex, suffixTimeIndex} {
			if err := fs.Remove(s.path(suf)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return abandon(err)
			}
		}
	}
	if err := fs.SyncDir(first.dir); err != nil {
		return abandon(err)
	}
	if err := fs.Rename(cleanedPath, first.path(suffixLog)); err != nil {
		return abandon(err)
	}
	if err := fs.SyncDir(first.dir); err != nil {
		return err // renamed: what open finds is the merged run (and the rest's files, removed then)
	}
	for _, s := range run[1:] {
		if err := fs.Remove(s.path(suffixLog)); err != nil && !errors.Is(err, os.ErrNotExist) {
			p.log.opts.logger.Warn("commitlog: cannot remove a merged segment (removed at the next open)", "segment", s.base, "err", err)
		}
	}
	_ = fs.SyncDir(first.dir)
	if err := ns.writeIndexes(fs); err != nil {
		p.log.opts.logger.Warn("commitlog: write index after merging (rebuilt on next open)", "segment", ns.base, "err", err)
	} else {
		ns.dropMemoryIndex()
	}
	p.segMu.Lock()
	kept := p.segs[:0]
	for _, cur := range p.segs {
		switch {
		case cur == first:
			kept = append(kept, ns)
		case containsSeg(run[1:], cur):
		default:
			kept = append(kept, cur)
		}
	}
	p.segs = kept
	p.segMu.Unlock()
	for _, s := range run {
		s.release() // the list's reference
	}
	return nil
}

func containsSeg(segs []*segment, s *segment) bool {
	for _, x := range segs {
		if x == s {
			return true
		}
	}
	return false
}

// mergeLeftover removes the segment file at base when an interrupted
// merge left it behind: the previous segment (ending at prevEnd) already
// holds its offsets. It reports whether it did.
func (p *Partition) mergeLeftover(base, prevEnd int64) bool {
	if base >= prevEnd {
		return false
	}
	fs := p.log.opts.fs
	for _, suf := range []string{suffixLog, suffixIndex, suffixTimeIndex} {
		name := p.dir + "/" + segmentName(base, suf)
		if err := fs.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			return false
		}
	}
	_ = fs.SyncDir(p.dir)
	p.log.noteRepair(slog.LevelWarn, p.repair(RepairLeftover,
		"removed segment %d, left by an interrupted merge: the segment before it already holds its offsets (up to %d)", base, prevEnd-1))
	return true
}
