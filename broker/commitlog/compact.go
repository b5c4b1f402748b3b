package commitlog

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

// Compaction (cleanup_policy=compact) rewrites sealed segments keeping only
// the newest record of each key; offsets never change, so a batch keeps its
// base offset and last offset delta even when records leave it (as in
// Kafka's v2 format). A tombstone (null value) survives until its segment
// is older than delete_retention in log time. The active segment is never
// compacted.
//
// A segment is replaced atomically: the cleaned copy is written to
// "<base>.log.cleaned" and fsynced, the old index files are removed, the
// copy is renamed over the .log and the directory fsynced, then fresh index
// files are written. A crash leaves either segment whole; a missing index
// is rebuilt on open and a stray .cleaned file deleted.

// maxCompactionKeys bounds the key map of one pass (about 100 bytes per
// key); segments past the bound wait for the next pass.
const maxCompactionKeys = 1 << 20

// Compact runs one compaction pass over every compacted topic and returns
// the bytes it removed.
func (l *Log) Compact() int64 {
	l.housekeepMu.Lock()
	defer l.housekeepMu.Unlock()
	var removed int64
	logNow := l.logNowMs()
	for _, t := range l.Topics() {
		cfg := t.Config()
		if !cfg.Cleanup.compacts() {
			continue
		}
		for _, p := range t.Partitions() {
			n, err := p.compact(cfg, logNow)
			removed += n
			if err != nil {
				l.opts.logger.Warn("commitlog: compaction failed", "topic", t.name, "partition", p.id, "err", err)
			}
			if _, err := p.mergeSmall(cfg); err != nil {
				l.opts.logger.Warn("commitlog: merging small segments failed", "topic", t.name, "partition", p.id, "err", err)
			}
		}
	}
	return removed
}

// forEachBatch calls fn with each batch of s up to its readable end.
func forEachBatch(s *segment, fn func(h BatchHeader, batch []byte, pos int64) error) error {
	limit := s.readable.Load()
	var hdr [BatchHeaderSize]byte
	var buf []byte
	for pos := int64(0); pos+BatchHeaderSize <= limit; {
		if hl, ok := s.holes.at(pos); ok {
			pos = hl.end // damaged: passed over (the rewrite leaves it out)
			continue
		}
		h, err := readHeaderAt(s.file, pos, hdr[:])
		if err != nil {
			return err
		}
		if pos+h.Size() > limit {
			return fmt.Errorf("%w: batch at %d runs past %d", ErrCorruptBatch, pos, limit)
		}
		if int64(cap(buf)) < h.Size() {
			buf = make([]byte, h.Size())
		}
		buf = buf[:h.Size()]
		if _, err := s.file.ReadAt(buf, pos); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if err := fn(h, buf, pos); err != nil {
			return err
		}
		pos += h.Size()
	}
	return nil
}

// sealedBelowHold returns the sealed segments wholly below the retention
// hold, each acquired (releaseAll them): records a bridge has not
// replicated yet are neither compacted away nor merged.
func (p *Partition) sealedBelowHold() []*segment {
	p.segMu.RLock()
	defer p.segMu.RUnlock()
	if len(p.segs) < 2 {
		return nil
	}
	sealed := append([]*segment(nil), p.segs[:len(p.segs)-1]...)
	hold := p.holdFrom()
	for len(sealed) > 0 && sealed[len(sealed)-1].next.Load() > hold {
		sealed = sealed[:len(sealed)-1]
	}
	for _, s := range sealed {
		s.acquire()
	}
	return sealed
}

func (p *Partition) compact(cfg TopicConfig, logNow int64) (int64, error) {
	sealed := p.sealedBelowHold()
	if len(sealed) == 0 {
		return 0, nil
	}
	defer releaseAll(sealed)

	var total, dirty int64
	cleanedTo := p.cleanedTo.Load()
	tombstonesDue := false
	for _, s := range sealed {
		total += s.size.Load()
		if s.next.Load() > cleanedTo {
			dirty += s.size.Load()
		}
		if logNow-s.logTime.Load() > cfg.DeleteRetention.Milliseconds() && s.base < cleanedTo {
			tombstonesDue = true
		}
	}
	if total == 0 || (float64(dirty)/float64(total) < cfg.MinCleanableDirtyRatio && !tombstonesDue) {
		return 0, nil
	}
	latest := map[string]int64{}
	upto := len(sealed)
	for i, s := range sealed {
		if len(latest) > maxCompactionKeys {
			upto = i
			break
		}
		err := forEachBatch(s, func(h BatchHeader, b []byte, _ int64) error {
			_, recs, err := DecodeRecords(b, defaultDecompressor)
			if err != nil {
				return err
			}
			for _, r := range recs {
				if r.Key != nil {
					latest[string(r.Key)] = r.Offset
				}
			}
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("read segment %d: %w", s.base, err)
		}
	}
	var removed int64
	for _, s := range sealed[:upto] {
		n, err := p.rewriteSegment(s, cfg, latest, logNow-s.logTime.Load() > cfg.DeleteRetention.Milliseconds())
		removed += n
		if err != nil {
			return removed, err
		}
	}
	p.cleanedTo.Store(sealed[upto-1].next.Load())
	p.topic.stats.compactedBytes.Add(removed)
	return removed, nil
}

// rewriteSegment writes s without superseded records (and without
// tombstones when dropTombstones) and swaps the copy in. It returns the
// bytes saved; a segment with nothing to remove is left alone.
func (p *Partition) rewriteSegment(s *segment, cfg TopicConfig, latest map[string]int64, dropTombstones bool) (int64, error) {
	fs := p.log.opts.fs
	keep := func(r *Record) bool {
		if r.Key == nil {
			return true
		}
		if latest[string(r.Key)] != r.Offset {
			return false
		}
		return !(r.Value == nil && dropTombstones)
	}
	// First pass: is there anything to remove?
	any := false
	err := forEachBatch(s, func(h BatchHeader, b []byte, _ int64) error {
		_, recs, err := DecodeRecords(b, defaultDecompressor)
		if err != nil {
			return err
		}
		for i := range recs {
			if !keep(&recs[i]) {
				any = true
				return errStopWalk
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopWalk) {
		return 0, err
	}
	if !any {
		return 0, nil
	}
	cleanedPath := s.path(suffixLog) + suffixCleaned
	out, err := fs.OpenFile(cleanedPath, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return 0, err
	}
	ns := &segment{dir: s.dir, base: s.base, file: out}
	ns.maxTs.Store(-1)
	comp := newCompressor()
	var pos int64
	var enc []byte
	err = forEachBatch(s, func(h BatchHeader, b []byte, _ int64) error {
		if h.IsControl() {
			enc = append(enc[:0], b...)
		} else {
			_, recs, err := DecodeRecords(b, defaultDecompressor)
			if err != nil {
				return err
			}
			kept := recs[:0]
			for i := range recs {
				if keep(&recs[i]) {
					kept = append(kept, recs[i])
				}
			}
			if len(kept) == 0 {
				return nil
			}
			if len(kept) == len(recs) {
				enc = append(enc[:0], b...)
			} else {
				enc = reencodeBatch(enc[:0], h, kept, comp)
			}
		}
		nh, _ := ParseBatchHeader(enc)
		if _, err := out.WriteAt(enc, pos); err != nil {
			return err
		}
		ns.addIndexEntries(nh, pos, cfg.IndexIntervalBytes)
		pos += int64(len(enc))
		return nil
	})
	if err == nil {
		err = out.Sync()
	}
	if err != nil {
		_ = out.Close()
		_ = fs.Remove(cleanedPath)
		return 0, err
	}
	ns.refs.Store(1)
	ns.file = p.log.files.wrap(ns, s.path(suffixLog), out, false) // the cleaned file, once renamed
	ns.size.Store(pos)
	ns.readable.Store(pos)
	ns.readMaxTs.Store(ns.maxTs.Load())
	ns.next.Store(s.next.Load())
	ns.logTime.Store(s.logTime.Load())
	ns.sealed.Store(true)
	// filesMu: no index repair of s may write its files while they are
	// swapped, and none installs anything on s afterwards (indexGone).
	s.filesMu.Lock()
	if !p.hasSegment(s) { // deleted meanwhile
		s.filesMu.Unlock()
		_ = out.Close()
		_ = fs.Remove(cleanedPath)
		return 0, nil
	}
	if lf := s.lazy(); lf != nil {
		// Readers holding s keep reading the file they started on.
		if err := lf.keepOpen(); err != nil {
			s.filesMu.Unlock()
			_ = out.Close()
			_ = fs.Remove(cleanedPath)
			return 0, err
		}
	}
	s.indexGone.Store(true)
	if err := swapSegmentFiles(fs, s, cleanedPath); err != nil {
		s.filesMu.Unlock()
		_ = out.Close()
		return 0, err
	}
	if err := ns.writeIndexes(fs); err != nil {
		// Lookups use the entries still in memory; the next open rebuilds the files.
		p.log.opts.logger.Warn("commitlog: write index after compaction (rebuilt on next open)", "segment", s.base, "err", err)
	} else {
		ns.dropMemoryIndex()
	}
	p.segMu.Lock()
	swapped := false
	for i, cur := range p.segs {
		if cur == s {
			p.segs[i] = ns
			swapped = true
		}
	}
	p.segMu.Unlock()
	s.filesMu.Unlock()
	if !swapped { // cannot happen: retention and compaction passes are serialized
		ns.release()
		return 0, nil
	}
	saved := s.size.Load() - pos
	p.bytes.Add(-saved)
	s.release() // the list's reference
	return saved, nil
}

var errStopWalk = errors.New("stop")

// swapSegmentFiles replaces s's .log with the cleaned copy: old indexes
// removed first, so a crash can only leave a segment without indexes
// (rebuilt on open), never indexes that describe the other file.
func swapSegmentFiles(fs vfs.FS, s *segment, cleanedPath string) error {
	for _, suf := range []string{suffixIndex, suffixTimeIndex} {
		if err := fs.Remove(s.path(suf)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := fs.SyncDir(s.dir); err != nil {
		return err
	}
	if err := fs.Rename(cleanedPath, s.path(suffixLog)); err != nil {
		return err
	}
	return fs.SyncDir(s.dir)
}

// reencodeBatch builds a batch holding kept records of the batch h with
// their original offsets and timestamps, the same base offset, last offset
// delta, producer fields and codec.
func reencodeBatch(dst []byte, h BatchHeader, kept []Record, comp *compressor) []byte {
	var raw []byte
	maxTs := int64(-1)
	for i := range kept {
		r := &kept[i]
		raw = appendRecord(raw, int32(r.Offset-h.BaseOffset), r.Timestamp-h.BaseTimestamp, r)
		maxTs = max(maxTs, r.Timestamp)
	}
	if h.LogAppendTime() {
		maxTs = h.MaxTimestamp
	}
	recs, codec := comp.compress(raw, h.Codec())
	attrs := h.Attributes&^attrCodecMask | int16(codec)
	return appendBatch(dst, batchFields{
		baseOffset: h.BaseOffset, attributes: attrs, lastDelta: h.LastOffsetDelta,
		firstTs: h.BaseTimestamp, maxTs: maxTs, producerID: h.ProducerID,
		producerEpoch: h.ProducerEpoch, baseSequence: h.BaseSequence, count: int32(len(kept)),
	}, recs)
}
