package kafkaserver

// InitProducerId (key 22), versions 0-4.
//
// Idempotent producers (no transactional id) get a fresh producer id with
// epoch 0; ids are allocated in blocks persisted in the state store, so an
// id is never handed out twice, not even across restarts. A v3+ request
// that names its current id and epoch (KIP-360, after an
// UNKNOWN_PRODUCER_ID) gets the same id with the epoch bumped. Ferry does
// not coordinate transactions: a transactional id is refused with
// INVALID_REQUEST (non-retriable, so the client fails fast and says so).

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleInitProducerID(c *conn, r *request) *outbound {
	req := r.kreq.(*kmsg.InitProducerIDRequest)
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.ProducerID, resp.ProducerEpoch = -1, -1
	if req.TransactionalID != nil && *req.TransactionalID != "" {
		resp.ErrorCode = kerr.InvalidRequest.Code
		c.s.limiter.Warn(c.s.logger, "txn"+c.remote, "kafkaserver: transactional producers are not supported", "remote", c.remote, "transactional_id", *req.TransactionalID)
		return &outbound{resp: resp}
	}
	if req.Version >= 3 && req.ProducerID >= 0 && req.ProducerEpoch >= 0 {
		if req.ProducerEpoch == 32767 {
			// Epoch exhausted: a new id, as Kafka does.
		} else if c.s.producers.known(req.ProducerID) {
			resp.ProducerID, resp.ProducerEpoch = req.ProducerID, req.ProducerEpoch+1
			return &outbound{resp: resp}
		}
	}
	id, err := c.s.producers.allocate()
	if err != nil {
		c.s.limiter.Warn(c.s.logger, "pid", "kafkaserver: cannot allocate a producer id", "err", err)
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return &outbound{resp: resp}
	}
	resp.ProducerID, resp.ProducerEpoch = id, 0
	return &outbound{resp: resp}
}
