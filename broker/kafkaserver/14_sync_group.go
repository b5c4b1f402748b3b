package kafkaserver

// SyncGroup (key 14), versions 0-5: served by the group coordinator
// (package group), which owns the classic consumer-group state machine and
// the committed offsets.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleSyncGroup(c *conn, r *request) *outbound {
	req := r.kreq.(*kmsg.SyncGroupRequest)
	return &outbound{resp: c.s.groups.SyncGroup(c.ctx, req)}
}
