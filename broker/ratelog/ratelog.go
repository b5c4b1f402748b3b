// Package ratelog keeps repeated warnings from flooding the log of a
// gateway that runs for months on an SD card. A Limiter lets one line per
// key through per interval (a key is a device and a reason, a remote
// address and a reason, ...), remembers a bounded number of keys (the
// oldest is forgotten first, so a flood of distinct keys cannot grow it),
// and lets at most a budget of lines through per interval in all. What it
// holds back is counted and reported on the next line that gets through.
//
// Every package that logs on behalf of its clients (the MQTT broker, the
// Kafka listener, the commands dispatcher, the bridges) uses one.
package ratelog

import (
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"sync"
	"time"
)

// Defaults of New.
const (
	Interval = time.Minute // one line per key per Interval
	MaxKeys  = 4096        // keys remembered
	Budget   = 100         // lines per Interval, all keys together
	// maxKeyLen bounds a key's size: longer keys (names from requests)
	// are replaced by a fingerprint.
	maxKeyLen = 256
)

// Limiter decides which warnings are logged. Its mutex is a leaf lock.
type Limiter struct {
	mu         sync.Mutex
	now        func() time.Time     // guarded by mu: the clock (tests move it)
	keys       map[string]*keyState // guarded by mu
	ring       []string             // guarded by mu: keys in insertion order
	next       int                  // guarded by mu: the ring slot to reuse next, once full
	window     time.Time            // guarded by mu: start of the budget's current interval
	lines      int                  // guarded by mu: lines let through in that interval
	suppressed int                  // guarded by mu: lines the budget held back, not yet reported
	classes    map[string]time.Time // guarded by mu: when each class (reason) last logged
}

type keyState struct {
	last time.Time // when the key last logged
	held int       // its lines held back since
}

// New returns a Limiter with the package defaults.
func New() *Limiter {
	return &Limiter{now: time.Now, keys: make(map[string]*keyState), classes: make(map[string]time.Time)}
}

// Allow reports whether a line for key may be logged now. When it may,
// held is how many lines were held back since the last line that got
// through: this key's repeats within its interval, and lines of any key
// the overall budget stopped.
func (l *Limiter) Allow(key string) (ok bool, held int) {
	return l.AllowClass("", key)
}

// AllowClass is Allow for a key of a class (a reason: every refused
// connection with an unknown token, say, whatever the token). The first
// line of a class in an interval is let through even when the overall
// budget is spent, so a flood of one kind of trouble cannot hide the first
// sign of another. Classes are a program's own words, few; at most MaxKeys
// are remembered.
func (l *Limiter) AllowClass(class, key string) (ok bool, held int) {
	if len(key) > maxKeyLen {
		sum := sha256.Sum256([]byte(key))
		key = "#" + hex.EncodeToString(sum[:8])
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	k := l.keys[key]
	if k != nil && now.Sub(k.last) < Interval {
		k.held++
		return false, 0
	}
	if now.Sub(l.window) >= Interval {
		l.window, l.lines = now, 0
	}
	newClass := false
	if class != "" {
		last, seen := l.classes[class]
		newClass = !seen || now.Sub(last) >= Interval
	}
	if l.lines >= Budget && !newClass {
		l.suppressed++ // the key is not remembered: it logs once the budget allows
		return false, 0
	}
	l.lines++
	if class != "" {
		if _, seen := l.classes[class]; seen || len(l.classes) < MaxKeys {
			l.classes[class] = now
		}
	}
	if k == nil {
		k = &keyState{}
		l.keys[key] = k
		if len(l.ring) < MaxKeys {
			l.ring = append(l.ring, key)
		} else {
			delete(l.keys, l.ring[l.next])
			l.ring[l.next] = key
			l.next = (l.next + 1) % MaxKeys
		}
	}
	held = k.held + l.suppressed
	k.last, k.held, l.suppressed = now, 0, 0
	return true, held
}

// Warn logs msg with args at warning level if Allow(key) lets it, adding
// "held_back" when lines were held back since.
func (l *Limiter) Warn(lg *slog.Logger, key, msg string, args ...any) {
	ok, held := l.Allow(key)
	if !ok {
		return
	}
	if held > 0 {
		args = append(args, "held_back", held)
	}
	lg.Warn(msg, args...)
}

// SetClock replaces the clock (tests).
func (l *Limiter) SetClock(now func() time.Time) {
	l.mu.Lock()
	l.now = now
	l.mu.Unlock()
}

// Len is the number of keys remembered.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}
