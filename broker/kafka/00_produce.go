package kafka

// Produce (key 0), versions 3-9 (v3 is the first with RecordBatch v2).
//
// Each partition's data must be exactly one RecordBatch v2. It is checked
// completely before anything is stored — framing, magic, CRC-32C, the
// codec, every record decoded, record count and offset deltas dense — and
// a bad batch is answered CORRUPT_MESSAGE with nothing written. A good one
// goes through the same append path as MQTT ingest (Partition.AppendBatch:
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
	"encoding/binary"
	"errors"
	"hash/crc32"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	flog "github.com/ferry-iot/ferry/broker/log"
)

type produceSlot struct {
	ti, pi int
	topic  string
	bytes  int
	recs   int
	f      *flog.Future
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
			var p *flog.Partition
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
				c.s.limiter.warn(c.s.logger, "produce"+sl.topic, "kafka: produce failed", "topic", sl.topic, "partition", sp.Partition, "err", err)
				continue
			}
			sp.BaseOffset = off
			if t, err := c.s.log.Topic(sl.topic); err == nil {
				if p, err := t.Partition(sp.Partition); err == nil {
					sp.LogStartOffset = p.StartOffset()
				}
			}
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
func (c *conn) produceBatch(p *flog.Partition, data []byte) (produceSlot, int16) {
	h, recs, err := flog.DecodeRecords(data, c.decomp)
	switch {
	case err != nil:
		c.s.limiter.warn(c.s.logger, "corrupt"+c.remote, "kafka: refusing a bad batch", "remote", c.remote, "topic", p.Topic().Name(), "err", err)
		return produceSlot{}, refusedCode(data)
	case h.IsControl():
		return produceSlot{}, kerr.InvalidRecord.Code // clients may not write control batches
	case h.IsTransactional():
		return produceSlot{}, kerr.InvalidTxnState.Code
	case h.NumRecords == 0 || int(h.NumRecords) != len(recs) || h.LastOffsetDelta != h.NumRecords-1:
		return produceSlot{}, kerr.InvalidRecord.Code
	}
	for i := range recs {
		if recs[i].Offset-h.BaseOffset != int64(i) {
			return produceSlot{}, kerr.InvalidRecord.Code
		}
	}
	slot := produceSlot{bytes: len(data), recs: int(h.NumRecords)}
	if h.ProducerID < 0 {
		slot.f = p.AppendBatch(c.ctx, data)
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
	slot.f = p.AppendBatch(c.ctx, data)
	if err := slot.f.Err(); err != nil && errors.Is(err, flog.ErrCorruptBatch) {
		return produceSlot{}, codeFor(err)
	}
	ps.recordLocked(h.ProducerEpoch, h.BaseSequence, last, slot.f)
	return slot, 0
}

// refusedCode is the code for a partition's data that DecodeRecords
// refused, as Kafka decides it (ByteBufferLogInputStream, then
// ProduceRequest.validateRecords, DefaultRecordBatch.ensureValid and
// LogValidator.validateBatch, in that order). Corruption — a size field
// below the smallest batch, a magic byte no format has, a CRC mismatch, an
// unknown codec, records that do not decompress or decode — is
// CORRUPT_MESSAGE, which producers retry. Data that is well framed but
// breaks the rules — no whole batch, more than one, an old magic, a record
// count that disagrees with the offset range — is INVALID_RECORD, which
// they do not. Unlike Kafka (which answers UNKNOWN_SERVER_ERROR for an
// unknown codec and trims bytes after the first batch), an unknown codec
// is corruption and trailing bytes are a second batch. Called only on the
// refusal path, so the CRC is not computed twice for good batches.
func refusedCode(data []byte) int16 {
	const (
		logOverhead = 12 // base offset and length
		minSize     = 14 // Kafka's smallest record (LegacyRecord.RECORD_OVERHEAD_V0)
		magicEnd    = 17 // bytes up to and including the magic
	)
	if len(data) < logOverhead {
		return kerr.InvalidRecord.Code // no batch at all
	}
	length := int64(int32(binary.BigEndian.Uint32(data[8:])))
	if length < minSize {
		return kerr.CorruptMessage.Code
	}
	if len(data) < magicEnd {
		return kerr.InvalidRecord.Code
	}
	magic := int8(data[16])
	switch size := length + logOverhead; {
	case magic < 0 || magic > 2:
		return kerr.CorruptMessage.Code
	case int64(len(data)) < size:
		return kerr.InvalidRecord.Code // not one whole batch
	case size > flog.MaxBatchSize:
		return kerr.MessageTooLarge.Code
	case magic != 2:
		return kerr.InvalidRecord.Code // Produce v3+ carries RecordBatch v2 only
	case int64(len(data)) > size:
		return kerr.InvalidRecord.Code // exactly one batch per partition
	case size < flog.BatchHeaderSize || crc32.Checksum(data[21:], castagnoli) != binary.BigEndian.Uint32(data[17:]):
		return kerr.CorruptMessage.Code
	}
	h, err := flog.ParseBatchHeader(data)
	if err == nil && (h.LastOffsetDelta < 0 || h.NumRecords <= 0 || h.LastOffsetDelta != h.NumRecords-1) {
		return kerr.InvalidRecord.Code // the offset range and the record count disagree
	}
	return kerr.CorruptMessage.Code
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)
