package kafkaserver

// LeaveGroup (key 13), versions 0-5: served by the group coordinator
// (package group), which owns the classic consumer-group state machine and
// the committed offsets.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleLeaveGroup(c *conn, r *request) *outbound {
	req := r.kreq.(*kmsg.LeaveGroupRequest)
	return &outbound{resp: c.s.groups.LeaveGroup(req)}
}
