package kafkaserver

// SaslAuthenticate (key 36), versions 0-2: the PLAIN token after a v1
// SaslHandshake. A failure is answered SASL_AUTHENTICATION_FAILED and the
// connection closed.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleSASLAuthenticate(c *conn, r *request) *outbound {
	req := r.kreq.(*kmsg.SASLAuthenticateRequest)
	resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
	if c.saslMech != mechPlain || c.authed {
		resp.ErrorCode = kerr.IllegalSaslState.Code
		resp.ErrorMessage = kmsg.StringPtr("SaslAuthenticate without a PLAIN SaslHandshake")
		return &outbound{resp: resp, close: true}
	}
	if !c.checkPlain(req.SASLAuthBytes) {
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		resp.ErrorMessage = kmsg.StringPtr("Authentication failed: invalid username or password")
		return &outbound{resp: resp, close: true}
	}
	resp.SASLAuthBytes = []byte{}
	return &outbound{resp: resp}
}
