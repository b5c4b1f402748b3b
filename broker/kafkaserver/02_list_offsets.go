package kafkaserver

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
//
// Each answer costs one Partition.OffsetForTime — an index lookup and
// the one batch it names, decoded once — and -3 first reads the largest
// timestamp the log keeps per segment (Partition.MaxTimestamp). Both
// trust the batch headers' MaxTimestamp, as the time index does.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/broker/commitlog"
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

func listOffset(p *commitlog.Partition, ts int64) (offset, timestamp int64, code int16) {
	switch ts {
	case -1:
		return p.HighWatermark(), -1, 0
	case -2:
		return p.StartOffset(), -1, 0
	case -3:
		// The largest timestamp the segments hold (kept per segment, no
		// file read), then the first record holding it.
		if ts = p.MaxTimestamp(); ts < 0 {
			return -1, -1, 0 // no record with a timestamp
		}
	}
	if ts < 0 {
		return -1, -1, kerr.InvalidRequest.Code
	}
	off, found, ok, err := p.OffsetForTime(ts)
	switch {
	case err != nil:
		return -1, -1, codeFor(err)
	case !ok: // every record is older (for -3: removed meanwhile)
		return -1, -1, 0
	}
	return off, found, 0
}
