package mqtt

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestOnRPCReady: the listener hears about a device when it subscribes to
// RPC requests (and an RPC sent from there reaches it at the
// subscription's QoS), about a gateway's devices when the gateway
// subscribes to v1/gateway/rpc, and about a device a subscribed gateway
// starts speaking for — but not about other subscriptions, nor twice for
// a device already routed through the same gateway.
func TestOnRPCReady(t *testing.T) {
	e := newEnv(t)
	ready := make(chan string, 16)
	e.srv.OnRPCReady(func(device string) { ready <- device })
	expect := func(want string) {
		t.Helper()
		select {
		case got := <-ready:
			if got != want {
				t.Fatalf("ready %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no ready call for %q", want)
		}
	}
	expectNone := func() {
		t.Helper()
		select {
		case got := <-ready:
			t.Fatalf("unexpected ready call for %q", got)
		case <-time.After(100 * time.Millisecond):
		}
	}

	c := connectToken(t, e, "TOKEN1", 4)
	c.subscribe("v1/devices/me/attributes")
	expectNone()
	c.nextID++
	c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: c.nextID,
		Filters: packets.Subscriptions{{Filter: "v1/devices/me/rpc/request/+", Qos: 1}}})
	expect("boiler-1")
	done := make(chan error, 1)
	go func() {
		_, err := e.srv.RPC(context.Background(), RPCRequest{Device: "boiler-1", Method: "m", OneWay: true})
		done <- err
	}()
	req := c.expect(packets.Publish) // skips the SUBACK, which may come before or after
	if !strings.HasPrefix(req.TopicName, "v1/devices/me/rpc/request/") || req.FixedHeader.Qos != 1 {
		t.Fatalf("RPC request %s at QoS %d", req.TopicName, req.FixedHeader.Qos)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	gw := connectToken(t, e, "GWTOKEN", 4)
	gw.publishAck("v1/gateway/connect", `{"device":"Meter A"}`)
	expectNone() // not subscribed to gateway RPC yet
	gw.subscribe("v1/gateway/rpc")
	expect("Meter A")
	gw.publishAck("v1/gateway/telemetry", `{"Meter A":[{"v":1}]}`)
	expectNone() // already routed through this gateway
	gw.publishAck("v1/gateway/connect", `{"device":"Meter B"}`)
	expect("Meter B")

	e.srv.OnRPCReady(nil)
	c2 := connectToken(t, e, "TOKEN2", 4)
	c2.subscribe("v1/devices/me/rpc/request/+")
	expectNone()
}
