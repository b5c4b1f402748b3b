package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferry-iot/ferry/bridge"
)

// Send delivers one batch: a transaction with the records and the
// checkpoints (exactly-once), or the records alone (at-least-once). When
// every failure is a record the upstream refuses for good, it returns a
// *bridge.RejectedError (after aborting the transaction) and the session
// stays usable.
func (c *conn) Send(ctx context.Context, b *bridge.Batch) error {
	if c.t.eos() {
		if err := c.cl.BeginTransaction(); err != nil {
			return fmt.Errorf("bridge/kafka: begin transaction: %w", err)
		}
	}
	var (
		mu       sync.Mutex
		failed   map[*kgo.Record]error // data records that failed
		otherErr error                 // the first failure of a checkpoint record
	)
	// The records, their headers and the provenance values are carved out
	// of a few arrays per batch rather than allocated one by one: kgo
	// holds them until Flush returns, and so does this Send.
	recs := make([]kgo.Record, len(b.Items))
	promise := func(r *kgo.Record, err error) {
		if err == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if r.Topic == c.t.cfg.CheckpointTopic {
			if otherErr == nil {
				otherErr = err
			}
			return
		}
		if failed == nil {
			failed = map[*kgo.Record]error{}
		}
		failed[r] = err
	}
	nh := 0
	for i := range b.Items {
		nh += len(b.Items[i].Record.Headers) + 4
	}
	hdrs := make([]kgo.RecordHeader, 0, nh)
	digits := make([]byte, 0, len(b.Items)*16)
	var (
		topic string // the edge topic of et: items come in runs of one partition
		et    edgeTopic
	)
	for i := range b.Items {
		it := &b.Items[i]
		r := &recs[i]
		if i == 0 || it.Topic != topic {
			topic, et = it.Topic, c.t.edges[it.Topic]
		}
		r.Topic, r.Key, r.Value, r.Timestamp = et.upstream, it.Record.Key, it.Record.Value, time.UnixMilli(it.Record.Timestamp)
		first := len(hdrs)
		for _, h := range it.Record.Headers {
			hdrs = append(hdrs, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		p0 := len(digits)
		digits = strconv.AppendInt(digits, int64(it.Partition), 10)
		p1 := len(digits)
		digits = strconv.AppendInt(digits, it.Record.Offset, 10)
		o1 := len(digits)
		hdrs = append(hdrs,
			kgo.RecordHeader{Key: "ferry.node", Value: c.t.node},
			kgo.RecordHeader{Key: "ferry.topic", Value: et.name},
			kgo.RecordHeader{Key: "ferry.partition", Value: digits[p0:p1:p1]},
			kgo.RecordHeader{Key: "ferry.offset", Value: digits[p1:o1:o1]})
		r.Headers = hdrs[first:len(hdrs):len(hdrs)]
		c.cl.Produce(ctx, r, promise)
	}
	if c.t.eos() {
		for tp, p := range b.Progress {
			v, _ := json.Marshal(p)
			c.cl.Produce(ctx, &kgo.Record{Topic: c.t.cfg.CheckpointTopic, Key: []byte(c.checkpointKey(tp)), Value: v}, promise)
		}
		// Rejected records are recorded with the checkpoint that passes over them.
		for _, r := range b.Rejected {
			c.cl.Produce(ctx, &kgo.Record{Topic: c.t.cfg.CheckpointTopic, Key: []byte(c.rejectedKey(r)), Value: rejectedCheckpointOf(r)}, promise)
		}
	}
	err := c.cl.Flush(ctx)
	mu.Lock()
	defer mu.Unlock()
	if err == nil {
		err = otherErr
	}
	var rej *bridge.RejectedError
	if err == nil && len(failed) > 0 {
		if rej = c.rejection(b, recs, failed); rej == nil {
			for _, e := range failed {
				err = e
				break
			}
		}
	}
	if !c.t.eos() {
		switch {
		case err != nil:
			return fmt.Errorf("bridge/kafka: produce: %w", err)
		case rej != nil:
			return fmt.Errorf("bridge/kafka: produce: %w", rej)
		}
		return nil
	}
	if err != nil || rej != nil {
		if aerr := c.abort(ctx); aerr != nil || err != nil {
			if err == nil {
				err = rej
			}
			return fmt.Errorf("bridge/kafka: produce in transaction: %w", errors.Join(err, aerr))
		}
		return fmt.Errorf("bridge/kafka: produce in transaction (aborted): %w", rej)
	}
	if err := c.cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		// Unconfirmed or refused: the engine reconnects, and the fence
		// plus the committed checkpoints tell what made it.
		return fmt.Errorf("bridge/kafka: commit: %w", err)
	}
	return nil
}

// rejectedCheckpoint is the value of a checkpoint-topic record naming a
// record the bridge rejected and passed over (its key names the edge partition and
// offset). Its shape is a format of its own, not a bridge.Rejected's: no
// partition, no record key.
type rejectedCheckpoint struct {
	Offset    int64  `json:"offset"`
	Timestamp int64  `json:"timestamp"`
	Bytes     int    `json:"bytes"`
	Reason    string `json:"reason"`
}

func rejectedCheckpointOf(r bridge.Rejected) []byte {
	v, _ := json.Marshal(rejectedCheckpoint{Offset: r.Offset, Timestamp: r.Timestamp, Bytes: r.Bytes, Reason: r.Reason})
	return v
}

func (c *conn) rejectedKey(r bridge.Rejected) string {
	return c.checkpointKey(r.TP) + "/" + strconv.FormatInt(r.Offset, 10) + "/rejected"
}

// rejection turns the failed data records into a *bridge.RejectedError
// when every failure is one the upstream will repeat whatever we do, or
// returns nil. The upstream refuses whole partition batches, so a record
// is named exactly only when it was the only one of its upstream
// partition to fail in this Send; if none is, all are named as suspects.
func (c *conn) rejection(b *bridge.Batch, recs []kgo.Record, failed map[*kgo.Record]error) *bridge.RejectedError {
	type upTP struct {
		topic string
		part  int32
	}
	perPart := map[upTP]int{}
	var first error
	for r, err := range failed {
		if !permanent(err) {
			return nil
		}
		if first == nil {
			first = err
		}
		perPart[upTP{r.Topic, r.Partition}]++
	}
	var exact, suspects []bridge.Rejected
	for i := range recs {
		r := &recs[i]
		err, ok := failed[r]
		if !ok {
			continue
		}
		it := &b.Items[i]
		rj := bridge.Rejected{TP: it.TP, Offset: it.Record.Offset, Reason: err.Error()}
		if perPart[upTP{r.Topic, r.Partition}] == 1 && !errors.Is(err, kerr.CorruptMessage) {
			exact = append(exact, rj)
		} else {
			suspects = append(suspects, rj)
		}
	}
	if len(exact) > 0 {
		return &bridge.RejectedError{Records: exact, Err: first}
	}
	return &bridge.RejectedError{Records: suspects, Suspect: true, Err: first}
}

// permanent reports whether a record's produce error will recur for the
// same record, however often it is sent.
func permanent(err error) bool {
	switch {
	case errors.Is(err, kerr.MessageTooLarge):
		// Larger than the topic's max.message.bytes, or than the
		// producer's batch limit (kgo refuses it before sending).
		return true
	case errors.Is(err, kerr.RecordListTooLarge):
		// The batch is larger than the topic's segment size.
		return true
	case errors.Is(err, kerr.InvalidRecord):
		// Broker-side validation: no key on a compacted topic (Kafka 2.2+),
		// a broker-side schema check.
		return true
	case errors.Is(err, kerr.InvalidTimestamp):
		// Outside message.timestamp.{before,after}.max.ms: an edge record
		// that waited out a long outage stays too old.
		return true
	case errors.Is(err, kerr.CorruptMessage):
		// Older brokers refuse a keyless record on a compacted topic this
		// way; a corruption in transit would pass when the record is sent
		// again alone, so it is only ever reported as a suspect.
		return true
	}
	return false
}

// abort drops what is buffered and aborts the open transaction, within
// what is left of the Send's deadline: once the engine gave up on the
// Send (stall watchdog, Close) it must not wait for produce requests a
// silent upstream never answers. An error means the session is unusable:
// the engine closes this client, reconnects, and its fence aborts
// whatever is still open.
func (c *conn) abort(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := c.cl.AbortBufferedRecords(ctx); err != nil {
		return fmt.Errorf("abort buffered records: %w", err)
	}
	if err := c.cl.EndTransaction(ctx, kgo.TryAbort); err != nil {
		return fmt.Errorf("abort transaction: %w", err)
	}
	return nil
}
