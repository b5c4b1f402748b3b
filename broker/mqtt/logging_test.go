package mqtt

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/broker/testkit"
)

// TestRefusedConnectsLoggedOncePerIdentity: a device reconnecting in a
// loop with a bad token (a new remote port each time, a new client id
// too) is logged once a minute; another device's refusal still gets its
// own line; every refusal is counted.
func TestRefusedConnectsLoggedOncePerIdentity(t *testing.T) {
	e := newEnv(t)
	var lines strings.Builder
	w := &lockedWriter{w: &lines}
	e.srv.logger = newTestLogger(w)
	clock := testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e.srv.limiter.SetClock(clock.Now)
	count := func() int {
		w.mu.Lock()
		defer w.mu.Unlock()
		return strings.Count(lines.String(), "connection refused")
	}
	refused := func(token, clientID string) {
		t.Helper()
		if _, ack := dial(t, e.srv.Addr(), connectOpts{clientID: clientID, username: token}); ack.ReasonCode != 0x05 {
			t.Fatalf("CONNACK %#x", ack.ReasonCode)
		}
	}
	for i := range 20 {
		refused("BAD-TOKEN", fmt.Sprintf("client-%d", i))
	}
	if n := count(); n != 1 {
		t.Fatalf("%d log lines for 20 refusals of one token", n)
	}
	if strings.Contains(lines.String(), "BAD-TOKEN") {
		t.Fatal("the presented token was logged")
	}
	refused("OTHER-BAD-TOKEN", "x")
	if n := count(); n != 2 {
		t.Fatalf("%d log lines: the second device's refusal was not logged", n)
	}
	clock.Advance(59 * time.Second)
	refused("BAD-TOKEN", "y")
	if n := count(); n != 2 {
		t.Fatalf("%d log lines within the minute", n)
	}
	clock.Advance(2 * time.Second)
	refused("BAD-TOKEN", "z")
	if n := count(); n != 3 {
		t.Fatalf("%d log lines after the minute, want 3", n)
	}
	if got := e.rejected("connect_auth"); got != 23 {
		t.Fatalf("connect_auth counted %v, want 23", got)
	}
}
