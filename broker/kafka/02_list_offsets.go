package kafka

// ListOffsets (key 2), versions 0-7.
//
// As in Kafka: timestamp -1 is the high watermark (also the last stable
// offset: Ferry has no open transactions, so read_committed readers see
// everything) and -2 the log start, both with timestamp -1; -3 (v7,
// KIP-734) is the first offset holding the partition's largest record
// timestamp, with that timestamp (not the last record: timestamps are the
// producers' and need not grow); t >= 0 is the first offset whose record
// timestamp is >= t, with that record's timestamp, or offset and
// timestamp -1 when every record is older. v0 answers in OldStyleOffsets.

import (
	"math"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	flog "github.com/ferry-iot/ferry/broker/log"
)

func handleListOffsets(c *conn, r *request) *outbound {
	req := r.kreq.(*kmsg.ListOffsetsRequest)
	resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewListOffsetsResponseTopic()
		st.Topic = rt.Topic
		t, terr := c.s.log.Topic(rt.Topic)
		for _, rp := range rt.Partitions {
			sp := kmsg.NewListOffsetsResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.LeaderEpoch = 0
			if terr != nil {
				sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
				st.Partitions = append(st.Partitions, sp)
				continue
			}
			p, err := t.Partition(rp.Partition)
			if err != nil {
				sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
				st.Partitions = append(st.Partitions, sp)
				continue
			}
			off, ts, code := listOffset(p, rp.Timestamp)
			sp.ErrorCode = code
			sp.Offset, sp.Timestamp = off, ts
			if req.Version == 0 && code == 0 {
				sp.OldStyleOffsets = []int64{off}
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return &outbound{resp: resp}
}

func listOffset(p *flog.Partition, ts int64) (offset, timestamp int64, code int16) {
	switch ts {
	case -1:
		return p.HighWatermark(), -1, 0
	case -2:
		return p.StartOffset(), -1, 0
	case -3:
		return maxTimestampOffset(p)
	}
	if ts < 0 {
		return -1, -1, kerr.InvalidRequest.Code
	}
	off, ok, err := p.OffsetForTime(ts)
	if err != nil {
		return -1, -1, codeFor(err)
	}
	if !ok {
		return -1, -1, 0
	}
	found, err := timestampAt(p, off)
	if err != nil {
		return -1, -1, codeFor(err)
	}
	return off, found, 0
}

// timestampAt returns the timestamp of the record at offset.
func timestampAt(p *flog.Partition, offset int64) (int64, error) {
	recs, _, _, err := p.ReadRecords(offset, 1) // the batch holding offset, whole
	if err != nil {
		return -1, err
	}
	for _, r := range recs {
		if r.Offset == offset {
			return r.Timestamp, nil
		}
	}
	return -1, flog.ErrOffsetOutOfRange // removed meanwhile (retention, compaction)
}

// maxTimestampOffset answers -3: the first offset holding the largest
// record timestamp M, found by bisecting on OffsetForTime, which finds a
// record at or after t exactly when t <= M. Each probe skips the segments
// whose largest timestamp is below t and reads one batch, so the answer
// costs about 63 index lookups, not a scan of the partition.
func maxTimestampOffset(p *flog.Partition) (offset, timestamp int64, code int16) {
	if p.HighWatermark() == p.StartOffset() {
		return -1, -1, 0
	}
	holds := func(t int64) (bool, int16) { // some record at or after t
		_, ok, err := p.OffsetForTime(t)
		return ok, codeFor(err)
	}
	lo, hi := int64(0), int64(math.MaxInt64) // M >= lo, and M < hi unless a record is at hi
	if ok, code := holds(lo); code != 0 || !ok {
		return -1, -1, code // no record has a timestamp
	}
	top, code := holds(hi)
	if code != 0 {
		return -1, -1, code
	}
	if top {
		lo = hi
	}
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		ok, code := holds(mid)
		if code != 0 {
			return -1, -1, code
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	off, ok, err := p.OffsetForTime(lo)
	switch {
	case err != nil:
		return -1, -1, codeFor(err)
	case !ok: // the records were removed meanwhile
		return -1, -1, 0
	}
	return off, lo, 0
}
