package commitlog

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

// Three goroutines carry an append to disk, in a pipeline:
//
//	committer: take every partition with pending appends → seal the gathered
//	           records into batches (compress, CRC), assign dense offsets,
//	           roll segments when due, one positioned write per partition →
//	           publish flush=interval/never partitions at once → hand the
//	           flush=always ones (and interval ones whose period is up) to
//	           the syncer → next cycle
//	syncer:    fsync the cycle's segment files (in parallel, bounded)
//	publisher: readable bytes and the high watermark move, long polls wake,
//	           futures complete in append order
//
// While the syncer waits for cycle N's fsync, the committer already writes
// cycle N+1 and the publisher completes cycle N-1, so the disk never waits
// for the CPU and the CPU never waits for the disk. One fsync serves every
// producer of its cycle, and appends that arrive meanwhile form the next
// cycle's batches: group commit without linger. At most two cycles wait for
// the syncer; then the committer waits.

// committer is that pipeline. Its state belongs to the commit goroutine
// unless a field says otherwise; the Log keeps the topic catalogue and
// housekeeping. Other goroutines reach the pipeline only through
// markDirty and wakeFull (appends), forget (DeleteTopic), rollIdle
// (retention) and do.
type committer struct {
	log *Log

	dirtyMu    sync.Mutex
	dirty      []*Partition // guarded by dirtyMu: partitions with pending appends
	spareDirty []*Partition

	kick   chan struct{}     // dirty holds a partition
	full   chan struct{}     // a partition holds a full batch: stop lingering
	calls  chan func()       // run on the commit goroutine (do)
	syncCh chan []*partCycle // committer → syncer
	pubCh  chan syncedCycle  // syncer → publisher
	syncWG sync.WaitGroup    // cycles handed to the syncer and not yet published

	comp      *compressor
	wbuf      []byte
	unsynced  map[*Partition]struct{} // written under flush=interval/never, not yet fsynced
	cycleEWMA time.Duration           // how long writing a cycle takes

	policy          // when to cut the next cycle (policy.go)
	noAllocate bool // the file system cannot reserve blocks (preallocate)

	syncStarted atomic.Int64 // syncer: monoNow when the current fsync round began, 0 when idle
	syncEWMA    atomic.Int64 // syncer: how long an fsync round takes, in ns

	written   atomic.Int64 // bytes written to segment files
	syncs     atomic.Int64 // fsync rounds
	syncNanos atomic.Int64 // time in fsync rounds
}

// newCommitter makes l's pipeline; start runs it.
func newCommitter(l *Log) *committer {
	c := &committer{
		log:      l,
		kick:     make(chan struct{}, 1),
		full:     make(chan struct{}, 1),
		calls:    make(chan func()),
		syncCh:   make(chan []*partCycle),
		pubCh:    make(chan syncedCycle, 4),
		comp:     newCompressor(),
		unsynced: map[*Partition]struct{}{},
	}
	c.outRatio = 1
	c.cutRaw.Store(int64(l.opts.syncBytes))
	return c
}

// start runs the committer, syncer and publisher goroutines until the
// log's quit channel closes (counted in the log's WaitGroup).
func (c *committer) start() {
	c.log.wg.Add(3)
	go c.commitLoop()
	go c.syncLoop()
	go c.publishLoop()
}

// partCycle is one partition's share of a commit cycle.
type partCycle struct {
	p       *Partition
	items   []*pendingItem
	waiters []waiter
	marks   []segMark // segments written, with their size after this cycle
	next    int64     // the high watermark after this cycle
	sync    *segment  // the file to fsync (a reference is held), or nil
}

type segMark struct {
	s     *segment
	size  int64
	maxTs int64 // the segment's maxTs with those bytes
}

// commitLoop runs until quit, then drains what is pending.
func (c *committer) commitLoop() {
	defer c.log.wg.Done()
	defer close(c.syncCh)
	flushTimer := time.NewTimer(time.Hour)
	flushTimer.Stop()
	defer flushTimer.Stop()
	for {
		select {
		case fn := <-c.calls:
			fn()
			continue
		case <-c.kick:
		case <-flushTimer.C:
		case <-c.log.quit:
			for c.commitCycle() {
			}
			c.syncUnsynced()
			return
		}
		c.gather()
		start := time.Now()
		if c.commitCycle() {
			c.cycleEWMA = ewma(c.cycleEWMA, time.Since(start))
		}
		if d, ok := c.nextFlushDue(); ok {
			flushTimer.Reset(d)
		}
	}
}

// markDirty queues p for the next cycle (any goroutine).
func (c *committer) markDirty(p *Partition) {
	c.dirtyMu.Lock()
	c.dirty = append(c.dirty, p)
	c.dirtyMu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// wakeFull ends a gathering wait early (any goroutine): a partition holds
// a full batch, or the queues hold a cycle worth an fsync.
func (c *committer) wakeFull() {
	select {
	case c.full <- struct{}{}:
	default:
	}
}

// do runs fn on the commit goroutine and waits for it; after Close it
// returns without running fn.
func (c *committer) do(fn func()) {
	done := make(chan struct{})
	select {
	case c.calls <- func() { fn(); close(done) }:
		<-done
	case <-c.log.quit:
	}
}

// Ping returns once the commit goroutine has run a no-op, proving the
// write path is not wedged: the goroutine runs calls between cycles, and a
// cycle blocks once the sync stage is full, so an fsync stuck for longer
// than ctx allows makes Ping fail. It writes nothing. It returns ctx's
// error when the deadline comes first and ErrClosed after Close. The
// systemd watchdog (gateway) calls it.
func (l *Log) Ping(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case l.commit.calls <- func() { close(done) }:
	case <-l.quit:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("commitlog: ping: %w", ctx.Err())
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("commitlog: ping: %w", ctx.Err())
	}
}

// forget commits what parts have queued, waits until it is published and
// drops them from the pipeline (a deleted topic's partitions).
func (c *committer) forget(parts []*Partition) {
	c.do(func() {
		for c.commitCycle() {
		}
		c.syncWG.Wait()
		for _, p := range parts {
			delete(c.unsynced, p)
		}
	})
}

// rollIdle rolls active on the commit goroutine when it is still p's
// active segment and holds data; it reports whether it rolled.
func (c *committer) rollIdle(p *Partition, active *segment) bool {
	rolled := false
	if active == nil {
		return false
	}
	c.do(func() {
		if p.Err() != nil || p.deleted.Load() || p.activeSegment() != active || active.size.Load() == 0 || p.unsyncedWaiting() {
			return
		}
		if _, err := c.roll(p, active); err != nil {
			p.setErr(err)
			return
		}
		rolled = true
	})
	return rolled
}

// paceWait is how long the committer should keep gathering appends before
// cutting the next cycle: while the syncer is in an fsync, a cycle written
// now would wait for that fsync anyway, so the committer cuts it just in
// time (the fsync's expected end less the time a cycle takes to write).
// Cycles grow (fewer fsyncs, fewer partially rewritten pages, better
// compression) while the disk stays busy.
func (c *committer) paceWait() time.Duration {
	if !c.log.opts.pacing {
		return 0
	}
	started := c.syncStarted.Load()
	if started == 0 {
		return 0 // the syncer is idle: cut now
	}
	expectedEnd := time.Duration(started) + time.Duration(c.syncEWMA.Load())
	wait := expectedEnd - c.cycleEWMA - paceMargin - time.Duration(monoNow())
	if wait < minPaceWait {
		return 0 // fast fsyncs: a timer this short would wake late and idle the disk
	}
	return min(wait, maxPaceWait)
}

const (
	// paceMargin is subtracted from the wait for timer and scheduling
	// latency, so the next cycle is ready before the fsync ends.
	paceMargin = 200 * time.Microsecond
	// minPaceWait: below this, pacing gains little and timer granularity
	// costs more; cycles are cut at once.
	minPaceWait = 500 * time.Microsecond
	// maxPaceWait bounds pacing when an fsync takes unusually long.
	maxPaceWait = 20 * time.Millisecond
)

var monoBase = time.Now()

// monoNow is a monotonic nanosecond clock for pacing (never 0).
func monoNow() int64 { return int64(time.Since(monoBase)) + 1 }

// ewma is an exponentially weighted moving average with weight 1/8.
func ewma(avg, sample time.Duration) time.Duration {
	if avg == 0 {
		return sample
	}
	return avg + (sample-avg)/8
}

// commitCycle runs one cycle and reports whether there was anything to do.
func (c *committer) commitCycle() bool {
	c.dirtyMu.Lock()
	parts := c.dirty
	c.dirty = c.spareDirty[:0]
	c.dirtyMu.Unlock()
	defer func() { clear(parts); c.spareDirty = parts[:0] }()
	now := c.log.opts.clock.Monotonic()
	c.startGathering()
	writtenBefore := c.written.Load()
	var queued int64
	var toSync []*partCycle
	for _, p := range parts {
		items, waiters, n := p.takePending()
		c.pendRaw.Add(-int64(n))
		queued += int64(n)
		if len(items) == 0 {
			p.recycle(items, waiters)
			continue
		}
		pc := &partCycle{p: p, items: items, waiters: waiters}
		if err := p.Err(); err != nil { // sticky: never write after a failure
			p.finishCycle(pc, err)
			continue
		}
		if failFrom, err := c.writePartition(p, pc); err != nil {
			if failFrom < 0 {
				p.setErr(err)
				p.finishCycle(pc, err)
				continue
			}
			// The disk is full: what was not written fails now, nothing is
			// sticky, and appends are refused until space returns.
			c.log.noteDiskFull(p, err)
			pc.fail(failFrom, &FullError{Topic: p.topic.name, Partition: p.id, Reason: "disk_full", Err: err})
		}
		if p.topic.Config().Flush == FlushAlways {
			toSync = append(toSync, c.claimSync(p, pc))
			continue
		}
		if !p.unsynced {
			p.unsynced, p.unsyncedSince = true, now
			c.unsynced[p] = struct{}{}
		}
		p.finishCycle(pc, nil)
	}
	for p := range c.unsynced {
		cfg := p.topic.Config()
		if cfg.Flush == FlushInterval && now-p.unsyncedSince >= cfg.FlushInterval {
			toSync = append(toSync, c.claimSync(p, &partCycle{p: p}))
		}
	}
	if len(parts) > 0 {
		c.policyAfterCycle(queued, c.written.Load()-writtenBefore)
	}
	if len(toSync) > 0 {
		c.syncWG.Add(1)
		c.syncCh <- toSync
	}
	return len(parts) > 0
}

// fail completes the waiters of appends not wholly in the items before
// from with err now; the rest of the cycle goes on.
func (pc *partCycle) fail(from int, err error) {
	kept := pc.waiters[:0]
	for _, w := range pc.waiters {
		if w.last >= from {
			w.f.complete(pc.p.id, -1, err)
			pc.p.log.commit.noteDone(w.src)
			continue
		}
		kept = append(kept, w)
	}
	clear(pc.waiters[len(kept):])
	pc.waiters = kept
}

// claimSync makes pc fsync p's active segment, which covers everything
// written to p so far.
func (c *committer) claimSync(p *Partition, pc *partCycle) *partCycle {
	pc.sync = p.activeSegment()
	if pc.sync != nil { // nil only for a deleted partition: syncFiles fails it
		pc.sync.acquire()
	}
	p.unsynced = false
	delete(c.unsynced, p)
	return pc
}

// syncUnsynced fsyncs every partition with unsynced data and waits, as a
// clean shutdown does.
func (c *committer) syncUnsynced() {
	var toSync []*partCycle
	for p := range c.unsynced {
		toSync = append(toSync, c.claimSync(p, &partCycle{p: p}))
	}
	if len(toSync) > 0 {
		c.syncWG.Add(1)
		c.syncCh <- toSync
	}
	c.syncWG.Wait()
}

// nextFlushDue returns how long until the next flush=interval fsync.
func (c *committer) nextFlushDue() (time.Duration, bool) {
	now := c.log.opts.clock.Monotonic()
	best, ok := time.Duration(math.MaxInt64), false
	for p := range c.unsynced {
		cfg := p.topic.Config()
		if cfg.Flush != FlushInterval {
			continue
		}
		if due := max(p.unsyncedSince+cfg.FlushInterval-now, 0); due < best {
			best, ok = due, true
		}
	}
	return best, ok
}

// syncLoop fsyncs cycles in the order the committer wrote them and hands
// them to the publisher, so that completing one cycle's futures overlaps
// the next cycle's fsync.
func (c *committer) syncLoop() {
	defer c.log.wg.Done()
	defer close(c.pubCh)
	for cycle := range c.syncCh {
		errs := c.syncFiles(cycle)
		for i, pc := range cycle {
			if errs[i] != nil {
				pc.p.setErr(errs[i]) // before the next fsync: never retried
			}
			if pc.sync != nil {
				pc.sync.release()
			}
		}
		c.pubCh <- syncedCycle{parts: cycle, errs: errs}
	}
}

type syncedCycle struct {
	parts []*partCycle
	errs  []error
}

// publishLoop publishes synced cycles in order: readable bytes and high
// watermarks move, long polls wake, futures complete.
func (c *committer) publishLoop() {
	defer c.log.wg.Done()
	for sc := range c.pubCh {
		for i, pc := range sc.parts {
			pc.p.finishCycle(pc, sc.errs[i])
		}
		c.syncWG.Done()
	}
}

// syncFiles fsyncs each cycle's file, at most syncParallelism at a time. A
// partition that already failed is not synced again: fsync is never
// retried, because after a failure the kernel may have dropped the pages.
func (c *committer) syncFiles(cycle []*partCycle) []error {
	opts := &c.log.opts
	errs := make([]error, len(cycle))
	start := time.Now()
	c.syncStarted.Store(monoNow())
	defer c.syncStarted.Store(0)
	syncOne := func(i int) {
		p := cycle[i].p
		if err := p.Err(); err != nil {
			errs[i] = err
			return
		}
		if cycle[i].sync == nil {
			errs[i] = p.goneErr()
			return
		}
		if err := cycle[i].sync.file.Sync(); err != nil {
			errs[i] = &StorageError{Topic: p.topic.name, Partition: p.id, Op: "fsync", Err: err}
		}
	}
	if len(cycle) == 1 || opts.syncParallelism == 1 {
		for i := range cycle {
			syncOne(i)
		}
	} else {
		var wg sync.WaitGroup
		sem := make(chan struct{}, opts.syncParallelism)
		for i := range cycle {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				syncOne(i)
			})
		}
		wg.Wait()
	}
	d := time.Since(start)
	c.syncEWMA.Store(int64(ewma(time.Duration(c.syncEWMA.Load()), d)))
	c.syncs.Add(1)
	c.syncNanos.Add(int64(d))
	if h := opts.syncObserver; h != nil {
		h(d)
	}
	return errs
}

// storeMax raises v to x; publishes from two goroutines never move it back.
func storeMax(v *atomic.Int64, x int64) {
	for {
		cur := v.Load()
		if x <= cur || v.CompareAndSwap(cur, x) {
			return
		}
	}
}

// finishCycle publishes a partition's cycle (err == nil) or fails its
// waiters, then recycles the cycle's slices.
func (p *Partition) finishCycle(pc *partCycle, err error) {
	if err == nil && pc.marks != nil {
		for _, m := range pc.marks {
			storeMax(&m.s.readable, m.size)
			storeMax(&m.s.readMaxTs, m.maxTs)
		}
		storeMax(&p.hwm, pc.next)
		p.wake()
	}
	for _, w := range pc.waiters {
		if err != nil {
			w.f.complete(p.id, -1, err)
		} else {
			w.f.complete(p.id, pc.items[w.item].base+int64(w.idx), nil)
		}
		p.log.commit.noteDone(w.src)
	}
	if pc.items != nil {
		p.recycle(pc.items, pc.waiters)
	}
}

// recycle returns a cycle's slices and builders for reuse.
func (p *Partition) recycle(items []*pendingItem, waiters []waiter) {
	for _, it := range items {
		if it.b != nil && cap(it.b.records) <= 2<<20 {
			builderPool.Put(it.b)
		}
	}
	clear(items)
	clear(waiters)
	p.mu.Lock()
	p.mu.spareItems, p.mu.spareWaiters = items[:0], waiters[:0]
	p.mu.Unlock()
}

// writePartition encodes pc's items into batches and writes them to the
// active segment, rolling first when a batch would not fit. On success it
// returns (0, nil). A write or roll the disk had no room for is undone —
// the file truncated back, offsets and index entries restored — and it
// returns the index of the first item not written with an error wrapping
// ENOSPC: the items before it are written, the partition stays usable.
// Any other failure returns -1: the partition must stop (sticky).
func (c *committer) writePartition(p *Partition, pc *partCycle) (failFrom int, err error) {
	cfg := p.topic.Config()
	seg := p.activeSegment()
	if seg == nil {
		return -1, p.goneErr()
	}
	buf := c.wbuf[:0]
	defer func() {
		if cap(buf) <= 16<<20 {
			c.wbuf = buf[:0]
		} else {
			c.wbuf = nil
		}
	}()
	segStart := seg.size.Load()
	logNow := c.log.logNowMs()
	snap := takeSnap(p, seg, 0)
	for i, it := range pc.items {
		start := len(buf)
		if it.b != nil {
			recs, codec := c.comp.compress(it.b.records, cfg.Compression)
			buf = appendBatch(buf, batchFields{
				baseOffset: p.next, attributes: int16(codec), lastDelta: it.b.count - 1,
				firstTs: it.b.firstTs, maxTs: it.b.maxTs,
				producerID: -1, producerEpoch: -1, baseSequence: -1, count: it.b.count,
			}, recs)
		} else {
			buf = append(buf, it.raw...)
			setBatchOffset(buf[start:], p.next)
		}
		h, _ := ParseBatchHeader(buf[start:])
		if shouldRoll(p, seg, segStart+int64(start), h, cfg, logNow) {
			if start > 0 {
				if err := c.writeSegment(p, seg, buf[:start], segStart); err != nil {
					return c.undo(p, pc, seg, snap, segStart, err)
				}
			}
			pc.marks = append(pc.marks, segMark{s: seg, size: seg.size.Load(), maxTs: seg.maxTs.Load()})
			next, err := c.roll(p, seg)
			if err != nil {
				pc.next = p.next
				if errors.Is(err, errRollUndone) && isNoSpace(err) {
					return i, err // nothing of item i on is written; the roll is tried again
				}
				return -1, err
			}
			buf = buf[:copy(buf, buf[start:])]
			start, seg, segStart = 0, next, 0
			snap = takeSnap(p, seg, i)
		}
		it.base = p.next
		if segStart+int64(start) == 0 {
			seg.createdLog = logNow
		}
		seg.addIndexEntries(h, segStart+int64(start), cfg.IndexIntervalBytes)
		p.next = h.NextOffset()
		seg.logTime.Store(logNow)
	}
	if err := c.writeSegment(p, seg, buf, segStart); err != nil {
		return c.undo(p, pc, seg, snap, segStart, err)
	}
	pc.marks = append(pc.marks, segMark{s: seg, size: seg.size.Load(), maxTs: seg.maxTs.Load()})
	pc.next = p.next
	return 0, nil
}

// segSnap is what encoding one segment's share of a cycle changes in
// memory, so a write the disk has no room for can be undone.
type segSnap struct {
	item              int   // the share's first item
	next              int64 // p.next before it
	offsets, times    int   // index lengths
	maxTs, sinceIndex int64
	createdLog        int64
}

func takeSnap(p *Partition, seg *segment, item int) segSnap {
	seg.idx.RLock()
	defer seg.idx.RUnlock()
	return segSnap{item: item, next: p.next, offsets: len(seg.idx.offsets), times: len(seg.idx.times),
		maxTs: seg.maxTs.Load(), sinceIndex: seg.bytesSinceIndex, createdLog: seg.createdLog}
}

// undo handles a failed write of seg's share of the cycle (at segStart):
// with no room on the disk it truncates the file back, restores the
// snapshot and reports the share's first item as the first not written;
// any other failure is the partition's end (-1).
func (c *committer) undo(p *Partition, pc *partCycle, seg *segment, snap segSnap, segStart int64, err error) (int, error) {
	pc.next = p.next
	if !isNoSpace(err) {
		return -1, err
	}
	if terr := seg.file.Truncate(segStart); terr != nil { // a partial write must not stay
		return -1, fmt.Errorf("%w (truncating the partial write back failed: %w)", err, terr)
	}
	seg.allocated = 0 // truncate gave the reservation back
	p.next, pc.next = snap.next, snap.next
	seg.idx.Lock()
	seg.idx.offsets, seg.idx.times = seg.idx.offsets[:snap.offsets], seg.idx.times[:snap.times]
	seg.idx.Unlock()
	seg.maxTs.Store(snap.maxTs)
	seg.bytesSinceIndex, seg.createdLog = snap.sinceIndex, snap.createdLog
	pc.marks = append(pc.marks, segMark{s: seg, size: seg.size.Load(), maxTs: seg.maxTs.Load()})
	return snap.item, err
}

// isNoSpace reports whether err says the filesystem is full (or the
// user's quota is).
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

func (c *committer) writeSegment(p *Partition, seg *segment, data []byte, pos int64) error {
	if end := pos + int64(len(data)); end > seg.allocated && c.log.opts.preallocate && !c.noAllocate {
		c.preallocate(p, seg, end)
	}
	if _, err := seg.file.WriteAt(data, pos); err != nil {
		return &StorageError{Topic: p.topic.name, Partition: p.id, Op: "write", Err: err}
	}
	seg.size.Add(int64(len(data)))
	seg.next.Store(p.next)
	p.bytes.Add(int64(len(data)))
	c.written.Add(int64(len(data)))
	if c.log.freeBudget.Add(-int64(len(data))) < 0 {
		c.log.kickRetention()
	}
	return nil
}

// preallocate reserves the active segment's blocks from end on, before a
// write up to end (vfs.Allocator: the file's size does not change). Without
// it every commit cycle that crosses into a new block makes ext4 allocate
// it (block bitmap, group descriptor, extent tree), and the fdatasync must
// commit that to the journal: measured here, 12.3 KiB instead of 16 KiB
// written per fsync of 4.4 KiB. PostgreSQL pre-fills its WAL files and etcd
// preallocates its WAL segments for the same reason; a reservation that
// keeps the size has no stale bytes to mistake for records, so recovery
// needs nothing new. The chunk grows with the segment (an eighth of its
// size, 64 KiB to 4 MiB), so idle partitions reserve little, and never
// passes the roll size; a refusal (a full disk) only skips the chunk, and a
// file system without fallocate turns preallocation off. Roll gives the
// unused tail back (truncate to size).
func (c *committer) preallocate(p *Partition, seg *segment, end int64) {
	limit := max(p.topic.Config().rollBytes(), end)
	chunk := min(max(end/8, 64<<10), 4<<20)
	to := min(end+chunk, limit)
	from := max(seg.allocated, seg.size.Load())
	if to <= from {
		seg.allocated = to
		return
	}
	err := vfs.Allocate(seg.file, from, to-from)
	seg.allocated = to // refused or not: try again at the next chunk
	if errors.Is(err, errors.ErrUnsupported) {
		c.noAllocate = true
		c.log.opts.logger.Info("commitlog: the file system cannot reserve blocks ahead of writes; each commit may also write allocation metadata",
			"topic", p.topic.name, "partition", p.id, "err", err)
	}
}

// releaseAllocated gives back the blocks reserved beyond a segment's size
// (it is being sealed: no more writes). It truncates whenever the log
// preallocates, not only when this process reserved: a reservation made
// before a crash is not known after it.
func (c *committer) releaseAllocated(seg *segment) {
	if c.log.opts.preallocate && !c.noAllocate {
		_ = seg.file.Truncate(seg.size.Load()) // best effort: the reservation is invisible, only space
		seg.allocated = 0
	}
}

// shouldRoll decides whether a batch that would start at pos goes into a
// new segment.
func shouldRoll(p *Partition, seg *segment, pos int64, h BatchHeader, cfg TopicConfig, logNow int64) bool {
	if pos == 0 {
		return false
	}
	return pos+h.Size() > cfg.rollBytes() ||
		p.forceRoll.Load() ||
		logNow-seg.createdLog > cfg.SegmentAge.Milliseconds() ||
		h.LastOffset()-seg.base > math.MaxUint32
}

// roll seals the active segment (data and index files durable) and starts
// a new one at the next offset. The new file's directory entry is fsynced
// before anything is written to it, so a crash never leaves acknowledged
// data in a file the directory forgot. A roll that fails creating the new
// file or writing the old one's indexes (a full disk, say) is undone: the
// new file is removed, the old segment stays active, and the error wraps
// errRollUndone; a failed fsync is the partition's end.
func (c *committer) roll(p *Partition, old *segment) (*segment, error) {
	l := c.log
	fail := func(err error) (*segment, error) {
		return nil, &StorageError{Topic: p.topic.name, Partition: p.id, Op: "roll", Err: err}
	}
	if err := old.file.Sync(); err != nil {
		return fail(err)
	}
	c.releaseAllocated(old)
	if old.indexBad.Load() { // a read found the in-memory index wrong: fix it before it goes to disk
		p.repairIndex(old, errors.New("sealing a segment whose index a read found wrong"))
	}
	seg, err := l.createSegment(p.dir, p.next)
	if err != nil {
		return fail(fmt.Errorf("%w: %w", errRollUndone, err))
	}
	undo := func(err error) (*segment, error) {
		_ = seg.file.Close()
		_ = l.opts.fs.Remove(seg.path(suffixLog))
		_ = l.opts.fs.SyncDir(p.dir)
		return fail(fmt.Errorf("%w: %w", errRollUndone, err))
	}
	if err := l.opts.fs.SyncDir(p.dir); err != nil {
		return undo(err)
	}
	old.filesMu.Lock()
	err = old.writeIndexes(l.opts.fs)
	if err == nil {
		old.sealed.Store(true)
		old.dropMemoryIndex()
		if lf := old.lazy(); lf != nil {
			lf.seal() // its file counts against WithMaxOpenSegments from now on
		}
	}
	old.filesMu.Unlock()
	if err != nil {
		return undo(err)
	}
	p.segMu.Lock()
	p.segs = append(p.segs, seg)
	p.segMu.Unlock()
	p.forceRoll.Store(false)
	if err := p.writeState(false); err != nil {
		// The previous state stays, marked unclean: a crash rescans, and
		// the next roll or a clean close writes it again.
		l.opts.logger.Warn("commitlog: cannot record a segment roll in the partition state", "topic", p.topic.name,
			"partition", p.id, "err", err)
	}
	return seg, nil
}

// errRollUndone marks a roll that failed before it changed anything.
var errRollUndone = errors.New("commitlog: segment roll undone")

// createSegment creates an empty segment file at base.
func (l *Log) createSegment(dir string, base int64) (*segment, error) {
	s := &segment{dir: dir, base: base}
	f, err := l.opts.fs.OpenFile(s.path(suffixLog), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	s.file = l.files.wrap(s, s.path(suffixLog), f, true)
	s.refs.Store(1)
	s.next.Store(base)
	s.maxTs.Store(-1)
	s.readMaxTs.Store(-1)
	s.logTime.Store(l.logNowMs())
	s.createdLog = l.logNowMs()
	return s, nil
}
