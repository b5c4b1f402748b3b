package group

// Heartbeat: v0-4.
//
// Version notes:
//   - v3: InstanceID

import (
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Heartbeat handles a Heartbeat request: it restarts the member's session
// and tells it to rejoin (REBALANCE_IN_PROGRESS) while the group prepares
// a rebalance.
func (c *Coordinator) Heartbeat(req *kmsg.HeartbeatRequest) *kmsg.HeartbeatResponse {
	resp := req.ResponseKind().(*kmsg.HeartbeatResponse)
	if !validGroupID(req.Group) {
		resp.ErrorCode = kerr.InvalidGroupID.Code
		return resp
	}
	g, err := c.lockGroup(req.Group, false)
	switch {
	case err != nil:
		resp.ErrorCode = codeOf(err)
	case g == nil:
		resp.ErrorCode = kerr.UnknownMemberID.Code
	default:
		resp.ErrorCode = g.heartbeatLocked(c.now(), req)
		g.mu.Unlock()
	}
	return resp
}

func (g *group) heartbeatLocked(now time.Time, req *kmsg.HeartbeatRequest) int16 {
	var instanceID *string
	if req.Version >= 3 {
		instanceID = req.InstanceID
	}
	if code := g.checkInstanceLocked(instanceID, req.MemberID); code != 0 {
		return code
	}
	m := g.members[req.MemberID]
	switch {
	case m == nil:
		return kerr.UnknownMemberID.Code
	case req.Generation != g.generation:
		return kerr.IllegalGeneration.Code
	}
	switch g.state {
	case statePreparingRebalance:
		g.touchLocked(m, now)
		return kerr.RebalanceInProgress.Code
	case stateCompletingRebalance, stateStable:
		g.touchLocked(m, now)
		return 0
	}
	return kerr.UnknownMemberID.Code
}
