package kafkaserver

// DescribeGroups (key 15), versions 0-5: served by the group coordinator
// (package group), which owns the classic consumer-group state machine and
// the committed offsets.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleDescribeGroups(c *conn, r *request) *outbound {
	req := r.kreq.(*kmsg.DescribeGroupsRequest)
	return &outbound{resp: c.s.groups.DescribeGroups(req)}
}
