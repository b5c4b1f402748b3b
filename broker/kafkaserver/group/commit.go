package group

// OffsetCommit: v0-9. v10+ name topics by ID, which the coordinator cannot
// resolve: their partitions get UNKNOWN_TOPIC_ID.
//
// Version notes:
//   - v1: Generation and MemberID (v0 commits as a simple consumer:
//     generation -1, no member); per-partition Timestamp (ignored)
//   - v2-4: RetentionTimeMillis (ignored: retention is OffsetsRetention)
//   - v6: LeaderEpoch per partition
//   - v7: InstanceID

import (
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/broker/state"
)

// commitEntry is one partition of an OffsetCommit that passed the
// per-partition checks; code points into the response.
type commitEntry struct {
	code *int16
	tp   TopicPartition
	off  Committed
}

// OffsetCommit handles an OffsetCommit request. The accepted partitions
// are written to the state store in one transaction before the answer,
// so an acknowledged commit survives a crash; if the write fails, they
// all get UNKNOWN_SERVER_ERROR and nothing is committed.
func (c *Coordinator) OffsetCommit(req *kmsg.OffsetCommitRequest) *kmsg.OffsetCommitResponse {
	resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
	now := c.now()
	commitTime := time.UnixMilli(now.UnixMilli()) // what the store keeps
	resp.Topics = make([]kmsg.OffsetCommitResponseTopic, 0, len(req.Topics))
	for _, t := range req.Topics {
		st := kmsg.NewOffsetCommitResponseTopic()
		st.Topic = t.Topic
		st.TopicID = t.TopicID
		st.Partitions = make([]kmsg.OffsetCommitResponseTopicPartition, 0, len(t.Partitions))
		for _, p := range t.Partitions {
			sp := kmsg.NewOffsetCommitResponseTopicPartition()
			sp.Partition = p.Partition
			sp.ErrorCode = c.checkCommitPartition(req.Version, t.Topic, &p)
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	var entries []commitEntry
	for ti, t := range req.Topics {
		for pi, p := range t.Partitions {
			sp := &resp.Topics[ti].Partitions[pi]
			if sp.ErrorCode != 0 {
				continue
			}
			off := Committed{Offset: p.Offset, LeaderEpoch: -1, CommitTime: commitTime}
			if req.Version >= 6 {
				off.LeaderEpoch = p.LeaderEpoch
			}
			if p.Metadata != nil {
				off.Metadata = strings.Clone(*p.Metadata)
			}
			tp := TopicPartition{Topic: strings.Clone(t.Topic), Partition: p.Partition}
			entries = append(entries, commitEntry{code: &sp.ErrorCode, tp: tp, off: off})
		}
	}
	if len(entries) > 0 {
		c.commit(req, now, entries)
	}
	return resp
}

// checkCommitPartition is the error code of a partition before the group
// is looked at (Kafka's API layer checks these first, too).
func (c *Coordinator) checkCommitPartition(version int16, topic string, p *kmsg.OffsetCommitRequestTopicPartition) int16 {
	switch {
	case version >= 10:
		return kerr.UnknownTopicID.Code
	case topic == "" || len(topic) > maxTopicLen:
		return kerr.InvalidTopicException.Code
	case p.Partition < 0, c.cfg.PartitionExists != nil && !c.cfg.PartitionExists(topic, p.Partition):
		return kerr.UnknownTopicOrPartition.Code
	case p.Metadata != nil && len(*p.Metadata) > maxMetadataLen:
		return kerr.OffsetMetadataTooLarge.Code
	}
	return 0
}

// commit checks the group and writes the entries.
func (c *Coordinator) commit(req *kmsg.OffsetCommitRequest, now time.Time, entries []commitEntry) {
	setAll := func(code int16) {
		for _, e := range entries {
			*e.code = code
		}
	}
	// An empty group id is allowed here, as in Kafka.
	if len(req.Group) > maxGroupIDLen {
		setAll(kerr.InvalidGroupID.Code)
		return
	}
	generation, memberID := req.Generation, req.MemberID
	if req.Version == 0 {
		generation, memberID = -1, ""
	}
	var instanceID *string
	if req.Version >= 7 {
		instanceID = req.InstanceID
	}
	// A simple commit (generation < 0) creates its group; one from a
	// generation of a group that does not exist is stale.
	g, err := c.lockGroup(req.Group, generation < 0)
	switch {
	case err != nil:
		setAll(codeOf(err))
		return
	case g == nil:
		setAll(kerr.IllegalGeneration.Code)
		return
	}
	defer g.mu.Unlock()
	if code := g.checkCommitLocked(now, generation, memberID, instanceID); code != 0 {
		setAll(code)
		return
	}
	err = c.store.Update(func(tx *state.Txn) error {
		for _, e := range entries {
			if err := tx.Set(offsetKey(g.name, e.tp), encodeCommitted(e.off)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		g.logger().Warn("group: offset commit failed", "partitions", len(entries), "err", err)
		setAll(kerr.UnknownServerError.Code)
		return
	}
	seen := g.c.mono()
	for _, e := range entries {
		e.off.seen = seen
		g.offsets[e.tp] = e.off
	}
}

// checkCommitLocked is Kafka's commit validation: a simple commit
// (generation < 0) needs an Empty group; otherwise the member and its
// generation must be current, and not while the group waits for the
// leader's assignment. A member's commit also restarts its session.
func (g *group) checkCommitLocked(now time.Time, generation int32, memberID string, instanceID *string) int16 {
	if code := g.checkInstanceLocked(instanceID, memberID); code != 0 {
		return code
	}
	if generation < 0 && g.state == stateEmpty {
		return 0
	}
	m := g.members[memberID]
	switch {
	case m == nil:
		return kerr.UnknownMemberID.Code
	case generation != g.generation:
		return kerr.IllegalGeneration.Code
	}
	g.touchLocked(m, now)
	if g.state == stateCompletingRebalance {
		return kerr.RebalanceInProgress.Code
	}
	return 0
}
