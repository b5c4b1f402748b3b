package kafka

// ListOffsets (key 2), versions 0-7.
//
// Timestamp -1 is the high watermark (also the last stable offset: Ferry
// has no open transactions, so read_committed readers see everything), -2
// the log start, -3 (v7) the offset of the newest record (its timestamp is
// the high watermark's previous record's, approximated by the partition's
// last record), and t >= 0 the first offset whose timestamp is >= t, or -1
// when there is none. v0 answers in OldStyleOffsets.

import (
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
		hwm := p.HighWatermark()
		if hwm == p.StartOffset() {
			return -1, -1, 0
		}
		recs, _, _, err := p.ReadRecords(max(hwm-1, p.StartOffset()), 1)
		if err != nil || len(recs) == 0 {
			return -1, -1, codeFor(err)
		}
		last := recs[len(recs)-1]
		return last.Offset, last.Timestamp, 0
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
	return off, ts, 0
}
