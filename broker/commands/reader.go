package commands

import (
	"errors"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

// readBytes is how much a reader asks the log for at a time (a larger
// first batch is returned whole).
const readBytes = 64 << 10

// readLoop is a partition's reader: it re-reads the commands the stored
// checkpoint left unfinished, then reads on from the checkpoint, admitting
// each record (which blocks while MaxInFlight commands are held) and
// long-polling the partition when it has read everything.
func (d *Dispatcher) readLoop(ps *partState) {
	defer d.wg.Done()
	var answers []*command // decided while reading (invalid, expired), not yet appended
	for _, off := range ps.redeliver {
		if !d.redeliver(ps, off, &answers) {
			return
		}
	}
	ps.redeliver = nil
	d.mu.Lock()
	pos := ps.next
	d.mu.Unlock()
	backoff := d.retryMin
	for d.ctx.Err() == nil {
		recs, next, hwm, err := ps.p.ReadRecords(pos, readBytes)
		switch {
		case errors.Is(err, commitlog.ErrOffsetOutOfRange):
			pos = d.skip(ps, pos)
			continue
		case errors.Is(err, commitlog.ErrClosed):
			return
		case err != nil, len(recs) == 0 && next == pos && hwm > pos:
			// A read error, or nothing readable below the high watermark
			// (damage the log skips on its next read): do not spin.
			d.metrics.Errors.WithLabelValues("read").Inc()
			d.logLimited("read", "commands: reading the commands topic failed, retrying",
				"partition", ps.id, "offset", pos, "err", err, "retry_in", backoff)
			if !d.sleep(backoff) {
				return
			}
			backoff = min(2*backoff, d.retryMax)
			continue
		}
		backoff = d.retryMin
		for _, r := range recs {
			if !d.admit(ps, r, &answers) {
				return
			}
		}
		if next > pos { // also past offsets without records (compaction)
			d.mu.Lock()
			ps.next = max(ps.next, next)
			d.mu.Unlock()
			pos = next
		}
		if !d.flushAnswers(&answers) {
			return
		}
		if len(recs) == 0 && ps.p.Wait(d.ctx, pos) != nil {
			return
		}
	}
}

// redeliver re-reads one command the stored checkpoint left unfinished
// and admits it again. One that retention deleted is counted as lost and
// forgotten. It reports false when the dispatcher is closing.
func (d *Dispatcher) redeliver(ps *partState, off int64, answers *[]*command) bool {
	backoff := d.retryMin
	for {
		recs, _, _, err := ps.p.ReadRecords(off, 1)
		switch {
		case errors.Is(err, commitlog.ErrClosed):
			return false
		case err == nil && len(recs) > 0 && recs[0].Offset == off:
			return d.admit(ps, recs[0], answers)
		case err == nil, errors.Is(err, commitlog.ErrOffsetOutOfRange):
			// Deleted by size retention (which overrides holds) or lost
			// with an unsynced tail: nothing left to answer.
			d.metrics.Lost.Inc()
			d.logLimited("lost", "commands: an unfinished command is no longer in the log", "partition", ps.id, "offset", off)
			d.mu.Lock()
			delete(ps.pending, off)
			ps.dirty = true
			d.mu.Unlock()
			return true
		}
		d.metrics.Errors.WithLabelValues("read").Inc()
		d.logLimited("read", "commands: re-reading an unfinished command failed, retrying",
			"partition", ps.id, "offset", off, "err", err, "retry_in", backoff)
		if !d.sleep(backoff) {
			return false
		}
		backoff = min(2*backoff, d.retryMax)
	}
}

// skip handles a read position outside the partition: below its start,
// retention deleted commands never read (counted as lost); above its high
// watermark, the log lost an unsynced tail since the checkpoint was
// stored. It returns the position to read from.
func (d *Dispatcher) skip(ps *partState, pos int64) int64 {
	start, hwm := ps.p.StartOffset(), ps.p.HighWatermark()
	to := pos
	switch {
	case pos < start:
		d.metrics.Lost.Add(float64(start - pos))
		d.logLimited("lost", "commands: commands were deleted by retention before they were read",
			"partition", ps.id, "from", pos, "to", start)
		to = start
	case pos > hwm:
		d.logLimited("behind", "commands: the commands topic ends before the checkpoint, reading from its end",
			"partition", ps.id, "checkpoint", pos, "end", hwm)
		to = hwm
	}
	d.mu.Lock()
	ps.next, ps.dirty = to, true
	d.mu.Unlock()
	return to
}

// admit takes one record into the dispatcher: it waits for a slot, records
// the offset as pending, and queues the command on its device — or, for an
// invalid or already expired record, adds it to answers. Answers are
// appended before admit waits for a slot, so a slot never waits on them.
// It reports false when the dispatcher is closing.
func (d *Dispatcher) admit(ps *partState, rec commitlog.Record, answers *[]*command) bool {
	select {
	case d.slots <- struct{}{}:
	default:
		if !d.flushAnswers(answers) {
			return false
		}
		select {
		case d.slots <- struct{}{}:
		case <-d.ctx.Done():
			return false
		}
	}
	d.metrics.Received.Inc()
	d.metrics.Pending.Inc()
	d.mu.Lock()
	ps.pending[rec.Offset] = struct{}{}
	ps.next = max(ps.next, rec.Offset+1)
	d.mu.Unlock()

	c := &command{part: ps, offset: rec.Offset, key: rec.Key, headers: rec.Headers}
	sp, inv := parseCommand(rec.Key, rec.Value, d.cfg.MaxCommandBytes)
	if inv != nil {
		d.metrics.Invalid.WithLabelValues(inv.Reason).Inc()
		d.logLimited("invalid_"+inv.Reason, "commands: invalid command, answered with an error",
			"partition", ps.id, "offset", rec.Offset, "err", inv)
		c.result = result{status: StatusError, reason: ReasonInvalid, err: inv.Error()}
		*answers = append(*answers, c)
		return true
	}
	c.spec = sp
	now := time.Now()
	c.deadline = deadline(sp, rec.Timestamp, now, d.cfg.Expiry)
	if !now.Before(c.deadline) {
		d.metrics.Expired.Inc()
		c.result = result{status: StatusExpired, err: "commands: expired before it could be delivered"}
		*answers = append(*answers, c)
		return true
	}
	d.enqueue(string(rec.Key), c)
	return true
}

// deadline is when a command expires: its "expirationTime", else its
// record's timestamp plus Expiry (now plus Expiry without a timestamp).
func deadline(s spec, ts int64, now time.Time, expiry time.Duration) time.Time {
	switch {
	case !s.expiresAt.IsZero():
		return s.expiresAt
	case ts <= 0:
		return now.Add(expiry)
	}
	return time.UnixMilli(ts).Add(expiry)
}

// flushAnswers appends the responses of the records decided while reading
// and marks them finished. It reports false when the dispatcher is closing
// (they stay unfinished).
func (d *Dispatcher) flushAnswers(answers *[]*command) bool {
	cs := *answers
	if len(cs) == 0 {
		return true
	}
	now := time.Now()
	recs := make([]commitlog.Record, len(cs))
	for i, c := range cs {
		recs[i] = responseRecord(d.cfg.Topic, c, c.result, now)
	}
	shrink := func() []commitlog.Record {
		for i, c := range cs {
			sc, sr := shrunk(c, c.result)
			recs[i] = responseRecord(d.cfg.Topic, sc, sr, now)
		}
		return recs
	}
	if !d.appendResponses(recs, shrink) {
		return false
	}
	d.markDone(cs...)
	clear(cs)
	*answers = cs[:0]
	return true
}
