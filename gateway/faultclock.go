package main

import (
	"os"
	"strings"
	"sync"
	"time"
)

// faultClockEnv names a file whose content, a duration ("720h", "-2h"),
// shifts the daemon's wall clock — as an NTP step would — for the log and
// the group coordinator; monotonic time is untouched. A fault-injection
// seam for the end-to-end torture test: unset, the daemon uses the system
// clock. (Not FERRY_*: those are settings.)
const faultClockEnv = "GATEWAY_FAULT_CLOCK_FILE"

// faultClock is the wall clock shifted by the duration in a file, read
// again at most every 100 ms. It is a commitlog.Clock.
type faultClock struct {
	file  string
	start time.Time

	mu     sync.Mutex
	offset time.Duration
	read   time.Time
}

func newFaultClock(file string) *faultClock { return &faultClock{file: file, start: time.Now()} }

// Now is the system's wall clock plus the file's offset.
func (c *faultClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if now.Sub(c.read) >= 100*time.Millisecond {
		c.read = now
		if b, err := os.ReadFile(c.file); err == nil {
			if d, err := time.ParseDuration(strings.TrimSpace(string(b))); err == nil {
				c.offset = d
			}
		}
	}
	return now.Add(c.offset).Round(0) // no monotonic reading: a wall time
}

// Monotonic is the time since the clock was made.
func (c *faultClock) Monotonic() time.Duration { return time.Since(c.start) }

// faultOptions are the start options the environment asks for (none when
// faultClockEnv is unset).
func faultOptions(environ []string) startOptions {
	var so startOptions
	for _, kv := range environ {
		if file, ok := strings.CutPrefix(kv, faultClockEnv+"="); ok && file != "" {
			fc := newFaultClock(file)
			so.clock = fc
		}
	}
	return so
}
