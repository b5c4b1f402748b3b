package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ferry-iot/ferry/broker/registry"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

type rpcResult struct {
	resp json.RawMessage
	err  error
}

// rpcAsync sends a server-side RPC in the background.
func rpcAsync(e *env, device string, timeout time.Duration) chan rpcResult {
	done := make(chan rpcResult, 1)
	go func() {
		resp, err := e.srv.RPC(context.Background(), RPCRequest{Device: device, Method: "m", Timeout: timeout})
		done <- rpcResult{resp, err}
	}()
	return done
}

func gatewayRPCID(t *testing.T, pk packets.Packet) (string, int64) {
	t.Helper()
	var req struct {
		Device string `json:"device"`
		Data   struct {
			ID int64 `json:"id"`
		} `json:"data"`
	}
	if pk.TopicName != "v1/gateway/rpc" || json.Unmarshal(pk.Payload, &req) != nil {
		t.Fatalf("gateway RPC %s %s", pk.TopicName, pk.Payload)
	}
	return req.Device, req.Data.ID
}

func strValue(s string) tb.Value { return tb.Value{Kind: tb.KindString, Str: s} }

// TestGatewayCannotActForDirectDevice: a gateway naming a device that has
// credentials of its own is refused on every gateway topic (MQTT 5 0x87,
// 3.1.1 acknowledged and dropped), nothing is stored under that device
// (its own devices' data in the same publish is), and the device's
// downlinks never go to the gateway.
func TestGatewayCannotActForDirectDevice(t *testing.T) {
	for _, version := range []byte{4, 5} {
		t.Run(fmt.Sprintf("mqtt-v%d", version), func(t *testing.T) {
			e := newEnv(t)
			want := byte(0)
			if version == 5 {
				want = packets.ErrNotAuthorized.Code
			}
			gw := connectToken(t, e, "GWTOKEN", version)
			gw.subscribe("v1/gateway/rpc", "v1/gateway/attributes")
			for _, p := range []struct {
				topic, payload string
				want           byte
			}{
				{"v1/gateway/connect", `{"device":"boiler-1"}`, want},
				{"v1/gateway/telemetry", `{"boiler-1":[{"forged":1}]}`, want},
				// One foreign device among its own: the own device's data is kept.
				{"v1/gateway/telemetry", `{"Mine":[{"ok":1}],"boiler-1":[{"forged":1}]}`, 0},
				{"v1/gateway/attributes", `{"boiler-1":{"forged":true}}`, want},
				{"v1/gateway/connect", `{"device":"gw-1"}`, want}, // itself
			} {
				if code := gw.publishAck(p.topic, p.payload); code != p.want {
					t.Fatalf("%s %s: PUBACK %#x, want %#x", p.topic, p.payload, code, p.want)
				}
			}
			if got := e.rejected(reasonForeignDevice); got != 5 {
				t.Fatalf("foreign_device counted %v, want 5", got)
			}
			recs := e.records("telemetry")
			if len(recs) != 1 || string(recs[0].Key) != "Mine" || len(e.records("attributes")) != 0 {
				t.Fatalf("records stored: %d telemetry (want Mine's one), %d attributes", len(recs), len(e.records("attributes")))
			}
			if attrs, _ := e.reg.Attributes("boiler-1", registry.ScopeClient, nil); len(attrs) != 0 {
				t.Fatalf("client attributes written for another device: %+v", attrs)
			}
			if d, _ := e.reg.Get("boiler-1"); d.Parent != "" {
				t.Fatalf("direct device now has a parent: %+v", d)
			}
			if d, ok := e.reg.Get("Mine"); !ok || d.Parent != "gw-1" {
				t.Fatalf("the gateway's own device: %+v %v", d, ok)
			}
			// boiler-1 is not connected: its downlinks must not reach the gateway.
			if _, err := e.srv.RPC(context.Background(), RPCRequest{Device: "boiler-1", Method: "m"}); !errors.Is(err, ErrDeviceOffline) {
				t.Fatalf("RPC to the offline direct device: %v", err)
			}
			if pushed, err := e.srv.PushSharedAttributes("boiler-1", []tb.KV{{Key: "secret", Value: strValue("s")}}, nil); err != nil || pushed {
				t.Fatalf("push to the offline direct device: %v %v", pushed, err)
			}
			// The gateway's first downlink is for its own device, not boiler-1's.
			if code := gw.publishAck("v1/gateway/connect", `{"device":"Mine"}`); code != 0 {
				t.Fatalf("own device: %#x", code)
			}
			if _, err := e.srv.PushSharedAttributes("Mine", []tb.KV{{Key: "k", Value: strValue("v")}}, nil); err != nil {
				t.Fatal(err)
			}
			if pk := gw.nextPublish(); string(pk.Payload) != `{"device":"Mine","data":{"k":"v"}}` {
				t.Fatalf("gateway received %s %s", pk.TopicName, pk.Payload)
			}
		})
	}
}

// TestGatewayCannotHijackAnotherGatewaysChild: a second gateway naming a
// device created through the first is refused, the device's RPCs keep
// going to the first gateway, and the second cannot answer them.
func TestGatewayCannotHijackAnotherGatewaysChild(t *testing.T) {
	e := newEnv(t)
	if err := e.reg.Put(registry.Device{Name: "gw-2", Gateway: true}, registry.Credentials{Token: "GW2TOKEN"}); err != nil {
		t.Fatal(err)
	}
	gw1 := connectToken(t, e, "GWTOKEN", 5)
	gw1.subscribe("v1/gateway/rpc")
	if code := gw1.publishAck("v1/gateway/connect", `{"device":"Meter A"}`); code != 0 {
		t.Fatalf("gw-1 connect: %#x", code)
	}
	gw2 := connectToken(t, e, "GW2TOKEN", 5)
	gw2.subscribe("v1/gateway/rpc")
	for _, p := range []struct{ topic, payload string }{
		{"v1/gateway/connect", `{"device":"Meter A"}`},
		{"v1/gateway/telemetry", `{"Meter A":[{"forged":1}]}`},
		{"v1/gateway/attributes", `{"Meter A":{"forged":1}}`},
	} {
		if code := gw2.publishAck(p.topic, p.payload); code != packets.ErrNotAuthorized.Code {
			t.Fatalf("gw-2 %s: %#x", p.topic, code)
		}
	}
	done := rpcAsync(e, "Meter A", 10*time.Second)
	device, id := gatewayRPCID(t, gw1.nextPublish())
	if device != "Meter A" {
		t.Fatalf("RPC for %q", device)
	}
	// gw-2 answers gw-1's request: refused, and the RPC still waits.
	forged := fmt.Sprintf(`{"device":"Meter A","id":%d,"data":{"forged":true}}`, id)
	if code := gw2.publishAck("v1/gateway/rpc", forged); code != packets.ErrNotAuthorized.Code {
		t.Fatalf("forged gateway RPC answer: %#x", code)
	}
	if code := gw1.publishAck("v1/gateway/rpc", fmt.Sprintf(`{"device":"Meter A","id":%d,"data":{"real":true}}`, id)); code != 0 {
		t.Fatalf("real answer: %#x", code)
	}
	if r := <-done; r.err != nil || string(r.resp) != `{"real":true}` {
		t.Fatalf("RPC result %s %v", r.resp, r.err)
	}
	if got := e.rejected(reasonForeignDevice); got != 4 {
		t.Fatalf("foreign_device counted %v, want 4", got)
	}
	if recs := e.records("telemetry"); len(recs) != 0 {
		t.Fatalf("forged telemetry stored: %d records", len(recs))
	}
}

// TestGatewayAttributeRequestForForeignDevice: a gateway cannot read the
// attributes of a device it does not own; it gets no response.
func TestGatewayAttributeRequestForForeignDevice(t *testing.T) {
	for _, version := range []byte{4, 5} {
		t.Run(fmt.Sprintf("mqtt-v%d", version), func(t *testing.T) {
			e := newEnv(t)
			if err := e.reg.SetAttributes("boiler-1", registry.ScopeClient, []registry.Attribute{{Key: "secret", Value: []byte(`"s3cr3t"`)}}); err != nil {
				t.Fatal(err)
			}
			gw := connectToken(t, e, "GWTOKEN", version)
			gw.subscribe("v1/gateway/attributes/response")
			id := gw.publish("v1/gateway/attributes/request", `{"id":1,"device":"boiler-1","client":true,"key":"secret"}`, 1)
			want := byte(0)
			if version == 5 {
				want = packets.ErrNotAuthorized.Code
			}
			if code := gw.expectAck(id); code != want {
				t.Fatalf("PUBACK %#x, want %#x", code, want)
			}
			// The next response the gateway gets is for its own device.
			if code := gw.publishAck("v1/gateway/attributes", `{"Own":{"a":1}}`); code != 0 {
				t.Fatalf("own attributes: %#x", code)
			}
			pk := gw.request("v1/gateway/attributes/request", `{"id":2,"device":"Own","client":true,"key":"a"}`)
			if string(pk.Payload) != `{"id":2,"device":"Own","value":1}` {
				t.Fatalf("response %s", pk.Payload)
			}
			if e.rejected(reasonForeignDevice) != 1 {
				t.Fatal("refusal not counted")
			}
		})
	}
}

// TestRPCAnswerBoundToTheDeviceAsked: an RPC answer resolves only a
// request written through the answering device: a gateway answering with
// the id of a direct device's request (for a device of its own, or naming
// the direct device) resolves nothing, while another connection of the
// device itself may answer, as in ThingsBoard (a shell script receives
// with mosquitto_sub and answers with mosquitto_pub).
func TestRPCAnswerBoundToTheDeviceAsked(t *testing.T) {
	e := newEnv(t)
	other, _ := dial(t, e.srv.Addr(), connectOpts{clientID: "second", username: "TOKEN1"})
	other.subscribe("v1/devices/me/attributes") // established before the next one
	a := connectToken(t, e, "TOKEN1", 4)        // the newest session: RPCs go here
	a.subscribe("v1/devices/me/rpc/request/+")
	gw := connectToken(t, e, "GWTOKEN", 5)
	if code := gw.publishAck("v1/gateway/connect", `{"device":"Mine"}`); code != 0 {
		t.Fatalf("connect %#x", code)
	}
	done := rpcAsync(e, "boiler-1", 10*time.Second)
	req := a.nextPublish()
	id := strings.TrimPrefix(req.TopicName, "v1/devices/me/rpc/request/")
	for _, p := range []struct {
		payload string
		code    byte
	}{
		{`{"device":"Mine","id":` + id + `,"data":"forged"}`, 0},
		{`{"device":"boiler-1","id":` + id + `,"data":"forged"}`, packets.ErrNotAuthorized.Code},
	} {
		if code := gw.publishAck("v1/gateway/rpc", p.payload); code != p.code {
			t.Fatalf("gateway answer %s: PUBACK %#x, want %#x", p.payload, code, p.code)
		}
	}
	if code := gw.publishAck("v1/devices/me/rpc/response/"+id, `"forged"`); code != 0 {
		t.Fatalf("PUBACK %#x", code)
	}
	if code := other.publishAck("v1/devices/me/rpc/response/"+id, `{"from":"other"}`); code != 0 {
		t.Fatalf("PUBACK %#x", code)
	}
	if r := <-done; r.err != nil || string(r.resp) != `{"from":"other"}` {
		t.Fatalf("RPC result %s %v", r.resp, r.err)
	}
}

// TestSharedAttributePushIsolation: a shared attribute push reaches only
// its device; another device subscribed to the same topic never sees it.
func TestSharedAttributePushIsolation(t *testing.T) {
	e := newEnv(t)
	a := connectToken(t, e, "TOKEN1", 4)
	b := connectToken(t, e, "TOKEN2", 5)
	a.subscribe("v1/devices/me/attributes")
	b.subscribe("v1/devices/me/attributes")
	if pushed, err := e.srv.PushSharedAttributes("boiler-1", []tb.KV{{Key: "for", Value: strValue("a")}}, nil); err != nil || !pushed {
		t.Fatalf("push to a: %v %v", pushed, err)
	}
	if pushed, err := e.srv.PushSharedAttributes("boiler-2", []tb.KV{{Key: "for", Value: strValue("b")}}, nil); err != nil || !pushed {
		t.Fatalf("push to b: %v %v", pushed, err)
	}
	if pk := a.nextPublish(); string(pk.Payload) != `{"for":"a"}` {
		t.Fatalf("a received %s", pk.Payload)
	}
	if pk := b.nextPublish(); string(pk.Payload) != `{"for":"b"}` {
		t.Fatalf("b received %s first: another device's push", pk.Payload)
	}
}
