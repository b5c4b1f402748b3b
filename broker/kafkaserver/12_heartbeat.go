package kafkaserver

// Heartbeat (key 12), versions 0-4: served by the group coordinator
// (package group), which owns the classic consumer-group state machine and
// the committed offsets.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleHeartbeat(c *conn, r *request) *outbound {
	req := r.kreq.(*kmsg.HeartbeatRequest)
	return &outbound{resp: c.s.groups.Heartbeat(req)}
}
