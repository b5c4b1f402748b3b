package group

// DescribeGroups: v0-6, ListGroups: v0-5, DeleteGroups: v0-2.
//
// Version notes:
//   - DescribeGroups v3: IncludeAuthorizedOperations (there are no ACLs:
//     READ, DELETE and DESCRIBE are reported); v4: member InstanceID;
//     v6: a group that does not exist is GROUP_ID_NOT_FOUND with an
//     ErrorMessage (before: state Dead, no error), as in Kafka 4
//   - ListGroups v4: StatesFilter; v5: TypesFilter (every group here is
//     "classic")
//   - DeleteGroups: only an Empty group can be deleted (NON_EMPTY_GROUP)

import (
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// groupTypeClassic is ListGroups' GroupType of every group here.
const groupTypeClassic = "classic"

// DescribeGroups handles a DescribeGroups request. Protocol, member
// metadata and assignments are filled only for a Stable group, as in
// Kafka.
func (c *Coordinator) DescribeGroups(req *kmsg.DescribeGroupsRequest) *kmsg.DescribeGroupsResponse {
	resp := req.ResponseKind().(*kmsg.DescribeGroupsResponse)
	resp.Groups = make([]kmsg.DescribeGroupsResponseGroup, 0, len(req.Groups))
	for _, name := range req.Groups {
		resp.Groups = append(resp.Groups, c.describe(req, name))
	}
	return resp
}

func (c *Coordinator) describe(req *kmsg.DescribeGroupsRequest, name string) kmsg.DescribeGroupsResponseGroup {
	sg := kmsg.NewDescribeGroupsResponseGroup()
	sg.Group = name
	if req.IncludeAuthorizedOperations {
		sg.AuthorizedOperations = allGroupOperations
	}
	if len(name) > maxGroupIDLen {
		sg.ErrorCode = kerr.InvalidGroupID.Code
		return sg
	}
	g, err := c.lockGroup(name, false)
	switch {
	case err != nil:
		sg.ErrorCode = codeOf(err)
		return sg
	case g == nil:
		sg.State = stateDead.String()
		if req.Version >= 6 {
			sg.ErrorCode = kerr.GroupIDNotFound.Code
			sg.ErrorMessage = kmsg.StringPtr(fmt.Sprintf("Group %s not found.", name))
		}
		return sg
	}
	defer g.mu.Unlock()
	sg.State = g.state.String()
	sg.ProtocolType = g.protocolType
	stable := g.state == stateStable
	if stable {
		sg.Protocol = g.protocol
	}
	for _, m := range g.membersLocked() {
		sm := kmsg.NewDescribeGroupsResponseGroupMember()
		sm.MemberID = m.id
		if req.Version >= 4 {
			sm.InstanceID = m.instanceID
		}
		sm.ClientID = m.clientID
		sm.ClientHost = m.clientHost
		if stable {
			sm.ProtocolMetadata = m.metadataFor(g.protocol)
			sm.MemberAssignment = g.assignmentLocked(m)
		}
		sg.Members = append(sg.Members, sm)
	}
	return sg
}

// ListGroups handles a ListGroups request, honouring StatesFilter (v4+)
// and TypesFilter (v5+), both case-insensitive as in Kafka.
func (c *Coordinator) ListGroups(req *kmsg.ListGroupsRequest) *kmsg.ListGroupsResponse {
	resp := req.ResponseKind().(*kmsg.ListGroupsResponse)
	if c.isClosed() {
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return resp
	}
	var states, types []string
	if req.Version >= 4 {
		states = req.StatesFilter
	}
	if req.Version >= 5 {
		types = req.TypesFilter
	}
	if len(types) > 0 && !containsFold(types, groupTypeClassic) {
		return resp
	}
	for _, g := range c.snapshotGroups() {
		g.mu.Lock()
		st, protocolType := g.state, g.protocolType
		g.mu.Unlock()
		if st == stateDead || (len(states) > 0 && !containsFold(states, st.String())) {
			continue
		}
		lg := kmsg.NewListGroupsResponseGroup()
		lg.Group = g.name
		lg.ProtocolType = protocolType
		lg.GroupState = st.String()
		lg.GroupType = groupTypeClassic
		resp.Groups = append(resp.Groups, lg)
	}
	return resp
}

func containsFold(list []string, s string) bool {
	return slices.ContainsFunc(list, func(e string) bool { return strings.EqualFold(e, s) })
}

// DeleteGroups handles a DeleteGroups request: an Empty group's committed
// offsets are deleted from the store and the group disappears.
func (c *Coordinator) DeleteGroups(req *kmsg.DeleteGroupsRequest) *kmsg.DeleteGroupsResponse {
	resp := req.ResponseKind().(*kmsg.DeleteGroupsResponse)
	resp.Groups = make([]kmsg.DeleteGroupsResponseGroup, 0, len(req.Groups))
	for _, name := range req.Groups {
		sg := kmsg.NewDeleteGroupsResponseGroup()
		sg.Group = name
		sg.ErrorCode = c.deleteGroup(name)
		resp.Groups = append(resp.Groups, sg)
	}
	return resp
}

func (c *Coordinator) deleteGroup(name string) int16 {
	if len(name) > maxGroupIDLen { // an empty name is allowed, as in Kafka
		return kerr.InvalidGroupID.Code
	}
	g, err := c.lockGroup(name, false)
	switch {
	case err != nil:
		return codeOf(err)
	case g == nil:
		return kerr.GroupIDNotFound.Code
	}
	defer g.mu.Unlock()
	if g.state != stateEmpty {
		return kerr.NonEmptyGroup.Code
	}
	tps := make([]TopicPartition, 0, len(g.offsets))
	for tp := range g.offsets {
		tps = append(tps, tp)
	}
	if err := g.deleteOffsetsLocked(tps); err != nil {
		g.logger().Warn("group: delete failed", "err", err)
		return kerr.UnknownServerError.Code
	}
	g.killLocked()
	g.logger().Info("group: deleted")
	return 0
}
