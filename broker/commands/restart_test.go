package commands

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
	"github.com/ferry-iot/ferry/broker/commitlog/vfs/vfstest"
	"github.com/ferry-iot/ferry/broker/testkit"
)

// TestRestart: after Close and a reopen of log and store, answered
// commands are not sent again — also those answered while an earlier one
// was still in flight — the unanswered one is, and a command that expired
// while the dispatcher was down is answered "expired", unsent.
func TestRestart(t *testing.T) {
	e := newEnv(t, Config{}, newFakeSender())
	e.sender.hold["d2"] = true
	e.produce("d1", `{"method":"a"}`)
	e.produce("d2", `{"method":"b"}`) // offset 1: held, never answered in the first run
	e.produce("d1", `{"method":"c"}`)
	e.produce("d3", `{"method":"d"}`)
	e.start()
	e.waitResponses(3)
	testkit.Eventually(t, 10*time.Second, func() bool { return len(e.sender.methods("d2")) == 1 }, "d2's RPC")
	e.stopDispatcher()
	cp, found, err := (&Dispatcher{cfg: Config{Topic: DefaultTopic}, st: e.st}).loadCheckpoint(0)
	if err != nil || !found || cp.Next != 4 || !reflect.DeepEqual(cp.Pending, []int64{1}) {
		t.Fatalf("stored checkpoint %+v %v %v, want next 4, pending [1]", cp, found, err)
	}
	e.produce("d4", fmt.Sprintf(`{"method":"stale","expirationTime":%d}`, time.Now().Add(50*time.Millisecond).UnixMilli()))
	time.Sleep(100 * time.Millisecond)

	e.sender = newFakeSender()
	e.restart()
	rs := e.waitResponses(5)
	if calls := e.sender.snapshot(); len(calls) != 1 || calls[0].Device != "d2" || calls[0].Method != "b" {
		t.Fatalf("second run sent %+v, want only d2's b", calls)
	}
	want := []string{"a ok", "b ok", "c ok", "d ok", "stale expired"}
	for i, r := range rs {
		if got := r.Method + " " + r.Status; got != want[i] || r.RequestOffset != int64(i) {
			t.Fatalf("response %d: %s (offset %d), want %s", i, got, r.RequestOffset, want[i])
		}
	}

	// Nothing is left: a third run sends nothing and answers nothing.
	e.sender = newFakeSender()
	e.restart()
	time.Sleep(100 * time.Millisecond)
	if n := e.sender.callCount(); n != 0 || len(e.allResponses()) != 5 {
		t.Fatalf("third run: %d RPCs, %d responses", n, len(e.allResponses()))
	}
}

// TestNotFinishedUntilDurable: a command whose response was appended but
// not yet durable when the dispatcher closed is delivered again after a
// restart (at-least-once): finished means "response durable".
func TestNotFinishedUntilDurable(t *testing.T) {
	fs := vfstest.NewBlockingFS(vfs.NewMem(), "")
	e := newEnv(t, Config{}, newFakeSender(), commitlog.WithFS(fs))
	e.produce("d1", `{"method":"m"}`)
	if _, err := ensureTopic(e.log, DefaultResponses); err != nil { // creating a topic fsyncs
		t.Fatal(err)
	}
	fs.Block()
	e.start()
	testkit.Eventually(t, 10*time.Second, func() bool { return e.sender.callCount() == 1 }, "the RPC")
	time.Sleep(50 * time.Millisecond) // the response append is waiting for its fsync
	e.stopDispatcher()
	fs.Unblock()
	e.sender = newFakeSender()
	e.restart()
	testkit.Eventually(t, 10*time.Second, func() bool { return e.sender.callCount() == 1 }, "redelivery")
	rs := e.waitResponses(2)
	if rs[0].RequestOffset != 0 || rs[1].RequestOffset != 0 {
		t.Fatalf("responses %+v", rs)
	}
}

// TestRetentionHold: age retention keeps the segment holding an
// unfinished command, and deletes it once the command is finished (the
// hold follows the stored checkpoint). The log's clock is a fake one, so
// "past its retention" is made, not waited for; it starts at the real
// time because the dispatcher ages commands by their timestamps.
func TestRetentionHold(t *testing.T) {
	clock := testkit.NewClock(time.Now())
	e := newEnv(t, Config{}, newFakeSender(), commitlog.WithClock(clock))
	if _, err := e.log.CreateTopic(DefaultTopic, commitlog.TopicConfig{Retention: time.Millisecond, SegmentBytes: 4096}); err != nil {
		t.Fatal(err)
	}
	e.sender.offline["slow"] = true
	e.tune = func(d *Dispatcher) { d.retryMin, d.retryMax = time.Hour, time.Hour }
	e.produce("slow", `{"method":"first"}`)
	pad := strings.Repeat("x", 200)
	for i := 0; i < 60; i++ {
		e.produce(fmt.Sprintf("d%d", i), `{"method":"m","params":"`+pad+`"}`)
	}
	e.start()
	e.waitResponses(60)
	p, _ := e.topic(DefaultTopic).Partition(0)
	if p.Segments() < 3 {
		t.Fatalf("%d segments; the test needs several", p.Segments())
	}
	clock.Advance(20 * time.Millisecond) // every segment is past its 1 ms retention
	e.log.EnforceRetention()
	if p.StartOffset() != 0 {
		t.Fatalf("retention deleted up to %d while offset 0 is unfinished", p.StartOffset())
	}
	e.sender.set(func(f *fakeSender) { f.offline["slow"] = false })
	e.d.DeviceOnline("slow")
	e.waitResponses(61)
	testkit.Eventually(t, 10*time.Second, func() bool {
		e.log.EnforceRetention()
		return p.StartOffset() > 0
	}, "the hold to move")
}

// TestDamagedCheckpoint: Start refuses a checkpoint it cannot read rather
// than replaying the topic from its start.
func TestDamagedCheckpoint(t *testing.T) {
	e := newEnv(t, Config{}, newFakeSender())
	e.produce("d1", `{"method":"m"}`)
	if err := e.st.Set(checkpointKey(DefaultTopic, 0), []byte(`{"v":1,"next":1,"pending":[5]}`)); err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{Logger: quiet()}, e.log, e.st, e.sender)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("start: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err == nil {
		t.Fatal("start after close")
	}
}
