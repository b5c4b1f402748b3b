package group

// JoinGroup: v0-9.
//
// Version notes:
//   - v1: RebalanceTimeoutMillis (v0: the session timeout is both)
//   - v4: a member joining with no member id gets MEMBER_ID_REQUIRED and a
//     new id to join with (KIP-394); v0-3 members join at once
//   - v5: InstanceID, static membership (KIP-345)
//   - v7: ProtocolType in the response
//   - v9: SkipAssignment in the response (KIP-814)

import (
	"bytes"
	"context"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// joinParams is a JoinGroup request, copied out of the request buffer.
type joinParams struct {
	version      int16
	memberID     string
	instanceID   *string
	clientID     string
	clientHost   string
	protocolType string
	protocols    []protocol
	session      time.Duration
	rebalance    time.Duration
}

func millis(ms int32) time.Duration { return time.Duration(ms) * time.Millisecond }

func newJoinParams(clientID, clientHost string, req *kmsg.JoinGroupRequest) *joinParams {
	p := &joinParams{
		version:      req.Version,
		memberID:     strings.Clone(req.MemberID),
		clientID:     strings.Clone(clientID),
		clientHost:   strings.Clone(clientHost),
		protocolType: strings.Clone(req.ProtocolType),
		session:      millis(req.SessionTimeoutMillis),
		rebalance:    millis(req.RebalanceTimeoutMillis),
		protocols:    make([]protocol, 0, len(req.Protocols)),
	}
	if req.Version == 0 || p.rebalance <= 0 {
		p.rebalance = p.session
	}
	if req.Version >= 5 && req.InstanceID != nil {
		id := strings.Clone(*req.InstanceID)
		p.instanceID = &id
	}
	for _, rp := range req.Protocols {
		p.protocols = append(p.protocols, protocol{name: strings.Clone(rp.Name), metadata: bytes.Clone(rp.Metadata)})
	}
	return p
}

func (p *joinParams) newMember() *member {
	return &member{
		id:               p.memberID,
		instanceID:       p.instanceID,
		clientID:         p.clientID,
		clientHost:       p.clientHost,
		sessionTimeout:   p.session,
		rebalanceTimeout: p.rebalance,
		protocols:        p.protocols,
	}
}

// JoinGroup handles a JoinGroup request of a client (clientID from the
// request header, clientHost its address) and returns the response of
// the request's version. It blocks until the rebalance completes, ctx
// ends (the member then stays until its session times out) or the
// coordinator closes.
func (c *Coordinator) JoinGroup(ctx context.Context, clientID, clientHost string, req *kmsg.JoinGroupRequest) *kmsg.JoinGroupResponse {
	r := c.join(ctx, clientID, clientHost, req)
	resp := req.ResponseKind().(*kmsg.JoinGroupResponse)
	resp.ErrorCode = r.err
	resp.Generation = r.generation
	resp.MemberID = r.memberID
	resp.LeaderID = r.leader
	if r.err == 0 {
		resp.Protocol = kmsg.StringPtr(r.protocol)
		if resp.Version >= 7 {
			resp.ProtocolType = kmsg.StringPtr(r.protocolType)
		}
		if resp.Version >= 9 {
			resp.SkipAssignment = r.skipAssignment
		}
		resp.Members = r.members
		if resp.Version < 5 {
			for i := range resp.Members {
				resp.Members[i].InstanceID = nil
			}
		}
	}
	return resp
}

func (c *Coordinator) join(ctx context.Context, clientID, clientHost string, req *kmsg.JoinGroupRequest) joinResult {
	session := millis(req.SessionTimeoutMillis)
	switch {
	case !validGroupID(req.Group):
		return joinError(kerr.InvalidGroupID, req.MemberID)
	case session < c.cfg.MinSessionTimeout || session > c.cfg.MaxSessionTimeout:
		return joinError(kerr.InvalidSessionTimeout, req.MemberID)
	case req.ProtocolType == "" || len(req.Protocols) == 0:
		return joinError(kerr.InconsistentGroupProtocol, req.MemberID)
	}
	p := newJoinParams(clientID, clientHost, req)
	// Only a member with no id may create a group: a known member id in
	// a group that does not exist is stale.
	g, err := c.lockGroup(req.Group, p.memberID == "")
	if err != nil {
		return joinResult{err: codeOf(err), generation: -1, memberID: p.memberID}
	}
	if g == nil {
		return joinError(kerr.UnknownMemberID, p.memberID)
	}
	r, m, wait := g.joinLocked(c.now(), p)
	g.mu.Unlock()
	if wait == nil {
		return r
	}
	select {
	case r = <-wait:
		return r
	case <-ctx.Done():
		g.abandonJoin(m, wait)
		return joinError(kerr.RebalanceInProgress, m.id)
	case <-c.closing:
		return joinError(kerr.CoordinatorNotAvailable, m.id)
	}
}

// joinLocked runs a join. It returns either the answer, or (with a nil
// answer) the member and the channel its answer will come on.
func (g *group) joinLocked(now time.Time, p *joinParams) (joinResult, *member, chan joinResult) {
	if len(g.members) > 0 && p.protocolType != g.protocolType {
		return joinError(kerr.InconsistentGroupProtocol, p.memberID), nil, nil
	}
	if p.memberID == "" {
		return g.joinNewLocked(now, p)
	}
	if code := g.checkInstanceLocked(p.instanceID, p.memberID); code != 0 {
		return joinResult{err: code, generation: -1, memberID: p.memberID}, nil, nil
	}
	if _, ok := g.pending[p.memberID]; ok {
		if !g.supportsLocked(p.protocols, nil) {
			return joinError(kerr.InconsistentGroupProtocol, p.memberID), nil, nil
		}
		delete(g.pending, p.memberID)
		return g.addAndJoinLocked(now, p)
	}
	m := g.members[p.memberID]
	if m == nil {
		return joinError(kerr.UnknownMemberID, p.memberID), nil, nil
	}
	if !g.supportsLocked(p.protocols, m) {
		return joinError(kerr.InconsistentGroupProtocol, p.memberID), nil, nil
	}
	// A follower rejoining with nothing changed keeps the current
	// generation (Kafka does the same); the leader's rejoin, or changed
	// protocols, start a rebalance.
	same := m.sameProtocols(p.protocols)
	if (g.state == stateCompletingRebalance && same) || (g.state == stateStable && same && m.id != g.leader) {
		if m.syncing == nil {
			g.setDeadlineLocked(m, now)
		}
		return g.joinResultLocked(m), nil, nil
	}
	m.clientID, m.clientHost = p.clientID, p.clientHost
	m.sessionTimeout, m.rebalanceTimeout = p.session, p.rebalance
	m.protocols = p.protocols
	wait := g.waitJoinLocked(m)
	if g.state != statePreparingRebalance {
		g.prepareRebalanceLocked(now, "member rejoined")
	}
	g.maybeCompleteJoinLocked(now)
	return joinResult{}, m, wait
}

// joinNewLocked runs the join of a member with no member id.
func (g *group) joinNewLocked(now time.Time, p *joinParams) (joinResult, *member, chan joinResult) {
	if p.instanceID != nil {
		if oldID, ok := g.static[*p.instanceID]; ok {
			if old := g.members[oldID]; old != nil {
				return g.replaceStaticLocked(now, old, p)
			}
			delete(g.static, *p.instanceID)
		}
	}
	if !g.supportsLocked(p.protocols, nil) {
		return joinError(kerr.InconsistentGroupProtocol, ""), nil, nil
	}
	if len(g.members)+len(g.pending) >= g.c.cfg.MaxGroupSize {
		return joinError(kerr.GroupMaxSizeReached, ""), nil, nil
	}
	prefix := p.clientID
	if p.instanceID != nil {
		prefix = *p.instanceID
	}
	p.memberID = newMemberID(prefix)
	if p.version >= 4 && p.instanceID == nil {
		at := now.Add(p.session)
		g.pending[p.memberID] = at
		g.c.schedule(at)
		return joinError(kerr.MemberIDRequired, p.memberID), nil, nil
	}
	return g.addAndJoinLocked(now, p)
}

// addAndJoinLocked adds a new member that has joined.
func (g *group) addAndJoinLocked(now time.Time, p *joinParams) (joinResult, *member, chan joinResult) {
	m := p.newMember()
	wasPreparing := g.state == statePreparingRebalance
	g.addMemberLocked(m, p.protocolType)
	wait := g.waitJoinLocked(m)
	if wasPreparing {
		g.extendJoinDelayLocked(now)
	} else {
		g.prepareRebalanceLocked(now, "new member")
	}
	g.maybeCompleteJoinLocked(now)
	g.logger().Debug("group: member added", "member", m.id, "client_id", m.clientID)
	return joinResult{}, m, wait
}

// replaceStaticLocked handles a static member joining again with no
// member id (a restarted instance): the new incarnation gets a new member
// id and the old one is fenced. If the group is Stable and nothing
// changed, it takes the old one's place without a rebalance (KIP-345); a
// leader needs v9's SkipAssignment for that (KIP-814), else it rebalances.
func (g *group) replaceStaticLocked(now time.Time, old *member, p *joinParams) (joinResult, *member, chan joinResult) {
	if !g.supportsLocked(p.protocols, old) {
		return joinError(kerr.InconsistentGroupProtocol, ""), nil, nil
	}
	p.memberID = newMemberID(*p.instanceID)
	m := p.newMember()
	m.assignment = old.assignment
	m.synced = old.synced
	wasLeader := g.leader == old.id
	same := old.sameProtocols(p.protocols)
	g.removeMemberLocked(old, kerr.FencedInstanceID.Code, "replaced by a new instance of the static member")
	g.addMemberLocked(m, p.protocolType)
	m.seq = old.seq
	if wasLeader {
		g.leader = m.id
	}
	if g.state == stateStable && same && (!wasLeader || p.version >= 9) {
		g.setDeadlineLocked(m, now)
		r := g.joinResultLocked(m)
		r.skipAssignment = wasLeader
		return r, nil, nil
	}
	wait := g.waitJoinLocked(m)
	if g.state != statePreparingRebalance {
		g.prepareRebalanceLocked(now, "static member replaced")
	}
	g.maybeCompleteJoinLocked(now)
	return joinResult{}, m, wait
}

// abandonJoin is called when the client of a blocked JoinGroup went away.
// The member still counts as rejoined (its answer is dropped, as in
// Kafka) but its session runs again.
func (g *group) abandonJoin(m *member, wait chan joinResult) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.members[m.id] == m && m.joining == wait {
		g.setDeadlineLocked(m, g.c.now())
	}
}
