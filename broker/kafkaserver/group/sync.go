package group

// SyncGroup: v0-5.
//
// Version notes:
//   - v3: InstanceID
//   - v5: ProtocolType and Protocol in request and response; a mismatch
//     with the group's is INCONSISTENT_GROUP_PROTOCOL

import (
	"bytes"
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// SyncGroup handles a SyncGroup request and returns the response of its
// version. In CompletingRebalance it blocks until the leader's assignment
// arrives (the leader's own call delivers it), the group rebalances again
// (REBALANCE_IN_PROGRESS), ctx ends or the coordinator closes.
func (c *Coordinator) SyncGroup(ctx context.Context, req *kmsg.SyncGroupRequest) *kmsg.SyncGroupResponse {
	r := c.sync(ctx, req)
	resp := req.ResponseKind().(*kmsg.SyncGroupResponse)
	resp.ErrorCode = r.err
	if r.err == 0 {
		resp.MemberAssignment = r.assignment
		if resp.Version >= 5 {
			resp.ProtocolType = kmsg.StringPtr(r.protocolType)
			resp.Protocol = kmsg.StringPtr(r.protocol)
		}
	}
	return resp
}

func (c *Coordinator) sync(ctx context.Context, req *kmsg.SyncGroupRequest) syncResult {
	if !validGroupID(req.Group) {
		return syncResult{err: kerr.InvalidGroupID.Code}
	}
	g, err := c.lockGroup(req.Group, false)
	if err != nil {
		return syncResult{err: codeOf(err)}
	}
	if g == nil {
		return syncResult{err: kerr.UnknownMemberID.Code}
	}
	r, m, wait := g.syncLocked(c.now(), req)
	g.mu.Unlock()
	if wait == nil {
		return r
	}
	select {
	case r = <-wait:
		return r
	case <-ctx.Done():
		g.abandonSync(m, wait)
		return syncResult{err: kerr.RebalanceInProgress.Code}
	case <-c.closing:
		return syncResult{err: kerr.CoordinatorNotAvailable.Code}
	}
}

// syncLocked runs a SyncGroup: it returns the answer, or the member and
// the channel its answer will come on.
func (g *group) syncLocked(now time.Time, req *kmsg.SyncGroupRequest) (syncResult, *member, chan syncResult) {
	fail := func(e *kerr.Error) (syncResult, *member, chan syncResult) { return syncResult{err: e.Code}, nil, nil }
	var instanceID *string
	if req.Version >= 3 {
		instanceID = req.InstanceID
	}
	if code := g.checkInstanceLocked(instanceID, req.MemberID); code != 0 {
		return syncResult{err: code}, nil, nil
	}
	m := g.members[req.MemberID]
	switch {
	case m == nil:
		return fail(kerr.UnknownMemberID)
	case req.Generation != g.generation:
		return fail(kerr.IllegalGeneration)
	case req.Version >= 5 && req.ProtocolType != nil && *req.ProtocolType != g.protocolType,
		req.Version >= 5 && req.Protocol != nil && *req.Protocol != g.protocol:
		return fail(kerr.InconsistentGroupProtocol)
	}
	switch g.state {
	case statePreparingRebalance:
		return fail(kerr.RebalanceInProgress)
	case stateStable:
		// A member syncing after the leader, or a static member that
		// replaced its old incarnation: the assignment is known.
		if m.syncing == nil {
			g.setDeadlineLocked(m, now)
		}
		return g.syncResultLocked(m), nil, nil
	case stateCompletingRebalance:
		m.synced = true
		wait := g.waitSyncLocked(m)
		if m.id == g.leader {
			g.completeSyncLocked(now, req.GroupAssignment)
		}
		return syncResult{}, m, wait
	}
	return fail(kerr.UnknownMemberID)
}

// completeSyncLocked stores the leader's assignments, makes the group
// Stable and answers every blocked SyncGroup. Assignments for unknown
// members are ignored.
func (g *group) completeSyncLocked(now time.Time, assignments []kmsg.SyncGroupRequestGroupAssignment) {
	for _, m := range g.members {
		m.assignment = nil
	}
	for _, a := range assignments {
		if m := g.members[a.MemberID]; m != nil {
			m.assignment = bytes.Clone(a.MemberAssignment)
		}
	}
	g.state = stateStable
	g.syncDeadline = time.Time{}
	for _, m := range g.members {
		if m.syncing != nil {
			m.syncing <- g.syncResultLocked(m)
			m.syncing = nil
			g.setDeadlineLocked(m, now)
		}
	}
	g.logger().Info("group: stable", "generation", g.generation, "members", len(g.members))
}

func (g *group) syncResultLocked(m *member) syncResult {
	return syncResult{assignment: g.assignmentLocked(m), protocolType: g.protocolType, protocol: g.protocol}
}

// abandonSync is called when the client of a blocked SyncGroup went away:
// the member's session runs again.
func (g *group) abandonSync(m *member, wait chan syncResult) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.members[m.id] == m && m.syncing == wait {
		m.syncing = nil
		g.setDeadlineLocked(m, g.c.now())
	}
}
