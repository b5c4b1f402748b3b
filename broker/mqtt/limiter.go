package mqtt

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"sync"
	"time"
)

// Log limiter bounds. A key is a device (or the identity a refused
// connection presented) and a reason.
const (
	// limiterKeys is how many keys the limiter remembers; beyond that the
	// oldest is forgotten first (it may then log again within its minute),
	// so a flood of distinct identities cannot grow the map.
	limiterKeys = 4096
	// limiterLinesPerMinute is how many lines all keys together may log
	// per minute; the rest are counted and the count is reported on the
	// next line that gets through.
	limiterLinesPerMinute = 100
)

// logLimiter lets one log line through per key per minute, and at most
// limiterLinesPerMinute lines a minute in all. mu is a leaf lock.
type logLimiter struct {
	mu         sync.Mutex
	now        func() time.Time     // guarded by mu: the clock (tests move it)
	last       map[string]time.Time // guarded by mu: when each key last logged
	ring       []string             // guarded by mu: keys of last in insertion order
	next       int                  // guarded by mu: the ring slot to reuse next, once full
	window     time.Time            // guarded by mu: start of the current minute of the budget
	lines      int                  // guarded by mu: lines let through in that minute
	suppressed int                  // guarded by mu: lines held back by the budget, not yet reported
}

func (l *logLimiter) init() {
	l.now = time.Now
	l.last = make(map[string]time.Time)
}

// allow reports whether a line for key may be logged now and, if so, how
// many lines the overall budget suppressed since the last one that got
// through.
func (l *logLimiter) allow(key string) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if t, seen := l.last[key]; seen && now.Sub(t) < time.Minute {
		return false, 0
	}
	if now.Sub(l.window) >= time.Minute {
		l.window, l.lines = now, 0
	}
	if l.lines >= limiterLinesPerMinute {
		l.suppressed++ // the key is not remembered: it logs once the budget allows
		return false, 0
	}
	l.lines++
	if _, seen := l.last[key]; !seen {
		if len(l.ring) < limiterKeys {
			l.ring = append(l.ring, key)
		} else {
			delete(l.last, l.ring[l.next])
			l.ring[l.next] = key
			l.next = (l.next + 1) % limiterKeys
		}
	}
	l.last[key] = now
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}

// setClock replaces the clock (for tests).
func (l *logLimiter) setClock(now func() time.Time) {
	l.mu.Lock()
	l.now = now
	l.mu.Unlock()
}

// size is the number of keys remembered (for tests).
func (l *logLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.last)
}

// logLimited logs a warning at most once per device and reason per minute
// (and within the limiter's overall budget).
func (srv *Server) logLimited(device, reason, msg string, args ...any) {
	key := reason + "\x00" + device
	if len(device) > 255 { // names from requests may be long: keep keys small
		key = reason + "\x00#" + fingerprint(device)
	}
	ok, suppressed := srv.limiter.allow(key)
	if !ok {
		return
	}
	args = append([]any{"device", truncate(device, 255), "reason", reason}, args...)
	if suppressed > 0 {
		args = append(args, "suppressed_lines", suppressed)
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
