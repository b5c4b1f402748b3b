// Package testkit holds the helpers that tests across Ferry share: waiting
// for a condition the system reaches by itself (Eventually), a clock
// moved by hand (Clock), and stopping a test whose real peer is not
// installed (NeedTool, Missing). It is for tests only; production code must not
// import it.
package testkit

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// pollEvery is how often Eventually evaluates its condition.
const pollEvery = 5 * time.Millisecond

// Eventually polls cond until it reports true, and fails the test with
// t.Fatalf if it has not within timeout. The failure message names what was
// awaited: format and args, as for fmt.Sprintf (a pointer to a struct that
// cond updates prints the struct as it is at the failure). The timeout only
// turns a hang into a failure; it is not a timing claim.
//
// cond runs on the caller's goroutine, so it may itself fail the test.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(pollEvery) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, fmt.Sprintf(format, args...))
		}
	}
}

// Clock is a clock a test moves by hand, safe for concurrent use. It has
// a wall clock (Now) and a monotonic one (Monotonic, starting at 0) that
// move together (Advance) or apart (JumpWall), so it serves as a
// commitlog.Clock and, through its Now method, wherever a func() time.Time
// is wanted.
type Clock struct {
	mu struct {
		sync.Mutex
		wall time.Time
		mono time.Duration
	}
}

// NewClock returns a Clock whose wall clock reads start.
func NewClock(start time.Time) *Clock {
	c := &Clock{}
	c.mu.wall = start
	return c
}

// Now returns the wall time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.wall
}

// Monotonic returns the monotonic time elapsed since NewClock.
func (c *Clock) Monotonic() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.mono
}

// Advance moves both clocks by d, as real time passing does.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mu.wall = c.mu.wall.Add(d)
	c.mu.mono += d
}

// JumpWall moves only the wall clock by d, as an NTP step does.
func (c *Clock) JumpWall(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mu.wall = c.mu.wall.Add(d)
}

// Missing stops a test that needs something scripts/test.sh installs (a
// Debian package, npm modules) but this machine lacks: in CI (CI set) the
// test fails, elsewhere it is skipped. The message says what is missing
// and how to get it.
func Missing(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
}

// NeedTool returns the path of the command name, from Debian package pkg,
// or stops the test as Missing does.
func NeedTool(tb testing.TB, name, pkg string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(tb, "%s not found: Debian package %s, which scripts/test.sh installs", name, pkg)
	}
	return p
}

// SyncBuffer is a bytes.Buffer that writers on several goroutines (a
// logger, a child process's output) share with a test reading it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
