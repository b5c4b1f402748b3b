package testkit

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the goroutine, as the real one does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// runEventually runs Eventually with a recorder on its own goroutine and
// returns the failure message ("" if it returned).
func runEventually(t *testing.T, timeout time.Duration, cond func() bool, format string, args ...any) string {
	r := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Eventually(r, timeout, cond, format, args...)
	}()
	<-done
	return r.msg
}

func TestEventuallyReturnsOnceTheConditionHolds(t *testing.T) {
	n := 0
	if msg := runEventually(t, 10*time.Second, func() bool { n++; return n == 3 }, "n to reach 3"); msg != "" {
		t.Fatalf("failed: %s", msg)
	}
	if n != 3 {
		t.Fatalf("condition evaluated %d times, want 3", n)
	}
}

func TestEventuallyFailsWithTheMessage(t *testing.T) {
	var last struct{ N int }
	msg := runEventually(t, 20*time.Millisecond, func() bool { last.N++; return false }, "%d widgets (last %+v)", 4, &last)
	if !strings.HasPrefix(msg, "timed out after 20ms waiting for 4 widgets (last &{N:") {
		t.Fatalf("message %q", msg)
	}
	if want := fmt.Sprintf("(last &{N:%d})", last.N); !strings.HasSuffix(msg, want) {
		t.Fatalf("message %q, want it to end %q", msg, want)
	}
}

func TestClockMovesByHand(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	c := NewClock(start)
	if !c.Now().Equal(start) || c.Monotonic() != 0 {
		t.Fatalf("new clock reads %v, %v", c.Now(), c.Monotonic())
	}
	c.Advance(time.Hour)
	if !c.Now().Equal(start.Add(time.Hour)) || c.Monotonic() != time.Hour {
		t.Fatalf("after Advance: %v, %v", c.Now(), c.Monotonic())
	}
	c.JumpWall(-2 * time.Hour)
	if !c.Now().Equal(start.Add(-time.Hour)) || c.Monotonic() != time.Hour {
		t.Fatalf("after JumpWall: %v, %v", c.Now(), c.Monotonic())
	}
}

// stopRecorder records how Missing stopped a test: Fatal or Skip.
type stopRecorder struct {
	testing.TB
	how, msg string
}

func (r *stopRecorder) Helper() {}
func (r *stopRecorder) Fatal(args ...any) {
	r.how, r.msg = "fatal", fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *stopRecorder) Skip(args ...any) {
	r.how, r.msg = "skip", fmt.Sprint(args...)
	runtime.Goexit()
}

// TestNeedToolFailsInCIAndSkipsElsewhere: a command that exists is
// returned; a missing one fails the test under CI and skips it otherwise,
// naming the package.
func TestNeedToolFailsInCIAndSkipsElsewhere(t *testing.T) {
	if p := NeedTool(t, "sh", "dash"); !strings.HasSuffix(p, "/sh") {
		t.Fatalf("NeedTool(sh) = %q", p)
	}
	for ci, want := range map[string]string{"true": "fatal", "": "skip"} {
		t.Setenv("CI", ci)
		r := &stopRecorder{TB: t}
		done := make(chan struct{})
		go func() { defer close(done); NeedTool(r, "no-such-command-ferry", "ferry-pkg") }()
		<-done
		if r.how != want || !strings.Contains(r.msg, "Debian package ferry-pkg") {
			t.Errorf("CI=%q: %s %q, want %s naming the package", ci, r.how, r.msg, want)
		}
	}
}
