package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
	"github.com/ferry-iot/ferry/broker/mqtt"
	"github.com/ferry-iot/ferry/broker/registry"
	"github.com/ferry-iot/ferry/broker/state"
	"github.com/ferry-iot/ferry/broker/testkit"
)

// mqttSender is the adapter the gateway writes: mqtt's sentinels mapped
// onto this package's.
type mqttSender struct{ srv *mqtt.Server }

func (s mqttSender) RPC(ctx context.Context, r Request) (json.RawMessage, error) {
	resp, err := s.srv.RPC(ctx, mqtt.RPCRequest{Device: r.Device, Method: r.Method, Params: r.Params, Timeout: r.Timeout, OneWay: r.OneWay})
	switch {
	case err == nil:
		return resp, nil
	case errors.Is(err, mqtt.ErrDeviceOffline), errors.Is(err, mqtt.ErrNotSubscribed), errors.Is(err, mqtt.ErrShuttingDown):
		return nil, fmt.Errorf("%w: %w", ErrOffline, err)
	case errors.Is(err, mqtt.ErrUnknownDevice):
		return nil, fmt.Errorf("%w: %w", ErrUnknownDevice, err)
	case errors.Is(err, mqtt.ErrRPCTimeout):
		return nil, fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	return nil, err
}

// TestMQTTDevice: commands for a ThingsBoard device (a paho client) that
// is offline wait, go out the moment it subscribes to RPC requests (the
// backoff is an hour here: only OnRPCReady can wake them), and its answers
// land in the responses topic; one for a device the registry does not
// know is answered with an error.
func TestMQTTDevice(t *testing.T) {
	st, err := state.Open("", state.WithInMemory(), state.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	reg, err := registry.Open(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Put(registry.Device{Name: "boiler-1", Type: "boiler"}, registry.Credentials{Token: "TOKEN1"}); err != nil {
		t.Fatal(err)
	}
	lg, err := commitlog.Open("/log", commitlog.WithFS(vfs.NewMem()), commitlog.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	for _, name := range []string{"telemetry", "attributes"} {
		if _, err := lg.CreateTopic(name, commitlog.TopicConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := mqtt.New(mqtt.Config{Listen: "127.0.0.1:0", Logger: quiet()}, reg, lg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	metrics := NewMetrics(prometheus.NewRegistry())
	d, err := New(Config{Logger: quiet(), Metrics: metrics}, lg, st, mqttSender{srv})
	if err != nil {
		t.Fatal(err)
	}
	d.retryMin, d.retryMax = time.Hour, time.Hour
	srv.OnRPCReady(d.DeviceOnline)
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	}()
	e := &env{t: t, log: lg, cfg: Config{}}

	e.produce("boiler-1", `{"method":"setGpio","params":{"pin":3,"value":1}}`, commitlog.Header{Key: "correlation_id", Value: []byte("c-1")})
	e.produce("nobody", `{"method":"setGpio"}`)
	rs := e.waitResponses(1)
	if rs[0].Device != "nobody" || rs[0].Status != StatusError || rs[0].Reason != ReasonUnknownDevice {
		t.Fatalf("unknown device: %s", rs[0].rec.Value)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return testutil.ToFloat64(metrics.Waiting) == 1 }, "the command to wait for its device")

	opts := paho.NewClientOptions().AddBroker("tcp://" + srv.Addr().String()).SetClientID("boiler-1-client").
		SetUsername("TOKEN1").SetAutoReconnect(false).SetOrderMatters(false).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	requests := make(chan string, 10)
	tok := c.Subscribe("v1/devices/me/rpc/request/+", 1, func(cl paho.Client, m paho.Message) {
		id := strings.TrimPrefix(m.Topic(), "v1/devices/me/rpc/request/")
		var req struct {
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
		}
		if err := json.Unmarshal(m.Payload(), &req); err != nil {
			t.Errorf("request %s: %v", m.Payload(), err)
			return
		}
		requests <- req.Method
		cl.Publish("v1/devices/me/rpc/response/"+id, 1, false, fmt.Sprintf(`{"done":true,"echo":%s}`, req.Params)).Wait()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	rs = e.waitResponses(2)
	r := rs[0]
	if r.Device != "boiler-1" || r.Status != StatusOK || string(r.Response.Response) != `{"done":true,"echo":{"pin":3,"value":1}}` ||
		r.header("correlation_id") != "c-1" || r.header(HeaderRequestOffset) != "0" {
		t.Fatalf("response %s %+v", r.rec.Value, r.rec.Headers)
	}

	// Online now: the next command goes at once.
	e.produce("boiler-1", `{"method":"getState","params":{}}`)
	rs = e.waitResponses(3)
	if r := rs[2]; r.Method != "getState" || r.Status != StatusOK {
		t.Fatalf("response %s", r.rec.Value)
	}
	if got := []string{<-requests, <-requests}; got[0] != "setGpio" || got[1] != "getState" {
		t.Fatalf("device saw %v", got)
	}
	if testutil.ToFloat64(metrics.Answered) != 2 || testutil.ToFloat64(metrics.Waiting) != 0 {
		t.Fatal("metrics")
	}
}
