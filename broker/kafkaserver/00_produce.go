package kafkaserver

// Produce (key 0), versions 3-9 (v3 is the first with RecordBatch v2).
//
// Each partition's data must be exactly one RecordBatch v2. It is checked
// completely, once, before anything is stored (commitlog.ValidateProduced:
// framing, magic, CRC-32C, the codec, every record decoded, record count
// and offset deltas dense), and a bad batch is refused with nothing
// written, with the code Kafka gives. The log's error says which kind of
// problem it is and codeFor maps it: corruption is CORRUPT_MESSAGE, which
// producers retry; well-framed data breaking the rules (not exactly one
// whole v2 batch, a record count against the offset range, a control
// batch) is INVALID_RECORD, which they do not, as is an idempotent batch
// without a sequence; a batch above the topic's max_batch_bytes is
// MESSAGE_TOO_LARGE. A good one goes through the same append path as MQTT
// ingest without being checked again (Partition.AppendValidatedBatch:
// group commit, the topic's flush policy) and is stored byte for byte but
// for its base offset.
//
// The answer is built by the connection's writer once the appends are
// durable under the topic's flush policy, so the reader goes on decoding
// the next pipelined request meanwhile.
//
// Acks:
//   - -1 (all in-sync replicas) waits for the topic's flush policy:
//     after the fsync under flush=always, after the write under
//     flush=interval and flush=never.
//   - 1 waits exactly the same. In Kafka it means "the leader has the
//     records in its log" (the page cache; Kafka fsyncs on neither). On
//     one node the leader's log is every replica, so 1 and -1 name the
//     same event, and in Ferry's log a record is in the log — readable,
//     under the high watermark — only once the flush policy holds (under
//     flush=always the write is published after its fsync). Answering
//     earlier would acknowledge records no consumer can read yet and that
//     a power cut loses although the topic asked for fsync; Sarama
//     producers send acks=1 by default, so they would silently get less
//     than the operator configured. A producer that wants the page-cache
//     acknowledgement gets it from a flush=interval or never topic.
//   - 0 gets no answer; the records are stored as for the others (the
//     writer still waits for them, so answers stay in request order).
//   - Anything else is INVALID_REQUIRED_ACKS for every partition, and
//     nothing is stored.
//
// Idempotent batches (producer id >= 0) are checked against the producer's
// last five batches on the partition (producers.go): a retry is answered
// with the original offset, a gap with OUT_OF_ORDER_SEQUENCE_NUMBER, a
// stale epoch with INVALID_PRODUCER_EPOCH.

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

type produceSlot struct {
	ti, pi int
	topic  string
	p      *commitlog.Partition
	bytes  int
	recs   int
	f      *commitlog.Future
	dup    *seqBatch
}

func handleProduce(c *conn, r *request) *outbound {
	req := r.kreq.(*kmsg.ProduceRequest)
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	reqCode := int16(0)
	switch {
	case req.TransactionID != nil:
		reqCode = kerr.TransactionalIDAuthorizationFailed.Code // no transaction coordinator here
	case req.Acks != 0 && req.Acks != 1 && req.Acks != -1:
		reqCode = kerr.InvalidRequiredAcks.Code
	}
	var slots []produceSlot
	for ti, rt := range req.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic = rt.Topic
		t, terr := c.s.log.Topic(rt.Topic)
		for pi, rp := range rt.Partitions {
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.BaseOffset, sp.LogAppendTime, sp.LogStartOffset = -1, -1, -1
			st.Partitions = append(st.Partitions, sp)
			if reqCode != 0 {
				st.Partitions[pi].ErrorCode = reqCode
				continue
			}
			perr := terr // per partition: an unknown topic fails every one of its partitions
			var p *commitlog.Partition
			if perr == nil {
				p, perr = t.Partition(rp.Partition)
			}
			if perr != nil {
				st.Partitions[pi].ErrorCode = kerr.UnknownTopicOrPartition.Code
				continue
			}
			slot, code := c.produceBatch(p, rp.Records)
			if code != 0 {
				st.Partitions[pi].ErrorCode = code
				continue
			}
			slot.ti, slot.pi, slot.topic = ti, pi, rt.Topic
			slots = append(slots, slot)
		}
		resp.Topics = append(resp.Topics, st)
	}
	m := c.s.metrics
	build := func() kmsg.Response {
		for _, sl := range slots {
			sp := &resp.Topics[sl.ti].Partitions[sl.pi]
			var off int64
			var err error
			if sl.dup != nil {
				m.Duplicates.Inc()
				off, err = sl.dup.offset(context.Background())
			} else {
				off, err = sl.f.Wait(context.Background())
			}
			if err != nil {
				sp.ErrorCode = codeFor(err)
				c.s.limiter.Warn(c.s.logger, "produce"+sl.topic, "kafkaserver: produce failed", "topic", sl.topic, "partition", sp.Partition, "err", err)
				continue
			}
			sp.BaseOffset = off
			sp.LogStartOffset = sl.p.StartOffset()
			if sl.dup == nil {
				m.ProduceBytes.WithLabelValues(sl.topic).Add(float64(sl.bytes))
				m.ProduceRecords.WithLabelValues(sl.topic).Add(float64(sl.recs))
			}
		}
		return resp
	}
	return &outbound{build: build, none: req.Acks == 0}
}

// produceBatch validates one partition's data and queues it, or decides it
// is an idempotent retry.
func (c *conn) produceBatch(p *commitlog.Partition, data []byte) (produceSlot, int16) {
	vb, err := commitlog.ValidateProduced(data, c.decomp)
	if err != nil {
		c.s.limiter.Warn(c.s.logger, "corrupt"+c.remote, "kafkaserver: refusing a bad batch", "remote", c.remote, "topic", p.Topic().Name(), "err", err)
		return produceSlot{}, codeFor(err)
	}
	h := vb.Header()
	if h.IsTransactional() {
		return produceSlot{}, kerr.InvalidTxnState.Code
	}
	slot := produceSlot{p: p, bytes: len(data), recs: int(h.NumRecords)}
	if h.ProducerID < 0 {
		slot.f = p.AppendValidatedBatch(c.ctx, vb)
		return slot, 0
	}
	if h.BaseSequence < 0 {
		return produceSlot{}, kerr.InvalidRecord.Code
	}
	ps := c.s.producers.entry(h.ProducerID, p)
	last := h.BaseSequence + h.LastOffsetDelta
	if last < h.BaseSequence { // wrapped past int32 max
		last = h.LastOffsetDelta - (1<<31 - 1 - h.BaseSequence) - 1
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	dup, code := ps.checkLocked(h.ProducerEpoch, h.BaseSequence, last)
	switch {
	case code != 0:
		return produceSlot{}, code
	case dup != nil:
		slot.dup = dup
		return slot, 0
	}
	slot.f = p.AppendValidatedBatch(c.ctx, vb)
	if err := slot.f.Err(); err != nil {
		// Refused at once (above max_batch_bytes, full, closed): not part
		// of the producer's sequence, so its retry is appended anew.
		return produceSlot{}, codeFor(err)
	}
	ps.recordLocked(h.ProducerEpoch, h.BaseSequence, last, slot.f)
	return slot, 0
}
