package bridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

// Records the upstream refuses for good ("rejected": larger than it takes,
// invalid for it) must not wedge the bridge. The policy, all on the run
// goroutine:
//
//  1. A Send answers *RejectedError. Exact records (or any record that
//     was alone in its batch) go to e.rejects; suspects (Suspect) make the
//     engine isolate: only the suspects' partitions, in batches of half as
//     many records, doubling again after each acknowledged batch, until
//     the cursors have passed every suspect.
//  2. The next fill passes over rejected records (and records larger than
//     the Conn's Limits.MaxRecordBytes) into Batch.Rejected; the batch's
//     progress moves past them.
//  3. Before that batch is sent, the records' provenance is appended to
//     the local rejected topic (once per record; a crash can repeat it,
//     the key names the record). If that append fails the batch is not
//     sent: the round fails like a log read error and is tried again.
//  4. Once it is acknowledged — the upstream checkpoint, if any, moved
//     past them in the same transaction — they are counted (Status,
//     ferry_bridge_records_rejected_total) and logged, rate-limited.

// isolation isolates the guilty records among suspects.
type isolation struct {
	cap      int                       // records per batch; 0: not isolation
	suspects map[TP]map[int64]struct{} // not yet passed by the cursors
}

func (n *isolation) active() bool { return n.cap > 0 }

// rejected applies a Send's *RejectedError to b. It returns false when the
// error names none of b's records (the session is then failed like any
// other error).
func (e *Engine) rejected(b *Batch, rej *RejectedError) bool {
	in := make(map[TP]map[int64]bool)
	for i := range b.Items {
		it := &b.Items[i]
		if in[it.TP] == nil {
			in[it.TP] = map[int64]bool{}
		}
		in[it.TP][it.Record.Offset] = true
	}
	var named []Rejected
	for _, r := range rej.Records {
		if in[r.TP][r.Offset] {
			named = append(named, r)
		}
	}
	if len(named) == 0 {
		return false
	}
	cause := "the upstream refused it"
	if rej.Err != nil {
		cause = rej.Err.Error()
	}
	if !rej.Suspect || len(b.Items) == 1 {
		for _, r := range named {
			if e.rejects[r.TP] == nil {
				e.rejects[r.TP] = map[int64]string{}
			}
			reason := r.Reason
			if reason == "" {
				reason = cause
			}
			e.rejects[r.TP][r.Offset] = reason
		}
		e.logger.Debug("bridge: records refused for good (rejected), passing over them", "bridge", e.cfg.Name, "records", len(named), "err", rej.Err)
		return true
	}
	if e.isolate.suspects == nil {
		e.isolate.suspects = map[TP]map[int64]struct{}{}
	}
	for _, r := range named {
		if e.isolate.suspects[r.TP] == nil {
			e.isolate.suspects[r.TP] = map[int64]struct{}{}
		}
		e.isolate.suspects[r.TP][r.Offset] = struct{}{}
	}
	e.isolate.cap = max(1, len(b.Items)/2)
	e.logger.Debug("bridge: the upstream refused a batch for good, isolation down the guilty records", "bridge", e.cfg.Name,
		"suspects", len(named), "batch", len(b.Items), "next_batch_records", e.isolate.cap, "err", rej.Err)
	return true
}

// countRejected counts the rejected records an acknowledged batch passed over
// and forgets the rejected and suspects the cursors have passed.
func (e *Engine) countRejected(b *Batch) {
	for _, r := range b.Rejected {
		e.metrics.Rejected.WithLabelValues(e.cfg.Name).Add(float64(r.Records()))
		e.mu.Lock()
		e.status.RecordsRejected += r.Records()
		e.status.LastRejected = &RejectedStatus{TP: r.TP, Offset: r.Offset, Reason: r.Reason, At: time.Now()}
		e.mu.Unlock()
		if ok, quiet := e.rejLog.Allow("rejected"); ok {
			e.logger.Warn("bridge: records passed over for good, provenance in the rejected topic",
				"bridge", e.cfg.Name, "partition", r.TP.String(), "offset", r.Offset, "records", r.Records(), "bytes", r.Bytes, "reason", r.Reason,
				"rejected_topic", e.cfg.RejectedTopic, "not_logged_since_last", quiet)
		}
	}
	for tp, prog := range b.Progress {
		for off := range e.rejects[tp] {
			if prog.covers(off) {
				delete(e.rejects[tp], off)
			}
		}
		for off := range e.recorded[tp] {
			if prog.covers(off) {
				delete(e.recorded[tp], off)
			}
		}
		if !e.isolate.active() {
			continue
		}
		for off := range e.isolate.suspects[tp] {
			if prog.covers(off) {
				delete(e.isolate.suspects[tp], off)
			}
		}
		if len(e.isolate.suspects[tp]) == 0 {
			delete(e.isolate.suspects, tp)
		}
	}
	if e.isolate.active() {
		if len(e.isolate.suspects) == 0 {
			e.isolate = isolation{}
		} else {
			e.isolate.cap = min(2*e.isolate.cap, e.cfg.MaxBatchRecords)
		}
	}
}

// rejectedRecord is the value of a rejected-topic record: bridge, topic,
// partition, offset, timestamp, key, bytes, reason, rejected_at.
type rejectedRecord struct {
	Bridge string `json:"bridge"`
	Rejected
	RejectedAt time.Time `json:"rejected_at"`
}

// rejectedRecordOf is the rejected-topic record for r, rejected at.
func (e *Engine) rejectedRecordOf(r Rejected, at time.Time) commitlog.Record {
	v, _ := json.Marshal(rejectedRecord{Bridge: e.cfg.Name, Rejected: r, RejectedAt: at})
	return commitlog.Record{Key: []byte(e.cfg.Name + "/" + r.Topic + "/" + strconv.Itoa(int(r.Partition)) + "/" +
		strconv.FormatInt(r.Offset, 10)), Value: v, Timestamp: at.UnixMilli()}
}

// deadLetter appends the provenance of b's rejected records to the
// rejected topic before b is sent, so a record passed over upstream is on
// record locally even if the process dies right after the upstream
// acknowledged. A failure fails the round like a log read error: b is not
// sent (its progress would pass over the records), the session backs off
// and the next batch passes over the records and tries again; nothing is
// passed over until its provenance is stored.
func (e *Engine) deadLetter(b *Batch) error {
	var recs []commitlog.Record
	var marked []Rejected
	now := time.Now()
	for _, r := range b.Rejected {
		if _, ok := e.recorded[r.TP][r.Offset]; ok {
			continue
		}
		recs = append(recs, e.rejectedRecordOf(r, now))
		marked = append(marked, r)
	}
	if len(recs) == 0 {
		return nil
	}
	t, err := e.rejectedTopic()
	if err == nil {
		if _, err = t.Append(e.ctx, recs).Wait(e.ctx); err != nil {
			e.rejTopic = nil // deleted meanwhile, say: opened (or created) again next time
		}
	}
	if err != nil {
		return fmt.Errorf("bridge %s: record %d rejected record(s) in the rejected topic %s (nothing is passed over until they are): %w",
			e.cfg.Name, len(recs), e.cfg.RejectedTopic, err)
	}
	for _, r := range marked {
		if e.recorded[r.TP] == nil {
			e.recorded[r.TP] = map[int64]struct{}{}
		}
		e.recorded[r.TP][r.Offset] = struct{}{}
	}
	return nil
}

// rejectedTopic opens the rejected topic, creating it with the log's
// defaults when it does not exist (a configured one keeps its settings).
func (e *Engine) rejectedTopic() (*commitlog.Topic, error) {
	if e.rejTopic != nil {
		return e.rejTopic, nil
	}
	t, err := e.log.Topic(e.cfg.RejectedTopic)
	if errors.Is(err, commitlog.ErrUnknownTopic) {
		t, err = e.log.CreateTopic(e.cfg.RejectedTopic, commitlog.TopicConfig{Partitions: 1})
		if errors.Is(err, commitlog.ErrTopicExists) {
			t, err = e.log.Topic(e.cfg.RejectedTopic)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bridge %s: rejected topic %s: %w", e.cfg.Name, e.cfg.RejectedTopic, err)
	}
	e.rejTopic = t
	return t, nil
}
