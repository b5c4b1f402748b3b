package mqtt

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// logLimited logs a warning at most once per device and reason per
// minute, within the limiter's overall budget (broker/ratelog) — but the
// first line of each reason in a minute is never held back by the budget.
func (srv *Server) logLimited(device, reason, msg string, args ...any) {
	ok, held := srv.limiter.AllowClass(reason, reason+"\x00"+device)
	if !ok {
		return
	}
	args = append([]any{"device", truncate(device, 255), "reason", reason}, args...)
	if held > 0 {
		args = append(args, "held_back", held)
	}
	srv.logger.Warn("mqtt: "+msg, args...)
}

// identity names what a refused connection presented, for the log
// limiter's key and the log line: a fingerprint of the user name (which
// may be an access token, so never logged) or, without one, of the client
// id. Either way the key has a fixed size, however long the input.
func identity(username, clientID string) string {
	if username != "" {
		return "user:" + fingerprint(username)
	}
	return "client:" + fingerprint(clientID)
}

func fingerprint(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}

// truncate shortens s for a log line.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
