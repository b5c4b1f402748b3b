package kafkaserver

// OffsetFetch (key 9), versions 0-8: served by the group coordinator
// (package group), which owns the classic consumer-group state machine and
// the committed offsets.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleOffsetFetch(c *conn, r *request) *outbound {
	req := r.kreq.(*kmsg.OffsetFetchRequest)
	return &outbound{resp: c.s.groups.OffsetFetch(req)}
}
