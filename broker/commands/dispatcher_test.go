package commands

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/testkit"
)

// TestRoundTrip: a command record becomes an RPC, and the answer a response
// record keyed by device, with the request's coordinates in its value and
// headers and the producer's headers copied.
func TestRoundTrip(t *testing.T) {
	e := newEnv(t, Config{}, newFakeSender())
	e.sender.answer = func(r Request) (json.RawMessage, error) { return json.RawMessage(`{"pin":1,"ok":true}`), nil }
	e.start()
	before := time.Now().UnixMilli()
	off := e.produce("d1", `{"method":"setGpio","params":{"pin":1},"persistent":true}`,
		commitlog.Header{Key: "correlation_id", Value: []byte("abc-1")},
		commitlog.Header{Key: HeaderStatus, Value: []byte("forged")})
	rs := e.waitResponses(1)
	r := rs[0]
	if string(r.rec.Key) != "d1" || r.Device != "d1" || r.Method != "setGpio" || r.RequestTopic != "commands" ||
		r.RequestPartition != 0 || r.RequestOffset != off || r.Status != StatusOK || string(r.Response.Response) != `{"pin":1,"ok":true}` ||
		r.Error != "" || r.Reason != "" {
		t.Fatalf("response %+v (value %s)", r.Response, r.rec.Value)
	}
	if r.rec.Timestamp < before || r.rec.Timestamp > time.Now().UnixMilli() {
		t.Fatalf("response timestamp %d, want the response time", r.rec.Timestamp)
	}
	want := map[string]string{HeaderDevice: "d1", HeaderStatus: StatusOK, HeaderRequestTopic: "commands",
		HeaderRequestPartition: "0", HeaderRequestOffset: fmt.Sprint(off), "correlation_id": "abc-1"}
	for k, v := range want {
		if got := r.header(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if len(r.rec.Headers) != len(want) {
		t.Errorf("headers %+v", r.rec.Headers)
	}
	calls := e.sender.snapshot()
	if len(calls) != 1 || calls[0].Device != "d1" || calls[0].Method != "setGpio" || string(calls[0].Params) != `{"pin":1}` ||
		calls[0].Timeout != DefaultTimeout || calls[0].OneWay {
		t.Fatalf("RPC %+v", calls)
	}

	// Per-command timeout and one-way; a device that answers with
	// something that is not JSON gets it quoted.
	e.sender.set(func(f *fakeSender) {
		f.answer = func(r Request) (json.RawMessage, error) {
			if r.OneWay {
				return nil, nil
			}
			return json.RawMessage(`not json`), nil
		}
	})
	e.produce("d1", `{"method":"reboot","timeout":1500}`)
	e.produce("d1", `{"method":"blink","oneway":true,"params":null}`)
	rs = e.waitResponses(3)
	if rs[1].Status != StatusOK || string(rs[1].Response.Response) != `"not json"` {
		t.Fatalf("non-JSON answer: %s", rs[1].rec.Value)
	}
	if rs[2].Status != StatusOK || rs[2].Response.Response != nil || strings.Contains(string(rs[2].rec.Value), `"response"`) {
		t.Fatalf("one-way response: %s", rs[2].rec.Value)
	}
	calls = e.sender.snapshot()
	if calls[1].Timeout != 1500*time.Millisecond || !calls[2].OneWay || string(calls[2].Params) != "null" {
		t.Fatalf("RPCs %+v", calls)
	}
	if got := testutil.ToFloat64(e.metrics.Answered); got != 3 {
		t.Fatalf("answered %v", got)
	}
	if got := testutil.ToFloat64(e.metrics.Received); got != 3 {
		t.Fatalf("received %v", got)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return testutil.ToFloat64(e.metrics.Pending) == 0 }, "pending 0")
}

// TestPerDeviceOrder: each device gets its commands one at a time in
// offset order, while devices proceed concurrently (every device's first
// RPC waits until all devices have one in flight, which deadlocks if they
// were served one after another).
func TestPerDeviceOrder(t *testing.T) {
	const devices, perDevice = 4, 6
	e := newEnv(t, Config{}, newFakeSender())
	var mu sync.Mutex
	inFlight := map[string]int{}
	firsts := map[string]bool{}
	allIn := make(chan struct{})
	e.sender.answer = func(r Request) (json.RawMessage, error) {
		mu.Lock()
		inFlight[r.Device]++
		if inFlight[r.Device] > 1 {
			t.Errorf("%s has %d RPCs in flight", r.Device, inFlight[r.Device])
		}
		first := !firsts[r.Device]
		firsts[r.Device] = true
		if len(firsts) == devices && first {
			close(allIn)
		}
		mu.Unlock()
		if first {
			select {
			case <-allIn:
			case <-time.After(5 * time.Second):
				t.Errorf("devices are not served concurrently")
			}
		}
		time.Sleep(time.Millisecond)
		mu.Lock()
		inFlight[r.Device]--
		mu.Unlock()
		return json.RawMessage(`true`), nil
	}
	for i := 0; i < perDevice; i++ {
		for d := 0; d < devices; d++ {
			e.produce(fmt.Sprintf("dev-%d", d), fmt.Sprintf(`{"method":"m%d"}`, i))
		}
	}
	e.start()
	e.waitResponses(devices * perDevice)
	for d := 0; d < devices; d++ {
		got := e.sender.methods(fmt.Sprintf("dev-%d", d))
		for i, m := range got {
			if m != fmt.Sprintf("m%d", i) {
				t.Fatalf("dev-%d got %v, want m0..m%d in order", d, got, perDevice-1)
			}
		}
		if len(got) != perDevice {
			t.Fatalf("dev-%d got %v", d, got)
		}
	}
}

// TestInvalidCommands: records that are not commands are answered at once
// with status error (reason invalid), counted by reason, and never sent;
// a command for an unknown device is answered with reason unknown_device.
func TestInvalidCommands(t *testing.T) {
	e := newEnv(t, Config{MaxCommandBytes: 128}, newFakeSender())
	e.sender.unknown["ghost"] = true
	e.start()
	cases := []struct {
		key, value, reason string
	}{
		{"", `{"method":"m"}`, "no_key"},
		{"d1", `not json`, "not_object"},
		{"d1", `[1,2]`, "not_object"},
		{"d1", `null`, "not_object"},
		{"d1", `{"params":{}}`, "bad_method"},
		{"d1", `{"method":5}`, "bad_method"},
		{"d1", `{"method":""}`, "bad_method"},
		{"d1", `{"method":"m","timeout":-1}`, "bad_field"},
		{"d1", `{"method":"m","timeout":"5s"}`, "bad_field"},
		{"d1", `{"method":"m","expirationTime":"soon"}`, "bad_field"},
		{"d1", `{"method":"m","oneway":"yes"}`, "bad_field"},
		{"d1", `{"method":"m","params":"` + strings.Repeat("x", 200) + `"}`, "too_large"},
	}
	for _, c := range cases {
		e.produce(c.key, c.value)
	}
	e.produceRecord(commitlog.Record{Key: []byte("d1")}) // a tombstone
	e.produce("ghost", `{"method":"m"}`)
	rs := e.waitResponses(len(cases) + 2)
	for i, c := range cases {
		r := rs[i]
		if r.Status != StatusError || r.Reason != ReasonInvalid || !strings.HasPrefix(r.Error, "commands: invalid command: ") ||
			r.Device != c.key || string(r.rec.Key) != c.key || r.header(HeaderStatus) != StatusError {
			t.Errorf("%s %s: response %s", c.key, c.value, r.rec.Value)
		}
	}
	if r := rs[len(cases)]; r.Reason != ReasonInvalid {
		t.Errorf("tombstone: %s", r.rec.Value)
	}
	if r := rs[len(cases)+1]; r.Status != StatusError || r.Reason != ReasonUnknownDevice || r.Method != "m" {
		t.Errorf("unknown device: %s", r.rec.Value)
	}
	for reason, n := range map[string]float64{"no_key": 1, "not_object": 4, "bad_method": 3, "bad_field": 4, "too_large": 1, "unknown_device": 1} {
		if got := testutil.ToFloat64(e.metrics.Invalid.WithLabelValues(reason)); got != n {
			t.Errorf("invalid{%s} = %v, want %v", reason, got, n)
		}
	}
	if calls := e.sender.methods("d1"); len(calls) != 0 {
		t.Fatalf("invalid commands were sent: %v", calls)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return testutil.ToFloat64(e.metrics.Pending) == 0 }, "pending 0")
}

// TestOfflineThenOnline: a command for an unreachable device waits, and
// DeviceOnline makes it go at once (the backoff is an hour here), in
// order with the device's later commands.
func TestOfflineThenOnline(t *testing.T) {
	e := newEnv(t, Config{}, newFakeSender())
	e.sender.offline["d1"] = true
	e.sender.called = make(chan Request, 100)
	e.tune = func(d *Dispatcher) { d.retryMin, d.retryMax = time.Hour, time.Hour }
	e.start()
	e.produce("d1", `{"method":"first"}`)
	e.produce("d1", `{"method":"second"}`)
	e.produce("d2", `{"method":"other"}`)
	<-e.sender.called
	e.waitResponses(1) // d2 is not held up by d1
	testkit.Eventually(t, 10*time.Second, func() bool { return testutil.ToFloat64(e.metrics.Waiting) == 1 }, "waiting gauge")
	e.d.DeviceOnline("unrelated") // no effect, no block
	e.sender.set(func(f *fakeSender) { f.offline["d1"] = false })
	e.d.DeviceOnline("d1")
	rs := e.waitResponses(3)
	if rs[0].Method != "first" || rs[0].Status != StatusOK || rs[1].Method != "second" || rs[1].Status != StatusOK {
		t.Fatalf("responses %+v", rs)
	}
	if got := e.sender.methods("d1"); len(got) != 3 || got[0] != "first" || got[1] != "first" || got[2] != "second" {
		t.Fatalf("d1 calls %v", got)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return testutil.ToFloat64(e.metrics.Waiting) == 0 }, "waiting gauge 0")
}

// TestOfflineRetryAndExpiry: an unreachable device is retried with
// backoff, and the command is answered "expired" when Expiry passes; a
// command whose expirationTime has passed is answered at once, unsent.
func TestOfflineRetryAndExpiry(t *testing.T) {
	e := newEnv(t, Config{Expiry: 300 * time.Millisecond}, newFakeSender())
	e.sender.offline["d1"] = true
	e.start()
	start := time.Now()
	e.produce("d1", `{"method":"m"}`)
	e.produce("d2", fmt.Sprintf(`{"method":"late","expirationTime":%d}`, time.Now().Add(-time.Second).UnixMilli()))
	rs := e.waitResponses(2)
	byDevice := map[string]response{rs[0].Device: rs[0], rs[1].Device: rs[1]}
	if r := byDevice["d1"]; r.Status != StatusExpired || r.Error == "" {
		t.Fatalf("offline device: %s", r.rec.Value)
	}
	if r := byDevice["d2"]; r.Status != StatusExpired {
		t.Fatalf("expirationTime in the past: %s", r.rec.Value)
	}
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Fatalf("expired after %v, before Expiry", el)
	}
	if n := len(e.sender.methods("d1")); n < 3 {
		t.Fatalf("offline device tried %d times, want retries", n)
	}
	if n := len(e.sender.methods("d2")); n != 0 {
		t.Fatalf("expired command was sent")
	}
	if got := testutil.ToFloat64(e.metrics.Expired); got != 2 {
		t.Fatalf("expired %v", got)
	}
	// An expirationTime in the future overrides the (short) Expiry.
	e.sender.set(func(f *fakeSender) { f.offline["d1"] = true })
	e.produce("d1", fmt.Sprintf(`{"method":"patient","expirationTime":%d}`, time.Now().Add(time.Hour).UnixMilli()))
	time.Sleep(500 * time.Millisecond)
	e.sender.set(func(f *fakeSender) { f.offline["d1"] = false })
	rs = e.waitResponses(3)
	if r := rs[2]; r.Method != "patient" || r.Status != StatusOK {
		t.Fatalf("patient command: %s", r.rec.Value)
	}
}

// TestTimeoutAndFailure: a device that does not answer gives status
// timeout; other Sender errors give status error, reason failed.
func TestTimeoutAndFailure(t *testing.T) {
	e := newEnv(t, Config{}, newFakeSender())
	e.sender.answer = func(r Request) (json.RawMessage, error) {
		if r.Method == "slow" {
			return nil, fmt.Errorf("%w: after %v", ErrTimeout, r.Timeout)
		}
		return nil, errors.New("boom")
	}
	e.start()
	e.produce("d1", `{"method":"slow","timeout":20}`)
	e.produce("d1", `{"method":"broken"}`)
	rs := e.waitResponses(2)
	if rs[0].Status != StatusTimeout || !strings.Contains(rs[0].Error, "20ms") {
		t.Fatalf("timeout: %s", rs[0].rec.Value)
	}
	if rs[1].Status != StatusError || rs[1].Reason != ReasonFailed || rs[1].Error != "boom" {
		t.Fatalf("failure: %s", rs[1].rec.Value)
	}
	if testutil.ToFloat64(e.metrics.Failed.WithLabelValues("timeout")) != 1 || testutil.ToFloat64(e.metrics.Failed.WithLabelValues("error")) != 1 ||
		testutil.ToFloat64(e.metrics.Delivered) != 1 {
		t.Fatal("failure metrics")
	}
}

// TestMaxInFlight: with every RPC held, the dispatcher admits exactly
// MaxInFlight commands and reads no further; finishing one admits one more.
func TestMaxInFlight(t *testing.T) {
	e := newEnv(t, Config{MaxInFlight: 3}, newFakeSender())
	e.sender.hold["*"] = true
	for i := 0; i < 10; i++ {
		e.produce(fmt.Sprintf("d%d", i), `{"method":"m"}`)
	}
	e.start()
	testkit.Eventually(t, 10*time.Second, func() bool { return e.sender.callCount() == 3 }, "3 RPCs")
	time.Sleep(100 * time.Millisecond)
	if n := e.sender.callCount(); n != 3 {
		t.Fatalf("%d RPCs in flight, MaxInFlight is 3", n)
	}
	if next, pending := e.d.progress(0); next != 3 || pending != 3 {
		t.Fatalf("read up to %d with %d pending, want 3 and 3", next, pending)
	}
	if got := testutil.ToFloat64(e.metrics.Pending); got != 3 {
		t.Fatalf("pending gauge %v", got)
	}
	e.sender.release <- struct{}{}
	testkit.Eventually(t, 10*time.Second, func() bool { return e.sender.callCount() == 4 }, "a 4th RPC")
	time.Sleep(50 * time.Millisecond)
	if next, pending := e.d.progress(0); next != 4 || pending != 3 {
		t.Fatalf("read up to %d with %d pending, want 4 and 3", next, pending)
	}

}

// TestMaxInFlightOneDevice: one device's backlog is admitted up to the
// bound too, and delivered one at a time.
func TestMaxInFlightOneDevice(t *testing.T) {
	e := newEnv(t, Config{MaxInFlight: 2}, newFakeSender())
	e.sender.hold["*"] = true
	for i := 0; i < 5; i++ {
		e.produce("busy", `{"method":"m"}`)
	}
	e.produce("other", `{"method":"m"}`)
	e.start()
	testkit.Eventually(t, 10*time.Second, func() bool { return e.sender.callCount() == 1 }, "1 RPC")
	time.Sleep(100 * time.Millisecond)
	if n := e.sender.callCount(); n != 1 {
		t.Fatalf("%d RPCs, want 1", n)
	}
	if next, pending := e.d.progress(0); next != 2 || pending != 2 {
		t.Fatalf("read up to %d with %d pending, want 2 and 2", next, pending)
	}
}

// TestClosePromptly: Close cancels RPCs that are waiting for devices and
// returns at once, without answering them.
func TestClosePromptly(t *testing.T) {
	e := newEnv(t, Config{}, newFakeSender())
	e.sender.hold["*"] = true
	for i := 0; i < 5; i++ {
		e.produce(fmt.Sprintf("d%d", i), `{"method":"m"}`)
	}
	e.start()
	testkit.Eventually(t, 10*time.Second, func() bool { return e.sender.callCount() == 5 }, "5 RPCs")
	start := time.Now()
	e.stopDispatcher()
	if el := time.Since(start); el > time.Second {
		t.Fatalf("Close took %v", el)
	}
	if rs := e.allResponses(); len(rs) != 0 {
		t.Fatalf("cancelled RPCs were answered: %+v", rs)
	}
	if got := testutil.ToFloat64(e.metrics.Pending); got != 0 {
		t.Fatalf("pending gauge %v after Close", got)
	}
}

// TestPartitions: every partition of an existing multi-partition commands
// topic is served, and so is one added while running; the existing
// topic's configuration is left alone.
func TestPartitions(t *testing.T) {
	e := newEnv(t, Config{Topic: "cmds", Responses: "resps"}, newFakeSender())
	if _, err := e.log.CreateTopic("cmds", commitlog.TopicConfig{Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 12; i++ {
		e.produce(fmt.Sprintf("dev-%d", i), `{"method":"m"}`)
	}
	e.start()
	rs := e.waitResponses(12)
	parts := map[int32]bool{}
	for _, r := range rs {
		parts[r.RequestPartition] = true
		if want := commitlog.KeyPartition(r.rec.Key, 3); r.RequestPartition != want || r.header(HeaderRequestPartition) != fmt.Sprint(want) {
			t.Fatalf("%s: partition %d, want %d", r.Device, r.RequestPartition, want)
		}
	}
	if len(parts) != 3 {
		t.Fatalf("served partitions %v", parts)
	}
	if n := e.topic("cmds").Config().Partitions; n != 3 {
		t.Fatalf("topic changed to %d partitions", n)
	}
	if err := e.log.UpdateTopic("cmds", commitlog.TopicConfig{Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	p3, _ := e.topic("cmds").Partition(3)
	if _, err := p3.Append(t.Context(), []commitlog.Record{{Key: []byte("late"), Value: []byte(`{"method":"m"}`)}}).Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	rs = e.waitResponses(13)
	if r := rs[len(rs)-1]; r.RequestPartition != 3 || r.Status != StatusOK {
		t.Fatalf("new partition: %s", r.rec.Value)
	}
}

// TestConfig: defaults, and every problem reported at once with its field.
func TestConfig(t *testing.T) {
	var c Config
	c.EnsureDefaults()
	if c.Topic != "commands" || c.Responses != "rpc_responses" || c.Timeout != 30*time.Second || c.Expiry != time.Hour ||
		c.MaxInFlight != 1000 || c.MaxCommandBytes != 64<<10 || c.Logger == nil || c.Metrics == nil {
		t.Fatalf("defaults %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := Config{Topic: "a/b", Responses: "a/b", Timeout: -1, Expiry: time.Microsecond, MaxInFlight: 20000, MaxCommandBytes: 1}
	err := bad.Validate()
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("error %v", err)
	}
	for _, f := range []string{"topic", "responses", "timeout", "expiry", "max_in_flight", "max_command_bytes"} {
		if !strings.Contains(err.Error(), ": "+f+": ") {
			t.Errorf("no problem reported for %s: %v", f, err)
		}
	}
	if _, err := New(Config{Topic: "x", Responses: "x"}, nil, nil, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("New with a bad config: %v", err)
	}
}
