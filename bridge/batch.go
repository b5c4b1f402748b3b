package bridge

import (
	"errors"
	"fmt"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

// TP names an edge partition.
type TP struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
}

func (tp TP) String() string { return fmt.Sprintf("%s/%d", tp.Topic, tp.Partition) }

// Progress is a partition's replication position: every offset below Next
// is upstream, and with live_first also [LiveFrom, LiveNext). LiveFrom is
// 0 when the partition is not split (a split always has Next < LiveFrom).
type Progress struct {
	Next     int64 `json:"next"`
	LiveFrom int64 `json:"live_from,omitempty"`
	LiveNext int64 `json:"live_next,omitempty"`
}

func (p Progress) split() bool { return p.LiveFrom > 0 }

// ahead is the number of records at or above Next already upstream.
func (p Progress) ahead() int64 {
	if p.split() {
		return p.LiveNext - p.LiveFrom
	}
	return 0
}

// covers reports whether offset o is below Next or in the live range.
func (p Progress) covers(o int64) bool {
	return o < p.Next || (p.split() && o >= p.LiveFrom && o < p.LiveNext)
}

// union is the smallest Progress covering every offset a or b covers (a
// superset when no Progress covers exactly those).
func union(a, b Progress) Progress {
	live := b
	if !live.split() {
		live = a
	}
	out := Progress{LiveFrom: live.LiveFrom, LiveNext: live.LiveNext}
	out.Next = max(a.Next, b.Next)
	for _, p := range []Progress{a, b} {
		switch {
		case !p.split():
		case p.LiveFrom == out.LiveFrom:
			out.LiveNext = max(out.LiveNext, p.LiveNext)
		default:
			out.Next = max(out.Next, p.LiveNext) // an older live range: under Next, with what lies between
		}
	}
	if out.split() && out.Next >= out.LiveFrom {
		out = Progress{Next: max(out.Next, out.LiveNext)}
	}
	return out
}

// Item is one record on its way upstream.
type Item struct {
	TP
	Record commitlog.Record
}

// Batch is what one Send delivers: records from any number of partitions,
// each partition's in offset order, and the partitions' progress once the
// batch is upstream (a target that stores checkpoints upstream writes them
// with the records, atomically).
type Batch struct {
	Items    []Item
	Progress map[TP]Progress
	Bytes    int // key, value and header bytes of Items
	// Rejected are records this batch passes over because the upstream
	// refused them for good (see RejectedError). A target that stores
	// checkpoints upstream may record them with the checkpoints.
	Rejected []Rejected

	drops []drop // ranges retention dropped before replication, passed over by this batch
}

// drop is a range of a partition's offsets retention deleted unreplicated.
type drop struct {
	tp       TP
	from, to int64
}

// refreshEvery bounds how long an idle engine goes without looking for
// new partitions of its topics.
const refreshEvery = 10 * time.Second

// limits are the effective batch limits of a session.
type limits struct {
	batchBytes, batchRecords int
	recordBytes              int // 0: no per-record limit
}

// with applies a Conn's Limits: smaller non-zero values win.
func (l limits) with(t Limits) limits {
	if t.MaxBatchBytes > 0 {
		l.batchBytes = min(l.batchBytes, t.MaxBatchBytes)
	}
	if t.MaxBatchRecords > 0 {
		l.batchRecords = min(l.batchRecords, t.MaxBatchRecords)
	}
	if t.MaxRecordBytes > 0 {
		l.recordBytes = t.MaxRecordBytes
	}
	return l
}

// fillPlan is everything a fill reads: a copy of the cursors' positions
// and maps the run goroutine leaves alone while a fill runs.
type fillPlan struct {
	order    []*cursor // the partitions to read, in order (only c.tp and c.p are read)
	from     map[TP]Progress
	lim      limits
	rejected map[TP]map[int64]string // records to pass over as rejected → reason
}

// plan is the next fill's plan (run goroutine only): every partition, or
// while suspects are being isolated only theirs, in smaller batches.
func (e *Engine) plan() fillPlan {
	pl := fillPlan{order: e.order(), from: e.positions(), lim: e.lim, rejected: e.rejects}
	if e.isolate.active() {
		pl.lim.batchRecords = min(pl.lim.batchRecords, e.isolate.cap)
		order := pl.order[:0:0]
		for _, c := range pl.order {
			if len(e.isolate.suspects[c.tp]) > 0 {
				order = append(order, c)
			}
		}
		pl.order = order
	}
	return pl
}

// nextBatch blocks until records are waiting, lingers briefly after an
// idle spell so a trickle travels in fewer batches, then packs up to the
// batch limits: live ranges first (live_first), then every partition's
// oldest records, round robin. It reads the log once per batch: whether
// records wait, and how many, comes from the high watermarks.
func (e *Engine) nextBatch() (*Batch, error) {
	idle := false
	for {
		pl := e.plan()
		if n := pl.waiting(); n > 0 {
			if idle && e.cfg.Linger > 0 && n < int64(pl.lim.batchRecords) {
				idle = false
				t := time.NewTimer(e.cfg.Linger)
				select {
				case <-t.C:
				case <-e.ctx.Done():
					t.Stop()
					return nil, e.ctx.Err()
				}
			}
			b, err := e.fill(pl) // with what arrived meanwhile: the high watermarks are read again
			if err != nil {
				return nil, err
			}
			if len(b.Items) > 0 || len(b.Progress) > 0 {
				return b, nil
			}
		}
		idle = true
		if err := e.waitData(pl.order); err != nil {
			return nil, err
		}
	}
}

// waiting is the number of offsets of the plan's partitions not yet
// upstream (compaction gaps and control batches included).
func (pl *fillPlan) waiting() int64 {
	var n int64
	for _, c := range pl.order {
		p := pl.from[c.tp]
		n += max(c.p.HighWatermark()-p.Next-p.ahead(), 0)
	}
	return n
}

// waitData sleeps until any of the partitions' high watermark moves.
func (e *Engine) waitData(order []*cursor) error {
	w := commitlog.NewWatcher()
	defer w.Stop()
	for _, c := range order {
		w.Watch(c.p) // before the check: a move after it wakes the wait
		if c.p.HighWatermark() > c.prog.Next+c.prog.ahead() {
			return nil
		}
	}
	if e.onIdle != nil {
		e.onIdle()
	}
	timer := time.NewTimer(refreshEvery)
	defer timer.Stop()
	select {
	case <-e.ctx.Done():
		return e.ctx.Err()
	case <-timer.C:
		return e.refreshPartitions()
	case <-w.C():
		return nil
	case <-e.resendKick:
		return errResend // the session ends; the next starts where Resend said
	}
}

// positions returns every cursor's progress (run goroutine only).
func (e *Engine) positions() map[TP]Progress {
	m := make(map[TP]Progress, len(e.cursors))
	for tp, c := range e.cursors {
		m[tp] = c.prog
	}
	return m
}

// fill packs one batch of the plan's partitions without advancing the
// cursors. It reads nothing of the engine's mutable state, so a prefetch
// can run it while the run goroutine sends. It stops early, with the
// engine's context error, when the engine is closing.
func (e *Engine) fill(pl fillPlan) (*Batch, error) {
	b := &Batch{Progress: map[TP]Progress{}}
	prog := make(map[TP]Progress, len(pl.order))
	for _, c := range pl.order {
		p := pl.from[c.tp]
		if e.cfg.Order == LiveFirst && !p.split() {
			if hwm := c.p.HighWatermark(); hwm-p.Next > e.cfg.LiveThreshold {
				p.LiveFrom, p.LiveNext = hwm, hwm
				e.logger.Info("bridge: backlog split, live records go first", "bridge", e.cfg.Name, "partition", c.tp.String(),
					"backlog", hwm-p.Next)
				b.Progress[c.tp] = p
			}
		}
		prog[c.tp] = p
	}
	full := func() bool { return b.Bytes >= pl.lim.batchBytes || len(b.Items) >= pl.lim.batchRecords }
	// Live ranges first, then backlogs; a few rounds so every partition
	// gets a share of the batch.
	for _, live := range []bool{true, false} {
		for round := 0; round < 4 && !full(); round++ {
			share := max((pl.lim.batchBytes-b.Bytes)/max(len(pl.order), 1), 64<<10)
			moved := false
			for _, c := range pl.order {
				if full() {
					break
				}
				if err := e.ctx.Err(); err != nil {
					return nil, err
				}
				p := prog[c.tp]
				if live && !p.split() {
					continue
				}
				n, np, err := e.readInto(b, &pl, c, p, live, min(share, pl.lim.batchBytes-b.Bytes))
				if err != nil {
					return nil, err
				}
				if np != p {
					prog[c.tp], b.Progress[c.tp] = np, np
					moved = moved || n > 0 || np != p
				}
			}
			if !moved {
				break
			}
		}
	}
	return b, nil
}

// order is the cursors sorted by topic and partition.
func (e *Engine) order() []*cursor {
	out := make([]*cursor, 0, len(e.cursors))
	for _, c := range e.cursors {
		out = append(out, c)
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && less(out[j].tp, out[j-1].tp); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func less(a, b TP) bool {
	return a.Topic < b.Topic || (a.Topic == b.Topic && a.Partition < b.Partition)
}

// readInto appends records of one range of c (the live range, or the
// backlog/whole range) to b, up to maxBytes (a share: the first record
// goes in whatever its size) and never past the batch limits (unless a
// single record is larger than the whole batch: it then travels alone),
// and returns the new progress. Records the plan says to pass over, or
// larger than the upstream takes, go to b.Rejected instead.
func (e *Engine) readInto(b *Batch, pl *fillPlan, c *cursor, p Progress, live bool, maxBytes int) (int, Progress, error) {
	from, end := p.Next, c.p.HighWatermark()
	if live {
		from = p.LiveNext
	} else if p.split() {
		end = p.LiveFrom
	}
	if start := c.p.StartOffset(); !live && from < start {
		// Retention (overwrite_oldest under a size or disk limit) dropped
		// records before they were replicated: pass over them, counted once the
		// batch that moves past them is acknowledged (a failed Send passes over
		// them again).
		b.drops = append(b.drops, drop{tp: c.tp, from: from, to: start})
		from = start
		p = advance(p, start)
	}
	if from >= end {
		if !live && p.split() && p.Next >= p.LiveFrom {
			p = advance(p, p.LiveFrom) // the backlog met the live range: merge
		}
		return 0, p, nil
	}
	lim := pl.lim
	rejected := pl.rejected[c.tp]
	// maxBytes counts record bytes, the log's read limit stored ones, which
	// zstd makes five to ten times smaller: read in steps and stop at the
	// share, rather than decode far more than the batch takes (and give
	// the other partitions their turn, round robin).
	n, added, pos := 0, 0, from
	for pos < end && added < maxBytes {
		recs, next, _, err := c.p.ReadRecords(pos, min(maxBytes-added, readStep))
		if e.onRead != nil {
			e.onRead(c.tp, len(recs))
		}
		if errors.Is(err, commitlog.ErrOffsetOutOfRange) {
			break // retention moved the start meanwhile: next round
		}
		if err != nil {
			if n > 0 {
				break // send what was read; the error comes back next time
			}
			return 0, p, err
		}
		if cap(b.Items) == 0 && len(recs) > 0 {
			// Size the batch once from the first record, rather than
			// growing (and copying) it a dozen times, but never beyond
			// what this partition has waiting: a trickle batch of one
			// record must not cost a full batch's Items (append grows it
			// if other partitions add more).
			b.Items = make([]Item, 0, min(lim.batchRecords, lim.batchBytes/max(recordBytes(&recs[0]), 16)+1, int(end-pos)))
		}
		upto := min(next, end) // everything read was taken (gaps from compaction or control batches included)
		for _, d := range c.p.DamagedBetween(pos, upto) {
			// Damaged on the edge's disk: never sent, and never silently —
			// recorded like a record the upstream refused.
			first, last := max(d.FirstOffset, pos), min(d.NextOffset, upto)-1
			b.Rejected = append(b.Rejected, Rejected{TP: c.tp, Offset: first, Through: last, Bytes: int(d.LostBytes),
				Reason: fmt.Sprintf("damaged on the edge's disk (segment %d, %d bytes at %d: %s); never sent", d.Segment, d.LostBytes, d.Position, d.Reason)})
		}
		full := false
		for i := range recs { // all at or above pos: ReadRecords leaves out what lies below
			r := &recs[i]
			if r.Offset >= end {
				upto = end
				break
			}
			rb := recordBytes(r)
			reason, bad := rejected[r.Offset]
			if !bad && lim.recordBytes > 0 && rb > lim.recordBytes {
				reason, bad = fmt.Sprintf("record of %d bytes is larger than the upstream takes (%d)", rb, lim.recordBytes), true
			}
			if bad {
				b.Rejected = append(b.Rejected, Rejected{TP: c.tp, Offset: r.Offset, Reason: reason,
					Timestamp: r.Timestamp, Key: r.Key, Bytes: rb})
				continue // passed over: the progress moves past it
			}
			if len(b.Items) >= lim.batchRecords || (len(b.Items) > 0 && (b.Bytes+rb > lim.batchBytes || (n > 0 && added >= maxBytes))) {
				upto, full = r.Offset, true // the batch or the share is full: this record goes next time
				break
			}
			b.Items = append(b.Items, Item{TP: c.tp, Record: *r})
			b.Bytes += rb
			added += rb
			n++
		}
		if upto <= pos {
			break
		}
		pos = upto
		if full {
			break
		}
	}
	if pos <= from {
		return n, p, nil
	}
	if live {
		p.LiveNext = pos
		return n, p, nil
	}
	return n, advance(p, pos), nil
}

// readStep is the most stored bytes one read of a partition decodes.
const readStep = 64 << 10

// advance moves the backlog cursor to next, merging with the live range
// when they meet.
func advance(p Progress, next int64) Progress {
	p.Next = next
	if p.split() && p.Next >= p.LiveFrom {
		p.Next = max(p.Next, p.LiveNext)
		p.LiveFrom, p.LiveNext = 0, 0
	}
	return p
}

func recordBytes(r *commitlog.Record) int {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}
