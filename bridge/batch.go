package bridge

import (
	"errors"
	"reflect"
	"time"

	flog "github.com/ferry-iot/ferry/broker/log"
)

// refreshEvery bounds how long an idle engine goes without looking for
// new partitions of its topics.
const refreshEvery = 10 * time.Second

// nextBatch blocks until records are waiting, lingers briefly after an
// idle spell so a trickle travels in fewer batches, then packs up to the
// batch limits: live ranges first (live_first), then every partition's
// oldest records, round robin.
func (e *Engine) nextBatch() (*Batch, error) {
	idle := false
	for {
		b, err := e.fill(e.order(), e.positions())
		if err != nil {
			return nil, err
		}
		if len(b.Items) > 0 || len(b.Progress) > 0 {
			if idle && e.cfg.Linger > 0 && b.Bytes < e.cfg.MaxBatchBytes/2 {
				idle = false
				t := time.NewTimer(e.cfg.Linger)
				select {
				case <-t.C:
				case <-e.ctx.Done():
					t.Stop()
					return nil, e.ctx.Err()
				}
				continue // refill with what arrived meanwhile
			}
			return b, nil
		}
		idle = true
		if err := e.waitData(); err != nil {
			return nil, err
		}
	}
}

// waitData sleeps until any partition's high watermark moves.
func (e *Engine) waitData() error {
	cases := []reflect.SelectCase{{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(e.ctx.Done())}}
	timer := time.NewTimer(refreshEvery)
	defer timer.Stop()
	cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(timer.C)})
	pending := false
	for _, c := range e.cursors {
		ch := c.p.Changed()
		if c.p.HighWatermark() > c.prog.Next+c.prog.ahead() {
			pending = true
			break
		}
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ch)})
	}
	if pending {
		return nil
	}
	chosen, _, _ := reflect.Select(cases)
	switch chosen {
	case 0:
		return e.ctx.Err()
	case 1:
		return e.refreshPartitions()
	}
	return nil
}

// positions returns every cursor's progress (run goroutine only).
func (e *Engine) positions() map[TP]Progress {
	m := make(map[TP]Progress, len(e.cursors))
	for tp, c := range e.cursors {
		m[tp] = c.prog
	}
	return m
}

// fill packs one batch of the partitions in order, starting at from,
// without advancing the cursors. It reads nothing of the engine's mutable
// state, so a prefetch can run it while the run goroutine sends.
func (e *Engine) fill(order []*cursor, from map[TP]Progress) (*Batch, error) {
	b := &Batch{Progress: map[TP]Progress{}}
	prog := make(map[TP]Progress, len(order))
	for _, c := range order {
		p := from[c.tp]
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
	full := func() bool { return b.Bytes >= e.cfg.MaxBatchBytes || len(b.Items) >= e.cfg.MaxBatchRecords }
	// Live ranges first, then backlogs; a few rounds so every partition
	// gets a share of the batch.
	for _, live := range []bool{true, false} {
		for round := 0; round < 4 && !full(); round++ {
			share := max((e.cfg.MaxBatchBytes-b.Bytes)/max(len(order), 1), 64<<10)
			moved := false
			for _, c := range order {
				if full() {
					break
				}
				p := prog[c.tp]
				if live && !p.split() {
					continue
				}
				n, np, err := e.readInto(b, c, p, live, min(share, e.cfg.MaxBatchBytes-b.Bytes))
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
// backlog/whole range) to b, up to maxBytes, and returns the new progress.
func (e *Engine) readInto(b *Batch, c *cursor, p Progress, live bool, maxBytes int) (int, Progress, error) {
	from, end := p.Next, c.p.HighWatermark()
	if live {
		from = p.LiveNext
	} else if p.split() {
		end = p.LiveFrom
	}
	if start := c.p.StartOffset(); !live && from < start {
		// Retention (overwrite_oldest under a size or disk limit) dropped
		// records before they were replicated: skip them, counted once the
		// batch that moves past them is acknowledged (a failed Send skips
		// them again).
		b.skips = append(b.skips, skip{tp: c.tp, from: from, to: start})
		from = start
		p = advance(p, start)
	}
	if from >= end {
		if !live && p.split() && p.Next >= p.LiveFrom {
			p = advance(p, p.LiveFrom) // the backlog met the live range: merge
		}
		return 0, p, nil
	}
	// maxBytes counts record bytes, the log's read limit stored ones, which
	// zstd makes five to ten times smaller: read in steps and stop at the
	// share, rather than decode far more than the batch takes (and give
	// the other partitions their turn, round robin).
	n, added, pos := 0, 0, from
	for pos < end && added < maxBytes {
		recs, next, _, err := c.p.ReadRecords(pos, min(maxBytes-added, readStep))
		if errors.Is(err, flog.ErrOffsetOutOfRange) {
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
			// growing (and copying) it a dozen times.
			b.Items = make([]Item, 0, min(e.cfg.MaxBatchRecords, e.cfg.MaxBatchBytes/max(recordBytes(&recs[0]), 16)+1))
		}
		upto := min(next, end) // everything read was taken (gaps from compaction or control batches included)
		full := false
		for _, r := range recs {
			if r.Offset < pos {
				continue
			}
			if r.Offset >= end {
				upto = end
				break
			}
			if len(b.Items) >= e.cfg.MaxBatchRecords || (n > 0 && (b.Bytes >= e.cfg.MaxBatchBytes || added >= maxBytes)) {
				upto, full = r.Offset, true // the batch or the share is full: this record goes next time
				break
			}
			b.Items = append(b.Items, Item{TP: c.tp, Record: r})
			rb := recordBytes(&r)
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

func recordBytes(r *flog.Record) int {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}
