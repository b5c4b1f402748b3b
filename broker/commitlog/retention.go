package commitlog

import (
	"sync"
	"time"
)

// Retention deletes whole sealed segments, oldest first:
//
//   - by age, when both the segment's newest record timestamp (wall clock)
//     and its last append in log time (monotonic) are older than the
//     topic's retention — a wall clock that jumps forward never deletes
//     young data, one that jumps back only delays deletion;
//   - by size, when a partition exceeds retention_bytes and the topic is
//     overwrite_oldest (reject_new topics refuse appends instead);
//   - by free disk, when the filesystem's free share falls below the floor:
//     the oldest segments of overwrite_oldest topics go first, and
//     reject_new topics refuse appends until space frees up.
//
// Age and size apply to topics whose cleanup policy includes delete
// (delete, compact,delete); as in Kafka, cleanup_policy=compact alone
// deletes nothing by age or retention_bytes. The free-disk floor protects
// the device whatever the policy: it deletes from delete topics first, and
// drops the oldest segments of compact-only overwrite_oldest topics only
// when no delete topic has anything left to give.
//
// Age deletion respects retention holds (offsets a bridge still has to
// replicate); size and free-disk deletion are forced, and what they drop
// above a hold is counted as dropped unreplicated.
//
// A pass holds Log.housekeepMu throughout; DeleteTopic takes it too, so no
// pass works on a partition whose segments are being released. The
// functions below still tolerate an empty segment list (a deleted
// partition, a closed log) and do nothing with it.

// holdSet is the retention holds on a partition: owner → first offset the
// owner still needs.
type holdSet struct {
	mu sync.Mutex
	m  map[string]int64
}

// SetHold asks retention to keep offsets >= offset for owner (a bridge that
// has not replicated them yet). Size and free-disk limits of
// overwrite_oldest topics still delete held data, and count it.
func (p *Partition) SetHold(owner string, offset int64) {
	p.holds.mu.Lock()
	if p.holds.m == nil {
		p.holds.m = map[string]int64{}
	}
	p.holds.m[owner] = offset
	p.holds.mu.Unlock()
}

// ReleaseHold removes owner's hold.
func (p *Partition) ReleaseHold(owner string) {
	p.holds.mu.Lock()
	delete(p.holds.m, owner)
	p.holds.mu.Unlock()
}

// holdFrom returns the smallest held offset, or MaxInt64 without holds.
func (p *Partition) holdFrom() int64 {
	p.holds.mu.Lock()
	defer p.holds.mu.Unlock()
	min := int64(1<<63 - 1)
	for _, o := range p.holds.m {
		if o < min {
			min = o
		}
	}
	return min
}

// housekeepingLoop runs retention and compaction on a timer and when the
// committer reports the disk filling up, from ResumeRetention on (at once
// without WithRetentionPaused).
func (l *Log) housekeepingLoop() {
	defer l.wg.Done()
	select {
	case <-l.resume:
	case <-l.quit:
		return
	}
	t := time.NewTicker(l.opts.retentionInterval)
	defer t.Stop()
	for {
		select {
		case <-l.quit:
			return
		case <-t.C:
		case <-l.retentionKick:
		}
		l.EnforceRetention()
		l.Compact()
	}
}

// ResumeRetention lets the housekeeping goroutine run retention and
// compaction on a log opened WithRetentionPaused; a kick that arrived while
// paused (the disk filling up) runs at once. Calling it again, or on a log
// opened without the option, does nothing. EnforceRetention and Compact
// called directly are never paused.
func (l *Log) ResumeRetention() { l.resumeOnce.Do(func() { close(l.resume) }) }

func (l *Log) kickRetention() {
	select {
	case l.retentionKick <- struct{}{}:
	default:
	}
}

// RetentionReport is what one retention pass deleted.
type RetentionReport struct {
	Expired, Dropped int // segments deleted by age, and by size or free-disk limits
	DiskLow          bool
}

// EnforceRetention runs one retention pass now (the housekeeping goroutine
// runs it periodically).
func (l *Log) EnforceRetention() RetentionReport {
	l.housekeepMu.Lock()
	defer l.housekeepMu.Unlock()
	var rep RetentionReport
	wallNow, logNow := l.opts.clock.Now().UnixMilli(), l.logNowMs()
	for _, t := range l.Topics() {
		cfg := t.Config()
		if !cfg.Cleanup.deletes() {
			continue // compact alone: no age or size deletion (Kafka's semantics)
		}
		for _, p := range t.Partitions() {
			rep.Expired += p.expire(cfg, wallNow, logNow)
			if cfg.OnFull == OverwriteOldest && cfg.limitsBytes() {
				rep.Dropped += p.enforceBytes(cfg)
			}
		}
	}
	rep.Dropped += l.enforceDiskFloor()
	rep.DiskLow = l.diskLow.Load()
	return rep
}

func expired(s *segment, cfg TopicConfig, wallNow, logNow int64) bool {
	if cfg.Retention < 0 {
		return false
	}
	ret := cfg.Retention.Milliseconds()
	if logNow-s.logTime.Load() <= ret {
		return false
	}
	// Record timestamps may keep a segment longer, never past what the
	// log's own clock allows, unless they are believable: one from the
	// future (a device's ts of 2100, or data written while the wall clock
	// ran ahead and was corrected since) is not, and the log's clock
	// alone decides.
	maxTs := s.maxTs.Load()
	return maxTs < 0 || maxTs > wallNow+futureTolerance.Milliseconds() || wallNow-maxTs > ret
}

// futureTolerance is how far ahead of the wall clock a record timestamp
// may lie and still count for retention: clock skew between devices and
// the gateway, not years (Kafka's log.message.timestamp.after.max.ms
// defaults to an hour too).
const futureTolerance = time.Hour

// expire deletes the prefix of sealed segments that are past retention and
// not held, rolling an idle expired active segment so it can follow.
func (p *Partition) expire(cfg TopicConfig, wallNow, logNow int64) int {
	hold := p.holdFrom()
	p.segMu.RLock()
	if len(p.segs) == 0 { // deleted
		p.segMu.RUnlock()
		return 0
	}
	n := 0
	for n < len(p.segs)-1 && expired(p.segs[n], cfg, wallNow, logNow) && p.segs[n].next.Load() <= hold {
		n++
	}
	active := p.segs[len(p.segs)-1]
	rollActive := n == len(p.segs)-1 && active.size.Load() > 0 && expired(active, cfg, wallNow, logNow) && active.next.Load() <= hold
	p.segMu.RUnlock()
	if rollActive && p.log.commit.rollIdle(p, active) {
		n++
	}
	if n == 0 {
		return 0
	}
	recs, bytes := p.deleteOldest(n)
	p.topic.stats.expiredRecords.Add(recs)
	p.topic.stats.expiredBytes.Add(bytes)
	return n
}

// enforceBytes deletes the oldest segments while the partition is larger
// than retention_bytes.
func (p *Partition) enforceBytes(cfg TopicConfig) int {
	deleted := 0
	for p.bytes.Load() > cfg.RetentionBytes {
		p.segMu.RLock()
		if len(p.segs) == 0 { // deleted
			p.segMu.RUnlock()
			break
		}
		sealed := len(p.segs) - 1
		active := p.segs[len(p.segs)-1]
		p.segMu.RUnlock()
		if sealed == 0 {
			if active.size.Load() == 0 || !p.log.commit.rollIdle(p, active) {
				break
			}
			continue
		}
		p.dropOldest("retention_bytes")
		deleted++
	}
	return deleted
}

// dropOldest force-deletes the oldest sealed segment and counts it.
func (p *Partition) dropOldest(why string) {
	p.segMu.RLock()
	if len(p.segs) < 2 { // only the active segment, or deleted
		p.segMu.RUnlock()
		return
	}
	seg := p.segs[0]
	p.segMu.RUnlock()
	hold := p.holdFrom()
	recs, bytes := p.deleteOldest(1)
	if recs == 0 && bytes == 0 {
		return
	}
	p.topic.stats.droppedRecords.Add(recs)
	p.topic.stats.droppedBytes.Add(bytes)
	attrs := []any{"topic", p.topic.name, "partition", p.id, "segment", seg.base,
		"records", recs, "bytes", bytes, "limit", why}
	if unrepl := seg.next.Load() - max(hold, seg.base); hold < 1<<63-1 && unrepl > 0 {
		p.topic.stats.droppedHeld.Add(unrepl)
		attrs = append(attrs, "unreplicated_records", unrepl)
		p.log.opts.logger.Warn("commitlog: on_full=overwrite_oldest dropped records a bridge had not replicated", attrs...)
		return
	}
	p.log.opts.logger.Info("commitlog: on_full=overwrite_oldest dropped the oldest segment", attrs...)
}

// unsyncedWaiting reports queued appends (committer use): a partition with
// pending appends rolls on its own at the next cycle instead.
func (p *Partition) unsyncedWaiting() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.mu.items) > 0
}

// deleteOldest removes the n oldest segments (never the active one) and
// returns how many offsets and bytes they held.
func (p *Partition) deleteOldest(n int) (records, bytes int64) {
	p.segMu.Lock()
	if n > len(p.segs)-1 {
		n = len(p.segs) - 1
	}
	if n <= 0 {
		p.segMu.Unlock()
		return 0, 0
	}
	gone := append([]*segment(nil), p.segs[:n]...)
	p.segs = append(p.segs[:0:0], p.segs[n:]...)
	p.logStart.Store(p.segs[0].base)
	p.segMu.Unlock()
	fs := p.log.opts.fs
	for _, s := range gone {
		// filesMu: an index repair in progress must not recreate the
		// index files of a segment being removed.
		s.filesMu.Lock()
		if lf := s.lazy(); lf != nil {
			_ = lf.keepOpen() // a reader holding s reads on until it lets go
		}
		records += s.next.Load() - s.base
		bytes += s.size.Load()
		p.bytes.Add(-s.size.Load())
		for _, suf := range []string{suffixLog, suffixIndex, suffixTimeIndex} {
			if err := fs.Remove(s.path(suf)); err != nil {
				p.log.opts.logger.Warn("commitlog: remove segment file", "file", s.path(suf), "err", err)
			}
		}
		s.filesMu.Unlock()
		s.release()
	}
	if len(gone) > 0 {
		if err := fs.SyncDir(p.dir); err != nil {
			p.log.opts.logger.Warn("commitlog: sync directory after retention", "dir", p.dir, "err", err)
		}
	}
	return records, bytes
}

// checkDisk reads the free space, sets diskLow and the committer's budget
// of bytes before the next check. It returns the bytes needed to reach the
// floor (0 when above it).
func (l *Log) checkDisk() int64 {
	if l.opts.minFreeRatio == 0 {
		l.diskLow.Store(false)
		l.freeBudget.Store(1 << 62)
		return 0
	}
	du, err := l.opts.fs.DiskUsage(l.dir)
	if err != nil {
		l.opts.logger.Warn("commitlog: cannot read free disk space", "dir", l.dir, "err", err)
		l.freeBudget.Store(64 << 20)
		return 0
	}
	floor := int64(l.opts.minFreeRatio * float64(du.Total))
	headroom := int64(du.Free) - floor
	if headroom < 0 {
		l.diskLow.Store(true)
		l.freeBudget.Store(1 << 20)
		return -headroom
	}
	l.diskLow.Store(false)
	l.freeBudget.Store(max(headroom/2, 1<<20))
	return 0
}

// enforceDiskFloor deletes the oldest sealed segments of overwrite_oldest
// topics (by log time) until the free-disk floor is met: delete topics
// first; compact-only topics only when no delete topic has a sealed
// segment or an active one to roll.
func (l *Log) enforceDiskFloor() int {
	need := l.checkDisk()
	deleted := 0
	for need > 0 {
		best := l.oldestSealed(true)
		if best == nil {
			if l.rollLargestActive(true) {
				break // the next pass deletes what was rolled (or rolls again)
			}
			best = l.oldestSealed(false)
		}
		if best == nil {
			l.rollLargestActive(false)
			break
		}
		size, segs := best.Size(), best.Segments()
		best.dropOldest("disk_free")
		if best.Segments() >= segs {
			break // nothing came off (deleted meanwhile)
		}
		deleted++
		need -= size - best.Size()
		if need <= 0 {
			need = l.checkDisk()
		}
	}
	if deleted > 0 {
		l.checkDisk()
	}
	return deleted
}

// floorCandidate reports whether the free-disk floor may delete from a
// topic: overwrite_oldest ones, delete policies in the first tier
// (deletes=true), compact-only ones in the second.
func floorCandidate(cfg TopicConfig, deletes bool) bool {
	return cfg.OnFull == OverwriteOldest && cfg.Cleanup.deletes() == deletes
}

// oldestSealed returns the partition of a floor candidate topic whose
// oldest sealed segment is the oldest in log time, or nil.
func (l *Log) oldestSealed(deletes bool) *Partition {
	var best *Partition
	var bestTime int64
	for _, t := range l.Topics() {
		if !floorCandidate(t.Config(), deletes) {
			continue
		}
		for _, p := range t.Partitions() {
			p.segMu.RLock()
			if len(p.segs) > 1 {
				if lt := p.segs[0].logTime.Load(); best == nil || lt < bestTime {
					best, bestTime = p, lt
				}
			}
			p.segMu.RUnlock()
		}
	}
	return best
}

// rollLargestActive rolls the largest active segment of a floor candidate
// topic, so the next pass has something to delete. It reports whether any
// candidate holds data in its active segment (rolled now, or busy with
// appends and rolling on its own), so that the compact tier is left alone
// while the delete tier still has data.
func (l *Log) rollLargestActive(deletes bool) bool {
	var best *Partition
	var bestSeg *segment
	for _, t := range l.Topics() {
		if !floorCandidate(t.Config(), deletes) {
			continue
		}
		for _, p := range t.Partitions() {
			a := p.activeSegment()
			if a != nil && a.size.Load() > 0 && p.Err() == nil && (bestSeg == nil || a.size.Load() > bestSeg.size.Load()) {
				best, bestSeg = p, a
			}
		}
	}
	if best == nil {
		return false
	}
	l.commit.rollIdle(best, bestSeg)
	return true
}
