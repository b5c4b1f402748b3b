package group

// OffsetFetch: v0-9. v10+ name topics by ID, which the coordinator cannot
// resolve: explicit partitions get UNKNOWN_TOPIC_ID and the all-topics
// form UNSUPPORTED_VERSION (answering "nothing committed" would make
// consumers reset their offsets).
//
// Version notes:
//   - v2: null Topics means every committed partition; top-level ErrorCode
//     (v0-1 put errors in each partition)
//   - v5: LeaderEpoch
//   - v7: RequireStable (answered normally: there are no transactions)
//   - v8: Groups: several groups per request
//   - v9: MemberID and MemberEpoch (KIP-848 groups only; ignored)

import (
	"cmp"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// OffsetFetch handles an OffsetFetch request in both its single-group
// (v0-7) and Groups (v8+) forms. A partition with nothing committed, or
// of a group that does not exist, has offset -1 and no error.
func (c *Coordinator) OffsetFetch(req *kmsg.OffsetFetchRequest) *kmsg.OffsetFetchResponse {
	resp := req.ResponseKind().(*kmsg.OffsetFetchResponse)
	if req.Version >= 8 {
		resp.Groups = make([]kmsg.OffsetFetchResponseGroup, 0, len(req.Groups))
		for _, rg := range req.Groups {
			resp.Groups = append(resp.Groups, c.fetchGroup(req.Version, rg.Group, rg.Topics))
		}
		return resp
	}
	var topics []kmsg.OffsetFetchRequestGroupTopic
	if req.Topics != nil || req.Version < 2 {
		topics = make([]kmsg.OffsetFetchRequestGroupTopic, 0, len(req.Topics))
		for _, t := range req.Topics {
			rt := kmsg.NewOffsetFetchRequestGroupTopic()
			rt.Topic = t.Topic
			rt.Partitions = t.Partitions
			topics = append(topics, rt)
		}
	}
	sg := c.fetchGroup(req.Version, req.Group, topics)
	if req.Version >= 2 {
		resp.ErrorCode = sg.ErrorCode
	}
	resp.Topics = make([]kmsg.OffsetFetchResponseTopic, 0, len(sg.Topics))
	for _, gt := range sg.Topics {
		st := kmsg.NewOffsetFetchResponseTopic()
		st.Topic = gt.Topic
		st.Partitions = make([]kmsg.OffsetFetchResponseTopicPartition, 0, len(gt.Partitions))
		for _, gp := range gt.Partitions {
			sp := kmsg.NewOffsetFetchResponseTopicPartition()
			sp.Partition = gp.Partition
			sp.Offset = gp.Offset
			sp.LeaderEpoch = gp.LeaderEpoch
			sp.Metadata = gp.Metadata
			sp.ErrorCode = gp.ErrorCode
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

// fetchGroup answers one group; nil topics means all committed ones.
func (c *Coordinator) fetchGroup(version int16, name string, topics []kmsg.OffsetFetchRequestGroupTopic) kmsg.OffsetFetchResponseGroup {
	sg := kmsg.NewOffsetFetchResponseGroup()
	sg.Group = name
	var code int16
	var g *group
	switch {
	case len(name) > maxGroupIDLen: // an empty name is allowed, as in Kafka
		code = kerr.InvalidGroupID.Code
	case version >= 10 && topics == nil:
		code = kerr.UnsupportedVersion.Code
	default:
		var err error
		if g, err = c.lockGroup(name, false); err != nil {
			code = codeOf(err)
		}
	}
	if code != 0 {
		sg.ErrorCode = code
		if version < 2 {
			// v0-1 have no group-level error: every partition carries it.
			for _, t := range topics {
				st := kmsg.NewOffsetFetchResponseGroupTopic()
				st.Topic = t.Topic
				for _, p := range t.Partitions {
					sp := noOffset(p)
					sp.ErrorCode = code
					st.Partitions = append(st.Partitions, sp)
				}
				sg.Topics = append(sg.Topics, st)
			}
		}
		return sg
	}
	if g != nil {
		defer g.mu.Unlock()
	}
	if topics == nil {
		if g != nil {
			sg.Topics = g.allOffsetsLocked()
		}
		return sg
	}
	sg.Topics = make([]kmsg.OffsetFetchResponseGroupTopic, 0, len(topics))
	for _, t := range topics {
		st := kmsg.NewOffsetFetchResponseGroupTopic()
		st.Topic = t.Topic
		st.TopicID = t.TopicID
		st.Partitions = make([]kmsg.OffsetFetchResponseGroupTopicPartition, 0, len(t.Partitions))
		for _, p := range t.Partitions {
			sp := noOffset(p)
			var off Committed
			var ok bool
			switch {
			case version >= 10:
				sp.ErrorCode = kerr.UnknownTopicID.Code
			case g != nil:
				off, ok = g.offsets[TopicPartition{Topic: t.Topic, Partition: p}]
			}
			if ok {
				setOffset(&sp, off)
			}
			st.Partitions = append(st.Partitions, sp)
		}
		sg.Topics = append(sg.Topics, st)
	}
	return sg
}

// allOffsetsLocked is every committed offset, by topic and partition.
func (g *group) allOffsetsLocked() []kmsg.OffsetFetchResponseGroupTopic {
	tps := make([]TopicPartition, 0, len(g.offsets))
	for tp := range g.offsets {
		tps = append(tps, tp)
	}
	slices.SortFunc(tps, compareTP)
	var topics []kmsg.OffsetFetchResponseGroupTopic
	for _, tp := range tps {
		if len(topics) == 0 || topics[len(topics)-1].Topic != tp.Topic {
			st := kmsg.NewOffsetFetchResponseGroupTopic()
			st.Topic = tp.Topic
			topics = append(topics, st)
		}
		sp := noOffset(tp.Partition)
		setOffset(&sp, g.offsets[tp])
		st := &topics[len(topics)-1]
		st.Partitions = append(st.Partitions, sp)
	}
	return topics
}

func compareTP(a, b TopicPartition) int {
	return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
}

// noOffset is a partition with nothing committed, as Kafka answers it.
func noOffset(partition int32) kmsg.OffsetFetchResponseGroupTopicPartition {
	sp := kmsg.NewOffsetFetchResponseGroupTopicPartition()
	sp.Partition = partition
	sp.Offset = -1
	sp.LeaderEpoch = -1
	sp.Metadata = kmsg.StringPtr("")
	return sp
}

func setOffset(sp *kmsg.OffsetFetchResponseGroupTopicPartition, off Committed) {
	sp.Offset = off.Offset
	sp.LeaderEpoch = off.LeaderEpoch
	sp.Metadata = kmsg.StringPtr(off.Metadata)
}
