package kafka

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/bridge"
	"github.com/ferry-iot/ferry/broker/testkit"
)

// A fault the link suffers mid-drain.
type fault struct {
	name  string
	apply func() // takes the link down; the round waits for the engine to notice
	heal  func()
}

func linkFaults(c *kfake.Cluster, l *link, stall time.Duration) []fault {
	return []fault{
		{"refuse connections", l.cut, l.restore},
		{"drop a Produce", func() { dropNext(c, kmsg.Produce) }, func() {}},
		{"delay an EndTxn", func() { delayNext(c, kmsg.EndTxn, stall+stall/2) }, func() {}},
		{"refuse connections", l.cut, l.restore},
		{"drop an EndTxn", func() { dropNext(c, kmsg.EndTxn) }, func() {}},
		{"delay a Produce", func() { delayNext(c, kmsg.Produce, stall+stall/2) }, func() {}},
	}
}

// runFaults drives rounds of faults while the engine drains: each round
// lets the engine commit some batches, applies a fault, waits until the
// engine saw the link fail (a reconnect), and heals it.
func runFaults(t *testing.T, en *bridge.Engine, faults []fault, rounds int) {
	t.Helper()
	for round := range rounds {
		f := faults[round%len(faults)]
		sent := en.Status().RecordsSent
		testkit.Eventually(t, 30*time.Second, func() bool { return en.Status().RecordsSent > sent }, "progress before %s", f.name)
		time.Sleep(time.Duration(rand.IntN(100)) * time.Millisecond)
		st := en.Status()
		f.apply()
		start := time.Now()
		testkit.Eventually(t, 30*time.Second, func() bool { return en.Status().Reconnects > st.Reconnects }, "the engine to notice: %s", f.name)
		f.heal()
		t.Logf("round %2d: %-20s lag %6d at the fault, noticed after %v", round, f.name, st.Lag, time.Since(start).Round(time.Millisecond))
	}
}

// faultRun is an engine draining a backlog over a link the test can
// fault, with live records arriving meanwhile.
type faultRun struct {
	c       *kfake.Cluster
	e       *edge
	l       *link
	m       *bridge.Metrics
	en      *bridge.Engine
	in      *ingester
	backlog int
	closed  bool // finish closed the engine
}

// faultStall is the fault runs' stall timeout.
const faultStall = time.Second

// startFaultRun starts an engine with delivery on a backlog of backlog
// records (200 devices) and live ingest of 50 records every 50 ms. What
// it starts is stopped when the test ends, if finish did not get that far.
func startFaultRun(t *testing.T, delivery string, backlog int) *faultRun {
	t.Helper()
	r := &faultRun{c: cluster(t), e: newEdge(t, ""), l: newLink(), m: bridge.NewMetrics(prometheus.NewRegistry()), backlog: backlog}
	t.Cleanup(r.e.close) // after the engine's cleanup below
	r.e.produce("telemetry", 0, backlog, 200)
	tg := target(t, r.c.ListenAddrs(), delivery, kgo.Dialer(r.l.dial))
	r.en = engineFor(t, r.e, tg, bridge.Config{StallTimeout: faultStall, MaxBatchBytes: 64 << 10, Metrics: r.m})
	r.en.Start()
	r.in = startIngest(r.e, backlog, 50, 200, 50*time.Millisecond)
	t.Cleanup(func() {
		if r.closed {
			return
		}
		// The test stopped early: stop what runs, its failure is what matters.
		select {
		case <-r.in.stop:
		default:
			close(r.in.stop)
		}
		r.in.wg.Wait()
		if err := r.en.Close(); err != nil {
			t.Errorf("closing the engine after a failed run: %v", err)
		}
	})
	return r
}

// finish stops the ingest, waits until the engine drained everything,
// closes it and reads the upstream topic. It returns the records the edge
// holds, the engine's status before Close, and the upstream.
func (r *faultRun) finish(t *testing.T) (total int, st bridge.Status, u *upstream) {
	t.Helper()
	total = r.in.halt(t)
	waitLag(t, r.en, 60*time.Second)
	st = r.en.Status()
	r.closed = true
	if err := r.en.Close(); err != nil {
		t.Fatal(err)
	}
	return total, st, readUpstream(t, r.c.ListenAddrs(), "site1.telemetry", total, 30*time.Second)
}

// TestLinkFaultsExactlyOnce: while a backlog drains and live records keep
// arriving, the link is cut (connections refused and severed), requests
// are dropped (the upstream goes silent: the stall watchdog must notice)
// and answers delayed past the stall timeout, many times. Afterwards the
// upstream holds every edge record exactly once, in per-key order.
func TestLinkFaultsExactlyOnce(t *testing.T) {
	t.Parallel() // mostly waiting out stall timeouts and backoffs
	r := startFaultRun(t, ExactlyOnce, 30000)
	apts := r.c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.AddPartitionsToTxn}, Count: -1, Observe: true})
	runFaults(t, r.en, linkFaults(r.c, r.l, faultStall), 12)

	total, st, u := r.finish(t)
	u.check(t, r.e, "telemetry", false)
	if len(u.recs) != total {
		t.Fatalf("upstream holds %d records, the edge %d", len(u.recs), total)
	}
	commits, aborts := txnMarkers(t, r.c.ListenAddrs(), "site1.telemetry")
	stalled, sendFail, connFail := failures(r.m, "stalled"), failures(r.m, "send"), failures(r.m, "connect")
	if stalled == 0 || st.Reconnects < 12 {
		t.Fatalf("expected stalls and 12+ reconnects: stalled %v, status %+v", stalled, st)
	}
	t.Logf("%d records (%d live during the faults) exactly once; reconnects %d (stalled %v, send %v, connect %v); "+
		"resent %v; upstream transactions %d committed, %d aborted; dials refused %d, connections severed %d; AddPartitionsToTxn requests %d (KIP-890: implicit)",
		total, total-r.backlog, st.Reconnects, stalled, sendFail, connFail, counter(r.m.Resent.WithLabelValues("kafka")),
		commits, aborts, r.l.refused.Load(), r.l.severed.Load(), apts.Hits())
}

// storedButLost makes the upstream store every Produce to the upstream
// topic but answer REQUEST_TIMED_OUT, until the engine gave up on the
// link (the stall watchdog): kgo retries within the session (the
// idempotent sequence keeps those out), then the engine reconnects with a
// new producer id and sends the batch again — which the upstream already
// holds. Duplicates, by construction.
func storedButLost(c *kfake.Cluster) fault {
	var h *kfake.FaultHandle
	return fault{"store a Produce, lose its answer",
		func() {
			h = c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "site1.telemetry", Err: kerr.RequestTimedOut, Count: -1})
		},
		func() { h.Remove() }}
}

// TestLinkStates: against kfake, the state is backing_off while the link
// is cut, connected once it is back, stalled while a swallowed Produce
// goes unanswered and after the watchdog gave up on it, and connected
// again. (A backoff of 1 s keeps
// each state up long enough to be seen.)
func TestLinkStates(t *testing.T) {
	t.Parallel() // mostly waiting out the stall timeout and backoffs
	c := cluster(t)
	e := newEdge(t, "")
	defer e.close()
	e.produce("telemetry", 0, 100, 20)
	l := newLink()
	tg := target(t, c.ListenAddrs(), ExactlyOnce, kgo.Dialer(l.dial))
	en := engineFor(t, e, tg, bridge.Config{StallTimeout: time.Second, Backoff: time.Second, MaxBackoff: time.Second})
	en.Start()
	defer en.Close()
	in := startIngest(e, 100, 20, 20, 20*time.Millisecond)
	state := func(want string) func() bool {
		return func() bool { return en.Status().State == want }
	}
	progress := func() {
		t.Helper()
		sent := en.Status().RecordsSent
		testkit.Eventually(t, 30*time.Second, func() bool { st := en.Status(); return st.RecordsSent > sent && st.State == bridge.StateConnected }, "progress")
	}
	start := time.Now()
	progress()
	t.Logf("%v: connected", time.Since(start).Round(time.Millisecond))
	l.cut()
	testkit.Eventually(t, 30*time.Second, state(bridge.StateBackingOff), "backing_off while the link is cut")
	t.Logf("%v: backing off: %s", time.Since(start).Round(time.Millisecond), en.Status().LastError)
	l.restore()
	progress()
	t.Logf("%v: connected", time.Since(start).Round(time.Millisecond))
	dropNext(c, kmsg.Produce)
	// Stalled is shown while the Produce goes unanswered (after a quarter
	// of the stall timeout), and stays through the backoff after the
	// watchdog gave up.
	testkit.Eventually(t, 30*time.Second, state(bridge.StateStalled), "stalled while no acknowledgement comes")
	if st := en.Status(); !strings.Contains(st.LastError, "no acknowledgement") && !strings.Contains(st.LastError, "stalled link") {
		t.Fatalf("last error when stalled: %s", st.LastError)
	}
	t.Logf("%v: stalled: %s", time.Since(start).Round(time.Millisecond), en.Status().LastError)
	testkit.Eventually(t, 30*time.Second, func() bool {
		st := en.Status()
		return st.State == bridge.StateStalled && strings.Contains(st.LastError, "stalled link")
	}, "stalled after the watchdog")
	t.Logf("%v: the watchdog gave up", time.Since(start).Round(time.Millisecond))
	progress()
	t.Logf("%v: connected", time.Since(start).Round(time.Millisecond))
	in.halt(t)
}

// TestLinkFaultsAtLeastOnce: the same faults against at-least-once
// delivery (idempotent producer, no transactions, local checkpoints):
// nothing may be missing; a batch whose acknowledgement was lost is sent
// again — at least one such resend is forced — and every duplicate
// upstream is accounted for by records_resent (Status and metric).
func TestLinkFaultsAtLeastOnce(t *testing.T) {
	t.Parallel() // mostly waiting out stall timeouts and backoffs
	r := startFaultRun(t, AtLeastOnce, 20000)
	faults := []fault{
		storedButLost(r.c),
		{"refuse connections", r.l.cut, r.l.restore},
		{"drop a Produce", func() { dropNext(r.c, kmsg.Produce) }, func() {}},
		{"delay a Produce", func() { delayNext(r.c, kmsg.Produce, faultStall+faultStall/2) }, func() {}},
	}
	runFaults(t, r.en, faults, 8)

	total, st, u := r.finish(t)
	dups := u.check(t, r.e, "telemetry", true)
	resent := counter(r.m.Resent.WithLabelValues("kafka"))
	if dups == 0 {
		t.Fatal("no duplicate upstream although answers to stored produces were lost")
	}
	if float64(dups) > resent || float64(st.RecordsResent) != resent {
		t.Fatalf("upstream holds %d duplicates; records resent: status %d, metric %v", dups, st.RecordsResent, resent)
	}
	if len(u.recs) != total+dups {
		t.Fatalf("upstream holds %d records: %d edge records + %d duplicates expected", len(u.recs), total, dups)
	}
	t.Logf("%d records, none missing; duplicates upstream %d, resent (metric) %v; reconnects %d (stalled %v)",
		total, dups, resent, st.Reconnects, failures(r.m, "stalled"))
}
