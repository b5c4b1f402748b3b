package ratelog

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// clock is a clock the tests move by hand (one goroutine).
type clock struct{ now time.Time }

func (c *clock) Now() time.Time          { return c.now }
func (c *clock) Advance(d time.Duration) { c.now = c.now.Add(d) }

func newLimiter() (*Limiter, *clock) {
	c := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	l := New()
	l.SetClock(c.Now)
	return l, c
}

// TestOncePerKeyPerInterval: a key logs once per interval, other keys log
// their own line, and the repeats held back are reported with the next
// line of that key.
func TestOncePerKeyPerInterval(t *testing.T) {
	l, c := newLimiter()
	if ok, held := l.Allow("a"); !ok || held != 0 {
		t.Fatalf("first line: %v %d", ok, held)
	}
	for range 5 {
		if ok, _ := l.Allow("a"); ok {
			t.Fatal("a repeat within the interval got through")
		}
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("another key was held back")
	}
	c.Advance(Interval - time.Second)
	if ok, _ := l.Allow("a"); ok {
		t.Fatal("a repeat before the interval ended got through")
	}
	c.Advance(time.Second)
	if ok, held := l.Allow("a"); !ok || held != 6 {
		t.Fatalf("after the interval: ok %v held %d, want 6", ok, held)
	}
}

// TestBounded: at most MaxKeys keys are remembered however many distinct
// keys show up, at most Budget lines get through per interval, and what
// the budget held back is reported on the next line.
func TestBounded(t *testing.T) {
	l, c := newLimiter()
	for i := range 100_000 {
		if i%Budget == 0 {
			c.Advance(Interval) // keep the budget open: every key logs
		}
		if ok, _ := l.Allow(fmt.Sprintf("key-%d", i)); !ok {
			t.Fatalf("key %d held back", i)
		}
		if n := l.Len(); n > MaxKeys {
			t.Fatalf("%d keys remembered after %d", n, i+1)
		}
	}
	if n := l.Len(); n != MaxKeys {
		t.Fatalf("%d keys remembered, want the cap %d", n, MaxKeys)
	}
	c.Advance(Interval)
	allowed := 0
	for i := range 2 * Budget {
		if ok, _ := l.Allow(fmt.Sprintf("burst-%d", i)); ok {
			allowed++
		}
	}
	if allowed != Budget {
		t.Fatalf("%d lines in an interval, want %d", allowed, Budget)
	}
	c.Advance(Interval)
	if ok, held := l.Allow("later"); !ok || held != Budget {
		t.Fatalf("after the burst: ok %v, held %d, want %d", ok, held, Budget)
	}
}

// TestLongKeys: keys longer than maxKeyLen are stored as a fingerprint,
// still one per distinct key.
func TestLongKeys(t *testing.T) {
	l, _ := newLimiter()
	a, b := strings.Repeat("a", 10_000), strings.Repeat("a", 9_999)+"b"
	if ok, _ := l.Allow(a); !ok {
		t.Fatal("first long key held back")
	}
	if ok, _ := l.Allow(a); ok {
		t.Fatal("long key repeated got through")
	}
	if ok, _ := l.Allow(b); !ok {
		t.Fatal("a different long key was taken for the first")
	}
	for k := range l.keys {
		if len(k) > maxKeyLen {
			t.Fatalf("a %d-byte key is stored", len(k))
		}
	}
}

// TestWarn logs through slog and reports what was held back.
func TestWarn(t *testing.T) {
	l, c := newLimiter()
	var buf bytes.Buffer
	lg := slog.New(slog.NewTextHandler(&buf, nil))
	for range 3 {
		l.Warn(lg, "k", "something failed", "device", "d1")
	}
	c.Advance(Interval)
	l.Warn(lg, "k", "something failed", "device", "d1")
	out := buf.String()
	if n := strings.Count(out, "something failed"); n != 2 {
		t.Fatalf("%d lines:\n%s", n, out)
	}
	if !strings.Contains(out, "held_back=2") {
		t.Fatalf("no held_back=2:\n%s", out)
	}
}

// TestNewClassPassesSpentBudget: when a flood of one class has spent the
// overall budget, the first line of another class still gets through,
// once per interval; its next lines wait for the budget as before.
func TestNewClassPassesSpentBudget(t *testing.T) {
	l, c := newLimiter()
	for i := 0; i < Budget; i++ {
		if ok, _ := l.AllowClass("unknown_token", fmt.Sprintf("token-%d", i)); !ok {
			t.Fatalf("line %d within the budget refused", i)
		}
	}
	if ok, _ := l.AllowClass("unknown_token", "token-x"); ok {
		t.Fatal("a line past the budget of the flooding class let through")
	}
	if ok, _ := l.AllowClass("packet_too_large", "dev-1"); !ok {
		t.Fatal("the first line of a new class was hidden by the spent budget")
	}
	if ok, _ := l.AllowClass("packet_too_large", "dev-2"); ok {
		t.Fatal("a second line of the new class let through past the budget")
	}
	c.Advance(Interval)
	if ok, held := l.AllowClass("packet_too_large", "dev-3"); !ok || held == 0 {
		t.Fatalf("after the interval: ok=%v held=%d, want a line reporting what was held back", ok, held)
	}
}
