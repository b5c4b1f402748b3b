package group

// LeaveGroup: v0-5.
//
// Version notes:
//   - v3: a batch of Members, each with an InstanceID and its own error
//     code (KIP-345); v0-2 carry one MemberID
//   - v5: Reason per member (logged only)

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// LeaveGroup handles a LeaveGroup request. Every member that leaves is
// removed at once (its blocked calls get UNKNOWN_MEMBER_ID) and the group
// rebalances, or becomes Empty when nobody is left.
func (c *Coordinator) LeaveGroup(req *kmsg.LeaveGroupRequest) *kmsg.LeaveGroupResponse {
	resp := req.ResponseKind().(*kmsg.LeaveGroupResponse)
	leaving := req.Members
	if req.Version < 3 {
		leaving = []kmsg.LeaveGroupRequestMember{{MemberID: req.MemberID}}
	}
	codes := make([]int16, len(leaving))
	top := c.leave(req, leaving, codes)
	if req.Version < 3 {
		resp.ErrorCode = top
		if top == 0 {
			resp.ErrorCode = codes[0]
		}
		return resp
	}
	resp.ErrorCode = top
	for i, rm := range leaving {
		m := kmsg.NewLeaveGroupResponseMember()
		m.MemberID = rm.MemberID
		m.InstanceID = rm.InstanceID
		m.ErrorCode = codes[i]
		if top != 0 {
			m.ErrorCode = top
		}
		resp.Members = append(resp.Members, m)
	}
	return resp
}

// leave removes the leaving members, filling codes, and returns the
// request-level error code.
func (c *Coordinator) leave(req *kmsg.LeaveGroupRequest, leaving []kmsg.LeaveGroupRequestMember, codes []int16) int16 {
	if !validGroupID(req.Group) {
		return kerr.InvalidGroupID.Code
	}
	g, err := c.lockGroup(req.Group, false)
	if err != nil {
		return codeOf(err)
	}
	if g == nil {
		return kerr.UnknownMemberID.Code
	}
	defer g.mu.Unlock()
	removed := false
	for i, rm := range leaving {
		var gone bool
		codes[i], gone = g.leaveLocked(req.Version, rm)
		removed = removed || gone
	}
	if removed {
		g.membershipChangedLocked(c.now(), "member left")
	}
	return 0
}

// leaveLocked removes one member (or a pending member id) and reports its
// error code and whether a member was removed.
func (g *group) leaveLocked(version int16, rm kmsg.LeaveGroupRequestMember) (int16, bool) {
	id := rm.MemberID
	if version >= 3 && rm.InstanceID != nil {
		known, ok := g.static[*rm.InstanceID]
		switch {
		case !ok:
			return kerr.UnknownMemberID.Code, false
		case id != "" && id != known:
			return kerr.FencedInstanceID.Code, false
		}
		id = known
	}
	if _, ok := g.pending[id]; ok {
		delete(g.pending, id)
		return 0, false
	}
	m := g.members[id]
	if m == nil {
		return kerr.UnknownMemberID.Code, false
	}
	if rm.Reason != nil && *rm.Reason != "" {
		g.logger().Debug("group: leave reason", "member", m.id, "reason", *rm.Reason)
	}
	g.removeMemberLocked(m, kerr.UnknownMemberID.Code, reasonLeft)
	return 0, true
}
