package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ferry-iot/ferry/broker/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// outcomes collects Config.OnMessage calls.
type outcomes struct {
	mu     sync.Mutex
	seen   map[[2]int]Outcome // {device, seq} → outcome
	dups   int                // calls for a message seen before
	failed []error            // the errors of Failed outcomes
	count  atomic.Int64
}

func newOutcomes() *outcomes { return &outcomes{seen: map[[2]int]Outcome{}} }

func (o *outcomes) add(m MessageResult) {
	o.mu.Lock()
	defer o.mu.Unlock()
	key := [2]int{m.Device, m.Seq}
	if _, ok := o.seen[key]; ok {
		o.dups++
	}
	o.seen[key] = m.Outcome
	if m.Outcome == Failed {
		o.failed = append(o.failed, m.Err)
	}
	o.count.Add(1)
}

type runResult struct {
	sum Summary
	err error
}

// startRun runs cfg in the background, with a deadline so that a hung
// simulator fails the test instead of the whole binary.
func startRun(t *testing.T, ctx context.Context, cfg Config) <-chan runResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	out := make(chan runResult, 1)
	go func() {
		defer cancel()
		sum, err := Run(ctx, cfg, nil)
		out <- runResult{sum, err}
	}()
	return out
}

func wait(t *testing.T, res <-chan runResult) runResult {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(40 * time.Second):
		t.Fatal("Run did not return")
		return runResult{}
	}
}

// checkAccounting checks the invariants that hold for every finished run.
func checkAccounting(t *testing.T, s Summary, o *outcomes) {
	t.Helper()
	if s.Sent != s.Acked+s.Unconfirmed+s.Failed {
		t.Errorf("Sent %d != Acked %d + Unconfirmed %d + Failed %d", s.Sent, s.Acked, s.Unconfirmed, s.Failed)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dups != 0 {
		t.Errorf("%d messages reported twice", o.dups)
	}
	if int64(len(o.seen)) != s.Sent {
		t.Errorf("OnMessage saw %d messages, Sent %d", len(o.seen), s.Sent)
	}
	var acked, unconfirmed, failed int64
	for _, oc := range o.seen {
		switch oc {
		case Acked:
			acked++
		case Unconfirmed:
			unconfirmed++
		case Failed:
			failed++
		}
	}
	if acked != s.Acked || unconfirmed != s.Unconfirmed || failed != s.Failed {
		t.Errorf("OnMessage outcomes %d/%d/%d, Summary %d/%d/%d (acked/unconfirmed/failed)",
			acked, unconfirmed, failed, s.Acked, s.Unconfirmed, s.Failed)
	}
	if s.Acked > 0 && (s.P50 <= 0 || s.P99 < s.P50 || s.Max < s.P99) {
		t.Errorf("latencies p50 %v p99 %v max %v", s.P50, s.P99, s.Max)
	}
}

func TestRunHealthy(t *testing.T) {
	const devices, messages = 4, 40
	tests := []struct {
		name       string
		qos        byte
		inflight   int
		rate       float64
		attributes int
	}{
		{name: "qos1 publish-wait-puback"},
		{name: "qos1 inflight 8 with attributes", inflight: 8, attributes: 10},
		{name: "qos0", qos: AtMostOnce, inflight: 4},
		{name: "rate limited", rate: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := newTBState()
			st.sendRPC = true
			b := startBroker(t, "127.0.0.1:0", st)
			o := newOutcomes()
			r := wait(t, startRun(t, t.Context(), Config{
				Broker: b.url(), Devices: devices, Messages: messages, QoS: tc.qos, Inflight: tc.inflight,
				Rate: tc.rate, AttributesEvery: tc.attributes, AnswerRPC: true, OnMessage: o.add,
			}))
			s := r.sum
			if r.err != nil {
				t.Fatal(r.err)
			}
			checkAccounting(t, s, o)
			if s.Sent != devices*messages || s.Acked != s.Sent || s.Failed != 0 || s.Unconfirmed != 0 {
				t.Errorf("summary %+v, want all %d acknowledged", s, devices*messages)
			}
			if s.Connected != devices || s.Reconnects != 0 || s.Devices != devices {
				t.Errorf("connected %d/%d, reconnects %d", s.Connected, s.Devices, s.Reconnects)
			}
			if s.RPCAnswered != devices {
				t.Errorf("RPCAnswered %d, want %d", s.RPCAnswered, devices)
			}
			if tc.attributes > 0 && s.Attributes != devices*messages/int64(tc.attributes) {
				t.Errorf("Attributes %d, want %d", s.Attributes, devices*messages/tc.attributes)
			}

			if tc.qos == AtMostOnce {
				// No PUBACK: "acked" means written, and the broker may still
				// be reading the last messages.
				testkit.Eventually(t, 5*time.Second, func() bool { return st.total() == devices*messages }, "the broker to get all %d messages", devices*messages)
			}
			st.mu.Lock()
			defer st.mu.Unlock()
			for dev := range devices {
				id := fmt.Sprintf(DefaultDeviceNameFormat, dev)
				payloads := st.mu.telemetry[id]
				if len(payloads) != messages {
					t.Fatalf("%s: broker got %d messages, want %d", id, len(payloads), messages)
				}
				for seq, p := range payloads { // in order, each once
					values, stamps := decodeTelemetry(t, p)
					checkReading(t, values, Sample(dev, seq))
					wantStamps := []int{0, 0, 1, 2}[seq%4] // object, array, ts, ts-array
					if len(stamps) != wantStamps || (p[0] == '[') != (seq%2 == 1) {
						t.Errorf("%s seq %d has the wrong shape: %s", id, seq, p)
					}
				}
				if tc.attributes > 0 && st.mu.attrs[id] != messages/tc.attributes {
					t.Errorf("%s: %d attribute updates, want %d", id, st.mu.attrs[id], messages/tc.attributes)
				}
				reqID, sent := st.mu.rpcSent[id]
				var reply map[string]any
				if !sent || st.mu.replyID[id] != reqID || json.Unmarshal(st.mu.rpcReply[id], &reply) != nil || reply["result"] != "ok" {
					t.Errorf("%s: RPC %q (sent %v) answered as %q with %s", id, reqID, sent, st.mu.replyID[id], st.mu.rpcReply[id])
				}
			}
		})
	}
}

func TestRunProvisioning(t *testing.T) {
	const devices = 3
	tests := []struct {
		name, secret string
		wantStatus   string // empty: success
	}{
		{"accepted", "prov-secret", ""},
		{"refused", "wrong", "NOT_FOUND"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := newTBState()
			b := startBroker(t, "127.0.0.1:0", st)
			o := newOutcomes()
			r := wait(t, startRun(t, t.Context(), Config{
				Broker: b.url(), Devices: devices, Messages: 10, OnMessage: o.add,
				Provision: true, ProvisionKey: "prov-key", ProvisionSecret: tc.secret,
			}))
			checkAccounting(t, r.sum, o)
			if tc.wantStatus == "" {
				if r.err != nil {
					t.Fatal(r.err)
				}
				if r.sum.Provisioned != devices || r.sum.Acked != devices*10 {
					t.Fatalf("summary %+v", r.sum)
				}
				st.mu.Lock()
				defer st.mu.Unlock()
				for dev := range devices {
					token := "prov-token-" + fmt.Sprintf(DefaultDeviceNameFormat, dev)
					if st.mu.logins[token] != 1 {
						t.Errorf("%d logins with %s, want 1", st.mu.logins[token], token)
					}
				}
				return
			}
			if !errors.Is(r.err, ErrProvision) {
				t.Fatalf("error %v, want ErrProvision", r.err)
			}
			errs := r.err.(interface{ Unwrap() []error }).Unwrap()
			if len(errs) != devices {
				t.Fatalf("%d errors, want one per device: %v", len(errs), r.err)
			}
			for _, err := range errs {
				var pe *ProvisionError
				if !errors.As(err, &pe) || pe.Status != tc.wantStatus {
					t.Errorf("error %v, want status %s", err, tc.wantStatus)
				}
			}
			if r.sum.Sent != 0 || r.sum.Provisioned != 0 {
				t.Errorf("summary %+v, want nothing sent", r.sum)
			}
		})
	}
}

func TestRunRefusedToken(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0", newTBState())
	r := wait(t, startRun(t, t.Context(), Config{Broker: b.url(), Devices: 2, Messages: 5, TokenFormat: "stolen-%d"}))
	var re *RefusedError
	if !errors.Is(r.err, ErrRefused) || !errors.As(r.err, &re) || (re.Code != 4 && re.Code != 5) {
		t.Fatalf("error %v, want a RefusedError with code 4 or 5", r.err)
	}
	if r.sum.Sent != 0 {
		t.Errorf("sent %d", r.sum.Sent)
	}
}

// TestRunFirstConnectRetry starts the devices before the broker.
func TestRunFirstConnectRetry(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	o := newOutcomes()
	res := startRun(t, t.Context(), Config{Broker: "tcp://" + addr, Devices: 3, Messages: 20, OnMessage: o.add})
	time.Sleep(300 * time.Millisecond)
	startBroker(t, addr, newTBState())
	r := wait(t, res)
	if r.err != nil {
		t.Fatal(r.err)
	}
	checkAccounting(t, r.sum, o)
	if r.sum.Acked != 60 || r.sum.Reconnects != 0 || r.sum.Connected != 3 {
		t.Fatalf("summary %+v", r.sum)
	}
}

// TestRunBrokerRestart stops the broker while every device has messages
// in flight (the broker holds each for 15 ms before its PUBACK) and
// starts it again on the same port: devices reconnect, paho re-sends,
// and nothing is counted twice or counted as acknowledged without having
// reached the broker.
func TestRunBrokerRestart(t *testing.T) {
	const devices, messages = 4, 150
	st := newTBState()
	st.publishDelay = 15 * time.Millisecond
	st.sendRPC = true
	b := startBroker(t, "127.0.0.1:0", st)
	o := newOutcomes()
	res := startRun(t, t.Context(), Config{
		Broker: b.url(), Devices: devices, Messages: messages, Rate: 100, Inflight: 4,
		AnswerRPC: true, OnMessage: o.add,
	})
	for o.count.Load() < devices*20 {
		time.Sleep(10 * time.Millisecond)
	}
	b.stop()
	time.Sleep(300 * time.Millisecond)
	startBroker(t, b.addr, st)
	r := wait(t, res)
	if r.err != nil {
		t.Fatal(r.err)
	}
	s := r.sum
	checkAccounting(t, s, o)
	t.Logf("summary after restart: %+v", s)
	if s.Sent != devices*messages || s.Failed != 0 {
		o.mu.Lock()
		t.Errorf("sent %d failed %d (errors %v), want %d sent and none failed", s.Sent, s.Failed, o.failed, devices*messages)
		o.mu.Unlock()
	}
	if s.Reconnects < devices {
		t.Errorf("reconnects %d, want at least %d", s.Reconnects, devices)
	}
	if s.Unconfirmed == 0 {
		t.Errorf("no message was in flight across the restart; the test did not exercise #563")
	}
	if s.Connected != devices {
		t.Errorf("connected at the end %d, want %d", s.Connected, devices)
	}
	// The RPC subscription was re-made after the reconnect: the restarted
	// broker sent no new request (it remembers the first), but SUBSCRIBE
	// arrived. Each device answered its one request once.
	if s.RPCAnswered > devices {
		t.Errorf("RPCAnswered %d > devices %d", s.RPCAnswered, devices)
	}

	o.mu.Lock()
	defer o.mu.Unlock()
	for dev := range devices {
		id := fmt.Sprintf(DefaultDeviceNameFormat, dev)
		stored := st.seqs(t, id)
		st.mu.Lock()
		first := st.mu.firstCopy[id]
		st.mu.Unlock()
		for seq := range messages {
			oc := o.seen[[2]int{dev, seq}]
			if !slices.Contains(stored, seq) {
				// paho re-sends unacknowledged messages after the
				// reconnect, so even Unconfirmed ones should arrive.
				t.Errorf("%s seq %d (%v) never reached the broker", id, seq, oc)
			}
			// A PUBACK on the connection a message was sent on means
			// the broker stored that first copy. A message the broker
			// only got as a re-sent DUP was acknowledged on a later
			// connection, after paho had already completed its token.
			if oc == Acked && !slices.Contains(first, seq) {
				t.Errorf("%s seq %d counted Acked but only a re-sent copy was stored (#563)", id, seq)
			}
		}
	}
}

// TestRunCancel ends an endless run with the context.
func TestRunCancel(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0", newTBState())
	o := newOutcomes()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	res := startRun(t, ctx, Config{Broker: b.url(), Devices: 3, Rate: 100, OnMessage: o.add})
	for o.count.Load() < 30 {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	start := time.Now()
	r := wait(t, res)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Run took %v to stop", took)
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	checkAccounting(t, r.sum, o)
	if r.sum.Acked < 30 || r.sum.Failed != 0 || r.sum.Connected != 3 {
		t.Errorf("summary %+v", r.sum)
	}
}

// TestRunCancelDuringOutage ends the run while paho is reconnecting; Run
// must still wait for paho to stop (goleak checks) and account for every
// message.
func TestRunCancelDuringOutage(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0", newTBState())
	o := newOutcomes()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	res := startRun(t, ctx, Config{Broker: b.url(), Devices: 2, Rate: 100, Inflight: 2, OnMessage: o.add})
	for o.count.Load() < 20 {
		time.Sleep(10 * time.Millisecond)
	}
	b.stop()
	time.Sleep(200 * time.Millisecond)
	cancel()
	r := wait(t, res)
	if r.err != nil {
		t.Fatal(r.err)
	}
	checkAccounting(t, r.sum, o)
	if r.sum.Connected != 0 {
		t.Errorf("connected at the end %d, want 0", r.sum.Connected)
	}
}
