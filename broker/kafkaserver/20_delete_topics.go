package kafkaserver

// DeleteTopics (key 20), versions 0-5 (v6 addresses topics by id).
// Topics the daemon itself writes (kafka.ProtectedTopics: the device
// topics) cannot be deleted: POLICY_VIOLATION.

import (
	"errors"
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

func handleDeleteTopics(c *conn, r *request) *outbound {
	req := r.kreq.(*kmsg.DeleteTopicsRequest)
	resp := req.ResponseKind().(*kmsg.DeleteTopicsResponse)
	for _, name := range req.TopicNames {
		st := kmsg.NewDeleteTopicsResponseTopic()
		st.Topic = kmsg.StringPtr(name)
		switch {
		case slices.Contains(c.s.cfg.ProtectedTopics, name):
			st.ErrorCode = kerr.PolicyViolation.Code
			st.ErrorMessage = kmsg.StringPtr("topic " + name + " is written by the gateway and cannot be deleted")
		default:
			if err := c.s.log.DeleteTopic(name); err != nil {
				st.ErrorCode = kerr.UnknownServerError.Code
				if errors.Is(err, commitlog.ErrUnknownTopic) {
					st.ErrorCode = kerr.UnknownTopicOrPartition.Code
				}
				st.ErrorMessage = kmsg.StringPtr(err.Error())
			} else {
				c.s.logger.Info("kafkaserver: deleted topic", "topic", name, "client", r.clientID)
			}
		}
		resp.Topics = append(resp.Topics, st)
	}
	return &outbound{resp: resp}
}
