package kafkaserver

// FindCoordinator (key 10), versions 0-4: this node coordinates every group
// (and would every transaction). v0-3 answer in the top-level fields, v4+
// one entry per requested key.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleFindCoordinator(c *conn, r *request) *outbound {
	req := r.kreq.(*kmsg.FindCoordinatorRequest)
	resp := req.ResponseKind().(*kmsg.FindCoordinatorResponse)
	s := c.s
	code := int16(0)
	if req.CoordinatorType != 0 { // 1 is transactions, which Ferry does not coordinate
		code = kerr.CoordinatorNotAvailable.Code
	}
	if req.Version < 4 {
		resp.ErrorCode = code
		if code == 0 {
			resp.NodeID, resp.Host, resp.Port = s.cfg.NodeID, s.advHost, s.advPort
		}
		return &outbound{resp: resp}
	}
	for _, key := range req.CoordinatorKeys {
		co := kmsg.NewFindCoordinatorResponseCoordinator()
		co.Key, co.ErrorCode = key, code
		if code == 0 {
			co.NodeID, co.Host, co.Port = s.cfg.NodeID, s.advHost, s.advPort
		}
		resp.Coordinators = append(resp.Coordinators, co)
	}
	return &outbound{resp: resp}
}
