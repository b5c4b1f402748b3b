package commitlog

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// pendingItem is one batch waiting for the next commit cycle: records the
// log encodes into a batch of its own, or a raw batch from a Kafka producer.
type pendingItem struct {
	b    *batchBuilder
	raw  []byte
	base int64 // assigned by the committer
}

// waiter is an append waiting for its records to be committed.
type waiter struct {
	f    *Future
	item int   // index of the item holding the append's first record
	last int   // index of the item holding its last record
	idx  int32 // that record's index within the item
	src  *Source
}

var builderPool = sync.Pool{New: func() any { return new(batchBuilder) }}

// Partition is one ordered, offset-addressed sequence of record batches.
type Partition struct {
	topic *Topic
	id    int32
	dir   string
	log   *Log

	// mu guards what appenders hand to the committer.
	mu struct {
		sync.Mutex
		items   []*pendingItem
		waiters []waiter
		bytes   int           // bytes in items
		dirty   bool          // queued on the log's dirty list
		err     error         // sticky storage error
		spaceCh chan struct{} // closed when the committer takes items

		spareItems   []*pendingItem // recycled slices for the next cycle
		spareWaiters []waiter
	}

	// segMu guards the segment list; the last segment is the active one.
	// Held only to read or swap the list, never across I/O. The list is
	// empty only once the partition's topic was deleted (or the log closed).
	segMu sync.RWMutex
	segs  []*segment

	// deleted and closed say the partition takes no more work (closedErr).
	// DeleteTopic sets deleted, then closed, before it releases the
	// segments; Log.Close sets closed. closed is stored while holding mu,
	// so an append holding mu either was queued before it (and is
	// committed) or sees it; readers (Wait) load both without a lock.
	deleted atomic.Bool
	closed  atomic.Bool

	// Committer-owned state (the committer goroutine, or Open/Close while
	// the committer is not running).
	next          int64 // next offset to assign
	unsynced      bool  // data written to the active segment but not fsynced
	unsyncedSince time.Duration

	forceRoll atomic.Bool  // retention asks for the active segment to roll
	hwm       atomic.Int64 // offset after the last record readers may see
	logStart  atomic.Int64 // first offset still stored
	bytes     atomic.Int64 // total size of all segments
	cleanedTo atomic.Int64 // compaction has cleaned offsets below this

	notifyMu sync.Mutex
	notify   chan struct{}         // closed and replaced at each change (Changed)
	watchers map[*Watcher]struct{} // signalled at each change (watch.go)

	reportMu sync.Mutex
	report   RecoveryReport

	holds holdSet
}

// Topic returns the partition's topic.
func (p *Partition) Topic() *Topic { return p.topic }

// ID returns the partition number.
func (p *Partition) ID() int32 { return p.id }

// HighWatermark is the offset after the last record readers may see: for
// flush=always, the last fsynced record.
func (p *Partition) HighWatermark() int64 { return p.hwm.Load() }

// StartOffset is the first offset still stored.
func (p *Partition) StartOffset() int64 { return p.logStart.Load() }

// Size is the bytes the partition's segments hold.
func (p *Partition) Size() int64 { return p.bytes.Load() }

// Changed returns a channel closed the next time the high watermark moves
// (or the partition goes away); a Watcher waits on several partitions.
func (p *Partition) Changed() <-chan struct{} {
	p.notifyMu.Lock()
	defer p.notifyMu.Unlock()
	return p.notify
}

func (p *Partition) wake() {
	p.notifyMu.Lock()
	close(p.notify)
	p.notify = make(chan struct{})
	for w := range p.watchers {
		w.signal()
	}
	p.notifyMu.Unlock()
}

// Wait blocks until the high watermark passes offset (there is a record at
// offset to read), ctx ends, or the partition goes away (ErrTopicDeleted,
// ErrClosed). It does not poll: it sleeps on Changed.
func (p *Partition) Wait(ctx context.Context, offset int64) error {
	for {
		ch := p.Changed()
		if p.hwm.Load() > offset {
			return nil
		}
		if err := p.closedErr(); err != nil {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Append queues records for the next commit cycle and returns at once; the
// future completes when they are durable under the topic's flush policy.
// Records are copied, so the caller may reuse them. Append blocks only when
// the partition already has its maximum of pending bytes (until the
// committer takes them or ctx ends).
func (p *Partition) Append(ctx context.Context, recs []Record) *Future {
	f := newFuture(1)
	p.append(ctx, recs, f)
	return f
}

func (p *Partition) append(ctx context.Context, recs []Record, f *Future) {
	cfg := p.topic.Config()
	compacted := cfg.Cleanup.compacts()
	need := 0
	for i := range recs {
		r := &recs[i]
		hint := r.encodedSizeHint()
		if hint > cfg.MaxBatchBytes-BatchHeaderSize {
			f.complete(p.id, -1, fmt.Errorf("%w: %d bytes, topic %s allows %d per batch", ErrRecordTooLarge, hint, p.topic.name, cfg.MaxBatchBytes))
			return
		}
		if compacted && r.Key == nil {
			f.complete(p.id, -1, fmt.Errorf("%w: topic %s", ErrNullKey, p.topic.name))
			return
		}
		need += hint
	}
	if len(recs) == 0 {
		f.complete(p.id, p.hwm.Load(), nil)
		return
	}
	need += BatchHeaderSize // the batch these records may start
	now := p.log.opts.clock.Now().UnixMilli()
	p.mu.Lock()
	if err := p.waitSpaceLocked(ctx, need, cfg); err != nil {
		p.mu.Unlock()
		f.complete(p.id, -1, err)
		return
	}
	queuedBefore := p.mu.bytes
	src := sourceOf(ctx)
	var it *pendingItem
	if n := len(p.mu.items); n > 0 && p.mu.items[n-1].b != nil {
		it = p.mu.items[n-1]
	}
	for i := range recs {
		r := &recs[i]
		if it == nil || len(it.b.records)+r.encodedSizeHint() > cfg.MaxBatchBytes-BatchHeaderSize {
			b := builderPool.Get().(*batchBuilder)
			b.reset()
			it = &pendingItem{b: b}
			p.mu.items = append(p.mu.items, it)
		}
		if i == 0 {
			p.mu.waiters = append(p.mu.waiters, waiter{f: f, item: len(p.mu.items) - 1, idx: it.b.count, src: src})
		}
		ts := r.Timestamp
		if ts == 0 {
			ts = now
		}
		before := len(it.b.records)
		it.b.add(r, ts)
		p.mu.bytes += len(it.b.records) - before
	}
	p.mu.waiters[len(p.mu.waiters)-1].last = len(p.mu.items) - 1
	p.queueLocked(cfg.MaxBatchBytes, p.mu.bytes-queuedBefore, src)
}

// AppendBatch queues a complete RecordBatch v2 (as a Kafka producer sends
// it) to be stored byte for byte but for its base offset and leader epoch.
// The future's offset is the batch's assigned base offset. The batch is
// validated first (ValidateBatch: framing and CRC; checkProduced: dense
// offsets, no control batch; not the records) and a refusal counted in
// TopicStats.InvalidBatches. A caller that validated the batch already
// (ValidateProduced) appends it with AppendValidatedBatch.
func (p *Partition) AppendBatch(ctx context.Context, batch []byte) *Future {
	h, err := ValidateBatch(batch)
	if err == nil {
		err = checkProduced(h)
	}
	if err != nil {
		p.topic.stats.badBatches.Add(1)
		f := newFuture(1)
		f.complete(p.id, -1, fmt.Errorf("%w (topic %s partition %d)", err, p.topic.name, p.id))
		return f
	}
	return p.AppendValidatedBatch(ctx, ValidBatch{h: h, b: batch})
}

// AppendValidatedBatch is AppendBatch for a batch ValidateProduced
// accepted: it is not checked again (its CRC is computed once), only held
// against the topic's MaxBatchBytes (ErrRecordTooLarge). The batch is
// copied. A zero ValidBatch is refused with ErrInvalidBatch.
func (p *Partition) AppendValidatedBatch(ctx context.Context, vb ValidBatch) *Future {
	f := newFuture(1)
	batch := vb.b
	if batch == nil {
		f.complete(p.id, -1, fmt.Errorf("%w: no batch: a ValidBatch comes from ValidateProduced (topic %s partition %d)", ErrInvalidBatch, p.topic.name, p.id))
		return f
	}
	cfg := p.topic.Config()
	if len(batch) > cfg.MaxBatchBytes {
		f.complete(p.id, -1, fmt.Errorf("%w: batch of %d bytes, topic %s allows %d", ErrRecordTooLarge, len(batch), p.topic.name, cfg.MaxBatchBytes))
		return f
	}
	p.mu.Lock()
	if err := p.waitSpaceLocked(ctx, len(batch), cfg); err != nil {
		p.mu.Unlock()
		f.complete(p.id, -1, err)
		return f
	}
	p.mu.items = append(p.mu.items, &pendingItem{raw: append([]byte(nil), batch...)})
	p.mu.waiters = append(p.mu.waiters, waiter{f: f, item: len(p.mu.items) - 1, last: len(p.mu.items) - 1, src: sourceOf(ctx)})
	p.mu.bytes += len(batch)
	p.queueLocked(cfg.MaxBatchBytes, len(batch), sourceOf(ctx))
	return f
}

// closedErr is nil while the partition is open, then the error for the
// work it no longer takes: ErrTopicDeleted after DeleteTopic, ErrClosed
// after Log.Close. It takes no lock.
func (p *Partition) closedErr() error {
	switch {
	case p.deleted.Load():
		return ErrTopicDeleted
	case p.closed.Load():
		return ErrClosed
	}
	return nil
}

// goneErr is closedErr for a caller that found the partition's segments
// gone, which only DeleteTopic and Log.Close do: never nil.
func (p *Partition) goneErr() error {
	if err := p.closedErr(); err != nil {
		return err
	}
	return ErrClosed
}

// waitSpaceLocked applies the full policy and the pending-bytes bound.
func (p *Partition) waitSpaceLocked(ctx context.Context, need int, cfg TopicConfig) error {
	for {
		switch {
		case p.closed.Load():
			return p.goneErr()
		case p.mu.err != nil:
			return p.mu.err
		case p.log.diskStillFull():
			p.topic.stats.rejected.Add(1)
			return &FullError{Topic: p.topic.name, Partition: p.id, Reason: "disk_full", Err: errDiskFull}
		}
		if cfg.OnFull == RejectNew {
			if cfg.limitsBytes() && p.bytes.Load()+int64(p.mu.bytes+need) > cfg.RetentionBytes {
				p.topic.stats.rejected.Add(1)
				return &FullError{Topic: p.topic.name, Partition: p.id, Reason: "retention_bytes"}
			}
			if p.log.diskLow.Load() {
				p.topic.stats.rejected.Add(1)
				p.log.kickRetention() // re-check the disk soon
				return &FullError{Topic: p.topic.name, Partition: p.id, Reason: "disk_free"}
			}
		}
		if p.mu.bytes == 0 || p.mu.bytes+need <= p.log.opts.maxPendingBytes {
			return nil
		}
		if p.mu.spaceCh == nil {
			p.mu.spaceCh = make(chan struct{})
		}
		ch := p.mu.spaceCh
		p.mu.Unlock()
		var ctxErr error
		if ctx == nil {
			<-ch
		} else {
			select {
			case <-ch:
			case <-ctx.Done():
				ctxErr = ctx.Err()
			}
		}
		p.mu.Lock()
		if ctxErr != nil {
			return ctxErr
		}
	}
}

// queueLocked puts the partition on the committer's dirty list (once),
// unlocks, and tells the commit policy that src queued added bytes. A
// partition holding a full batch's worth ends the committer's gathering
// wait early: the size trigger.
func (p *Partition) queueLocked(batchBytes, added int, src *Source) {
	full := p.mu.bytes >= batchBytes
	wasDirty := p.mu.dirty
	p.mu.dirty = true
	p.mu.Unlock()
	c := p.log.commit
	c.noteAppend(added, src)
	if !wasDirty {
		c.markDirty(p)
	}
	if full {
		c.fullNow.Store(true)
		c.wakeFull()
	}
}

// takePending hands the queued items and waiters to the committer.
func (p *Partition) takePending() ([]*pendingItem, []waiter, int) {
	p.mu.Lock()
	items, waiters, n := p.mu.items, p.mu.waiters, p.mu.bytes
	p.mu.items, p.mu.waiters = p.mu.spareItems, p.mu.spareWaiters
	p.mu.spareItems, p.mu.spareWaiters = nil, nil
	p.mu.bytes = 0
	p.mu.dirty = false
	if p.mu.spaceCh != nil {
		close(p.mu.spaceCh)
		p.mu.spaceCh = nil
	}
	p.mu.Unlock()
	return items, waiters, n
}

// setErr makes err the partition's sticky error (the first one wins).
func (p *Partition) setErr(err error) {
	p.mu.Lock()
	if p.mu.err == nil {
		p.mu.err = err
	}
	p.mu.Unlock()
}

// Err returns the partition's sticky storage error, if any.
func (p *Partition) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.err
}

// segments returns the segment list with a reference held on each segment
// from index i on, where i is the last segment whose base is <= offset.
func (p *Partition) acquireFrom(offset int64) []*segment {
	p.segMu.RLock()
	defer p.segMu.RUnlock()
	segs := p.segs
	if len(segs) == 0 {
		return nil
	}
	i := sort.Search(len(segs), func(i int) bool { return segs[i].base > offset }) - 1
	if i < 0 {
		i = 0
	}
	out := append([]*segment(nil), segs[i:]...)
	for _, s := range out {
		s.acquire()
	}
	return out
}

func releaseAll(segs []*segment) {
	for _, s := range segs {
		s.release()
	}
}

// activeSegment returns the active segment, or nil once the partition's
// segments are gone (deleted topic, closed log).
func (p *Partition) activeSegment() *segment {
	p.segMu.RLock()
	defer p.segMu.RUnlock()
	if len(p.segs) == 0 {
		return nil
	}
	return p.segs[len(p.segs)-1]
}

// hasSegment reports whether s is still in the segment list.
func (p *Partition) hasSegment(s *segment) bool {
	p.segMu.RLock()
	defer p.segMu.RUnlock()
	for _, cur := range p.segs {
		if cur == s {
			return true
		}
	}
	return false
}

// Segments returns the number of segments.
func (p *Partition) Segments() int {
	p.segMu.RLock()
	defer p.segMu.RUnlock()
	return len(p.segs)
}

// RecoveryReport describes what opening the partition found and repaired.
type RecoveryReport struct {
	Topic          string
	Partition      int32
	Clean          bool    // the previous shutdown was clean: nothing scanned
	ScannedBytes   int64   // bytes validated batch by batch
	TruncatedBytes int64   // bytes cut from the end of the active segment
	TruncateReason string  // why the scan stopped, when it cut bytes
	IndexRebuilt   []int64 // bases of segments whose indexes were rebuilt (at open or by a read that found them wrong)
	// IndexUnwritten are bases of sealed segments whose rebuilt indexes
	// could not be written: they are served from an in-memory index and
	// rebuilt again on the next open.
	IndexUnwritten []int64
	Damaged        []Damage
}

// Damage is a sealed segment found invalid (or unreadable) from Position
// on. Reads skip from there to the next segment; the file is kept for
// inspection.
type Damage struct {
	Segment     int64 // base offset
	Position    int64
	LostBytes   int64 // -1 when the file could not even be opened or sized
	FirstOffset int64 // first offset that can no longer be read
	NextOffset  int64 // where reads resume
	Reason      string
}

// Recovery returns what opening the partition found (and any damage found
// by reads since).
func (p *Partition) Recovery() RecoveryReport {
	p.reportMu.Lock()
	defer p.reportMu.Unlock()
	r := p.report
	r.IndexRebuilt = append([]int64(nil), r.IndexRebuilt...)
	r.IndexUnwritten = append([]int64(nil), r.IndexUnwritten...)
	r.Damaged = append([]Damage(nil), r.Damaged...)
	return r
}
