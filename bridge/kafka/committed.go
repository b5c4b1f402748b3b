package kafka

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

// readCommitted calls fn for every committed record of topic, from its
// start to its last stable offset, with raw Fetch requests to each
// partition's leader: a kgo consumer cannot tell when it has reached the
// last stable offset (the last entries before it are transaction markers,
// which it never returns). Records of aborted transactions are skipped
// with the AbortedTransactions list, as read_committed clients do.
func readCommitted(ctx context.Context, cl *kgo.Client, topic string, fn func(key, value []byte)) error {
	adm := kadm.NewClient(cl)
	md, err := adm.Metadata(ctx, topic)
	if err != nil {
		return err
	}
	td, ok := md.Topics[topic]
	if !ok || td.Err != nil {
		if ok && errors.Is(td.Err, kerr.UnknownTopicOrPartition) {
			return nil
		}
		return fmt.Errorf("metadata for %s: %v", topic, td.Err)
	}
	ends, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		return err
	}
	if err := ends.Error(); err != nil {
		return err
	}
	dec := commitlog.NewDecompressor(64 << 20)
	for _, pd := range td.Partitions {
		end, ok := ends.Lookup(topic, pd.Partition)
		if !ok || end.Offset <= 0 {
			continue
		}
		starts, err := adm.ListStartOffsets(ctx, topic)
		if err != nil {
			return err
		}
		pos := int64(0)
		if s, ok := starts.Lookup(topic, pd.Partition); ok {
			pos = s.Offset
		}
		for pos < end.Offset {
			req := kmsg.NewPtrFetchRequest()
			req.Version, req.ReplicaID, req.MaxWaitMillis, req.MinBytes, req.MaxBytes = 11, -1, 0, 1, 8<<20
			req.IsolationLevel = 1
			req.SessionEpoch = -1
			rt := kmsg.NewFetchRequestTopic()
			rt.Topic = topic
			rt.TopicID = td.ID // kgo sends the broker's highest Fetch version: v13+ names topics by ID
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes, rp.LogStartOffset = pd.Partition, pos, 8<<20, -1
			rt.Partitions = []kmsg.FetchRequestTopicPartition{rp}
			req.Topics = []kmsg.FetchRequestTopic{rt}
			resp, err := req.RequestWith(ctx, cl.Broker(int(pd.Leader)))
			if err != nil {
				return err
			}
			if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
				return fmt.Errorf("fetch %s/%d: malformed answer", topic, pd.Partition)
			}
			fp := resp.Topics[0].Partitions[0]
			if err := kerr.ErrorForCode(fp.ErrorCode); err != nil {
				return fmt.Errorf("fetch %s/%d at %d: %w", topic, pd.Partition, pos, err)
			}
			aborted := map[int64][]int64{} // producer → first offsets of its aborted transactions, ascending
			for _, a := range fp.AbortedTransactions {
				aborted[a.ProducerID] = append(aborted[a.ProducerID], a.FirstOffset)
			}
			for _, l := range aborted {
				slices.Sort(l)
			}
			skipping := map[int64]bool{}
			before := pos
			err = commitlog.SplitBatches(fp.RecordBatches, func(h commitlog.BatchHeader, b []byte) error {
				next := h.NextOffset()
				if next <= pos {
					return nil
				}
				if l := aborted[h.ProducerID]; len(l) > 0 && h.IsTransactional() && !h.IsControl() && h.BaseOffset >= l[0] {
					skipping[h.ProducerID] = true // an aborted transaction starts here
					aborted[h.ProducerID] = l[1:]
				}
				if h.IsControl() {
					delete(skipping, h.ProducerID) // the marker ends that transaction
					pos = next
					return nil
				}
				if !skipping[h.ProducerID] {
					_, recs, err := commitlog.DecodeRecords(b, dec)
					if err != nil {
						return err
					}
					for _, r := range recs {
						if r.Offset >= pos && r.Offset < end.Offset {
							fn(r.Key, r.Value)
						}
					}
				}
				pos = next
				return nil
			})
			if err != nil {
				return fmt.Errorf("fetch %s/%d: %w", topic, pd.Partition, err)
			}
			if pos == before {
				if fp.LastStableOffset >= 0 && fp.LastStableOffset < end.Offset {
					end.Offset = fp.LastStableOffset // a transaction opened since: read to its start
				}
				if pos >= end.Offset {
					break
				}
				return fmt.Errorf("fetch %s/%d: no progress at %d (last stable %d)", topic, pd.Partition, pos, fp.LastStableOffset)
			}
		}
	}
	return nil
}
