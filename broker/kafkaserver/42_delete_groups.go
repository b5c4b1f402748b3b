package kafkaserver

// DeleteGroups (key 42), versions 0-2: served by the group coordinator
// (package group), which owns the classic consumer-group state machine and
// the committed offsets.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleDeleteGroups(c *conn, r *request) *outbound {
	req := r.kreq.(*kmsg.DeleteGroupsRequest)
	return &outbound{resp: c.s.groups.DeleteGroups(req)}
}
