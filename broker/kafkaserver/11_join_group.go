package kafkaserver

// JoinGroup (key 11), versions 0-9 (kafka-go uses v1 and v2): served by the group coordinator
// (package group), which owns the classic consumer-group state machine and
// the committed offsets.

import (
	"net"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleJoinGroup(c *conn, r *request) *outbound {
	req := r.kreq.(*kmsg.JoinGroupRequest)
	return &outbound{resp: c.s.groups.JoinGroup(c.ctx, r.clientID, host(c.remote), req)}
}

// host is the address part of a remote address, for DescribeGroups.
func host(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return "/" + h
	}
	return remote
}
