package commitlog

import (
	"errors"
	"fmt"
	"log/slog"
)

// Index validation and repair on the read path.
//
// Opening a sealed segment checks only its offset index's last entry
// (O(1)), so a wrong entry in the middle of an index, or in a time index,
// is found by the read that uses it: every lookup checks the entry it
// starts from against the batch header at the entry's position (the offset
// index names the batch's last offset; the time index names a batch whose
// largest timestamp is at most the entry's). A mismatch never becomes a
// wrong answer or a false damage report: the read scans the segment from
// its start instead, and repairIndex rebuilds both indexes from a
// validating scan — atomically replacing the files of a sealed segment, or
// the in-memory entries of the active one — counts it in Stats and adds
// the segment to the partition's RecoveryReport.IndexRebuilt.

// findBatch is segment.locate with the repair: an index entry that does not
// match its batch is repaired and the search redone from the segment start.
func (p *Partition) findBatch(seg *segment, offset, limit int64) (int64, BatchHeader, error) {
	pos, h, err := seg.locate(p.log.opts.fs, offset, limit)
	if errors.Is(err, errBadIndex) {
		p.repairIndex(seg, err)
		return seg.scanFrom(0, offset, limit)
	}
	return pos, h, err
}

// timeStart returns the position from which a scan for the first record
// with timestamp >= ts must start in seg: after the batch named by the
// time index's last entry below ts, once that entry has been checked
// against the batch (it must end at the entry's offset and hold nothing
// newer than the entry's timestamp). done is true when the entry lies past
// what readers may see, so nothing readable in seg is new enough.
func (p *Partition) timeStart(seg *segment, ts, limit int64) (pos int64, done bool, err error) {
	e, ok := seg.lookupTime(p.log.opts.fs, ts)
	if !ok {
		return 0, false, nil
	}
	last := seg.base + int64(e.rel)
	pos, h, err := p.findBatch(seg, last, limit)
	var bad error
	switch {
	case err != nil:
		return pos, false, err
	case pos >= limit:
		if !(seg.sealed.Load() && limit == seg.size.Load()) {
			return limit, true, nil
		}
		bad = fmt.Errorf("%w: time index entry names offset %d, past the segment's last batch", errBadIndex, last)
	case h.LastOffset() != last:
		bad = fmt.Errorf("%w: time index entry names offset %d, the batch at %d ends at %d", errBadIndex, last, pos, h.LastOffset())
	case h.MaxTimestamp > e.ts:
		bad = fmt.Errorf("%w: time index entry says %d up to offset %d, the batch at %d holds %d",
			errBadIndex, e.ts, last, pos, h.MaxTimestamp)
	default:
		return pos + h.Size(), false, nil
	}
	p.repairIndex(seg, bad)
	return 0, false, nil
}

// repairIndex rebuilds seg's indexes after a lookup found cause. The scan
// runs without locks the committer or other readers need (lookups scan
// from the start meanwhile: indexBad); only installing the result takes
// seg.filesMu. A scan that stops early records the damage it found.
func (p *Partition) repairIndex(seg *segment, cause error) {
	seg.indexBad.Store(true)
	seg.repairMu.Lock()
	defer seg.repairMu.Unlock()
	if !seg.indexBad.Load() {
		return // another reader repaired it meanwhile
	}
	l := p.log
	limit := seg.readable.Load()
	scratch := &segment{dir: seg.dir, base: seg.base, file: seg.file}
	scratch.maxTs.Store(-1)
	res := scanSegment(scratch, limit, false, p.topic.Config().IndexIntervalBytes)
	scratch.next.Store(res.next)
	p.installHoles(seg, res)
	if res.stop != nil && seg.sealed.Load() { // the active segment's readable bytes belong to the committer
		p.markDamaged(seg, res.validBytes, res.stop)
	}

	seg.filesMu.Lock()
	defer seg.filesMu.Unlock()
	if seg.indexGone.Load() || !p.hasSegment(seg) {
		return // compacted or deleted meanwhile: its index is not ours to write
	}
	unwritten := false
	seg.idx.Lock()
	if !seg.idx.onDisk {
		// In memory (the active segment): keep the entries the committer
		// added past what the scan covered.
		offs, times := scratch.idx.offsets, scratch.idx.times
		for _, e := range seg.idx.offsets {
			if int64(e.pos) >= limit {
				offs = append(offs, e)
			}
		}
		lastRel := res.next - 1 - seg.base
		for _, e := range seg.idx.times {
			if int64(e.rel) > lastRel && (len(times) == 0 || e.ts > times[len(times)-1].ts) {
				times = append(times, e)
			}
		}
		seg.idx.offsets, seg.idx.times = offs, times
		seg.idx.Unlock()
	} else {
		seg.idx.Unlock()
		if err := scratch.writeIndexes(l.opts.fs); err != nil {
			// Serve this segment from the rebuilt entries in memory; the
			// next open rebuilds the files.
			unwritten = true
			l.opts.logger.Warn("commitlog: cannot write a repaired segment index, keeping it in memory",
				"topic", p.topic.name, "partition", p.id, "segment", seg.base, "err", err)
			scratch.idx.Lock()
			offs, times := scratch.idx.offsets, scratch.idx.times
			scratch.idx.Unlock()
			seg.idx.Lock()
			seg.idx.offsets, seg.idx.times, seg.idx.onDisk = offs, times, false
			seg.idx.Unlock()
		}
	}
	if seg.sealed.Load() {
		storeMax(&seg.maxTs, scratch.maxTs.Load())
		storeMax(&seg.readMaxTs, scratch.maxTs.Load()) // the scan read the readable bytes only
	}
	seg.indexBad.Store(false)
	l.stats.indexRebuilds.Add(1)
	p.reportMu.Lock()
	p.report.IndexRebuilt = append(p.report.IndexRebuilt, seg.base)
	if unwritten {
		l.stats.indexWriteErrors.Add(1)
		p.report.IndexUnwritten = append(p.report.IndexUnwritten, seg.base)
	}
	p.reportMu.Unlock()
	l.noteRepair(slog.LevelWarn, p.repair(RepairIndexRebuilt, "rebuilt a wrong index of segment %d found by a read: %v", seg.base, cause))
}
