package kafkaserver

// SaslHandshake (key 17), versions 0-1, and the bare SASL tokens that
// follow a v0 handshake (Sarama's default).
//
// Only PLAIN is offered, and only when kafka.sasl_users is configured.
// After a v1 handshake the token comes in SaslAuthenticate (key 36);
// after v0 the next frame is the bare token, answered with a bare,
// empty frame on success. Until authentication succeeds a connection may
// send only ApiVersions and these; anything else closes it, as Kafka does.

import (
	"bytes"
	"crypto/subtle"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const mechPlain = "PLAIN"

func handleSASLHandshake(c *conn, r *request) *outbound {
	req := r.kreq.(*kmsg.SASLHandshakeRequest)
	resp := req.ResponseKind().(*kmsg.SASLHandshakeResponse)
	switch {
	case len(c.s.sasl) == 0:
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
		resp.SupportedMechanisms = []string{}
	case c.authed || c.saslMech != "":
		resp.ErrorCode = kerr.IllegalSaslState.Code
		resp.SupportedMechanisms = []string{mechPlain}
	case req.Mechanism != mechPlain:
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
		resp.SupportedMechanisms = []string{mechPlain}
	default:
		resp.SupportedMechanisms = []string{mechPlain}
		c.saslMech = mechPlain
		c.saslRaw = req.Version == 0
	}
	return &outbound{resp: resp}
}

// saslRawToken authenticates the bare token that follows a v0 handshake.
func (c *conn) saslRawToken(frame []byte, start time.Time) *outbound {
	c.saslRaw = false
	if !c.checkPlain(frame) {
		return nil // v0 has no way to say why: close
	}
	return &outbound{key: kmsg.SASLAuthenticate.Int16(), raw: []byte{}, bare: true, start: start}
}

// checkPlain verifies a PLAIN token (authzid NUL user NUL password).
func (c *conn) checkPlain(tok []byte) bool {
	parts := bytes.Split(tok, []byte{0})
	ok := false
	var user string
	if len(parts) == 3 {
		user = string(parts[1])
		if want, found := c.s.sasl[user]; found {
			ok = subtle.ConstantTimeCompare([]byte(want), parts[2]) == 1
		}
		if len(parts[0]) > 0 && string(parts[0]) != user {
			ok = false // no impersonation
		}
	}
	if !ok {
		c.s.metrics.AuthFailures.Inc()
		c.s.limiter.Warn(c.s.logger, "sasl"+c.remote, "kafkaserver: SASL/PLAIN authentication failed", "remote", c.remote, "user", user)
		return false
	}
	c.authed = true
	return true
}
