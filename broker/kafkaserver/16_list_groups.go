package kafkaserver

// ListGroups (key 16), versions 0-4: served by the group coordinator
// (package group), which owns the classic consumer-group state machine and
// the committed offsets.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleListGroups(c *conn, r *request) *outbound {
	req := r.kreq.(*kmsg.ListGroupsRequest)
	return &outbound{resp: c.s.groups.ListGroups(req)}
}
