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

func strp(s string) *string { return &s }

// TestTelemetryShapesBecomeRecords sends every ThingsBoard payload shape on
// v1 and v2 topics and checks the stored records: one per entry, key =
// device, value = {"ts","values"}, timestamp = ts (or arrival), headers.
func TestTelemetryShapesBecomeRecords(t *testing.T) {
	e := newEnv(t)
	c := connectToken(t, e, "TOKEN1", 4)
	before := time.Now().UnixMilli()
	cases := []struct{ topic, payload string }{
		{"v1/devices/me/telemetry", `{"temperature":42,"humidity":73.0,"s":"21.5","on":true,"skip":null}`},
		{"v2/t", `[{"a":1},{"b":"text"}]`},
		{"v2/t/j", `{"ts":1451649600512,"values":{"key1":"value1","key2":2}}`},
		{"v1/devices/me/telemetry", `[{"ts":1451649600000,"values":{"t":22.5}},{"ts":1451649601000,"values":{"t":22.7,"nested":{"x":[1,2]}}}]`},
	}
	for _, tc := range cases {
		if code := c.publishAck(tc.topic, tc.payload); code != 0 {
			t.Fatalf("%s %s: PUBACK %#x", tc.topic, tc.payload, code)
		}
	}
	after := time.Now().UnixMilli()
	recs := e.records("telemetry")
	if len(recs) != 6 {
		t.Fatalf("%d records, want 6 (one per entry)", len(recs))
	}
	byTs := map[int64]map[string]any{}
	for _, r := range recs {
		if string(r.Key) != "boiler-1" || header(r, "device") != "boiler-1" || header(r, "device_type") != "boiler" {
			t.Fatalf("record key/headers: %q %+v", r.Key, r.Headers)
		}
		ts, vals := valuesOf(t, r)
		if ts != r.Timestamp {
			t.Fatalf("record timestamp %d, value ts %d", r.Timestamp, ts)
		}
		if ts < 1500000000000 && (ts != 1451649600512 && ts != 1451649600000 && ts != 1451649601000) {
			t.Fatalf("unexpected ts %d", ts)
		}
		if ts >= 1500000000000 && (ts < before || ts > after) {
			t.Fatalf("arrival ts %d outside %d..%d", ts, before, after)
		}
		if m, ok := byTs[ts]; ok {
			for k, v := range vals {
				m[k] = v
			}
		} else {
			byTs[ts] = vals
		}
	}
	first := recs[0].Value
	for _, r := range recs {
		if strings.Contains(string(r.Value), `"temperature"`) {
			first = r.Value
		}
	}
	// ThingsBoard typing: 42 stays a long, 73.0 stays a double, "21.5" is
	// cast to a number, null is skipped.
	want := `{"temperature":42,"humidity":73.0,"s":21.5,"on":true}`
	if !strings.Contains(string(first), want) {
		t.Fatalf("typed values %s, want %s", first, want)
	}
	if v := byTs[1451649600512]; v["key1"] != "value1" || fmt.Sprint(v["key2"]) != "2" {
		t.Fatalf("ts shape: %v", v)
	}
	if v := byTs[1451649601000]; fmt.Sprint(v["nested"]) != "map[x:[1 2]]" {
		t.Fatalf("nested JSON value: %v", v)
	}
}

func TestClientAttributesAndAttributeRequest(t *testing.T) {
	e := newEnv(t)
	c := connectToken(t, e, "TOKEN1", 4)
	if code := c.publishAck("v1/devices/me/attributes", `{"firmware":"1.2.3","serial":42}`); code != 0 {
		t.Fatalf("attributes PUBACK %#x", code)
	}
	if recs := e.records("attributes"); len(recs) != 1 || string(recs[0].Key) != "boiler-1" {
		t.Fatalf("attributes records: %+v", recs)
	}
	if _, err := e.srv.PushSharedAttributes("boiler-1", []tb.KV{{Key: "setpoint", Value: tb.Value{Kind: tb.KindLong, Long: 21}}}, nil); err != nil {
		t.Fatal(err)
	}
	c.subscribe("v1/devices/me/attributes/response/+")
	resp := c.request("v1/devices/me/attributes/request/5", `{"clientKeys":"firmware","sharedKeys":"setpoint"}`)
	if resp.TopicName != "v1/devices/me/attributes/response/5" {
		t.Fatalf("response topic %s", resp.TopicName)
	}
	if got := string(resp.Payload); got != `{"client":{"firmware":"1.2.3"},"shared":{"setpoint":21}}` {
		t.Fatalf("attribute response %s", got)
	}
}

func TestSharedAttributePush(t *testing.T) {
	e := newEnv(t)
	c := connectToken(t, e, "TOKEN1", 4)
	if codes := c.subscribe("v1/devices/me/attributes"); codes[0] != 1 {
		t.Fatalf("SUBACK %v", codes)
	}
	pushed, err := e.srv.PushSharedAttributes("boiler-1", []tb.KV{{Key: "mode", Value: tb.Value{Kind: tb.KindString, Str: "eco"}}}, []string{"old"})
	if err != nil || !pushed {
		t.Fatalf("push: %v %v", pushed, err)
	}
	pk := c.expect(packets.Publish)
	if pk.TopicName != "v1/devices/me/attributes" || string(pk.Payload) != `{"mode":"eco","deleted":["old"]}` {
		t.Fatalf("push %s %s", pk.TopicName, pk.Payload)
	}
}

// TestServerRPCRoundTripAndIsolation: an RPC reaches only its device, and
// the device's answer is returned to the caller.
func TestServerRPCRoundTripAndIsolation(t *testing.T) {
	e := newEnv(t)
	a := connectToken(t, e, "TOKEN1", 4)
	b := connectToken(t, e, "TOKEN2", 4)
	a.subscribe("v1/devices/me/rpc/request/+")
	b.subscribe("v1/devices/me/rpc/request/+")
	type result struct {
		resp json.RawMessage
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := e.srv.RPC(context.Background(), RPCRequest{Device: "boiler-1", Method: "setGpio",
			Params: json.RawMessage(`{"pin":1}`), Timeout: 10 * time.Second})
		done <- result{resp, err}
	}()
	req := a.expect(packets.Publish)
	if !strings.HasPrefix(req.TopicName, "v1/devices/me/rpc/request/") || string(req.Payload) != `{"method":"setGpio","params":{"pin":1}}` {
		t.Fatalf("RPC request %s %s", req.TopicName, req.Payload)
	}
	if req.FixedHeader.Qos == 1 {
		a.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: req.PacketID})
	}
	if pk, err := b.read(200 * time.Millisecond); err == nil {
		t.Fatalf("another device received %s %s", pk.TopicName, pk.Payload)
	}
	id := strings.TrimPrefix(req.TopicName, "v1/devices/me/rpc/request/")
	a.publishAck("v1/devices/me/rpc/response/"+id, `{"ok":true}`)
	r := <-done
	if r.err != nil || string(r.resp) != `{"ok":true}` {
		t.Fatalf("RPC result %s %v", r.resp, r.err)
	}
	// A forged answer to someone else's id is ignored: b answers a's next RPC id.
	go func() {
		_, err := e.srv.RPC(context.Background(), RPCRequest{Device: "boiler-1", Method: "m", Timeout: 300 * time.Millisecond})
		done <- result{err: err}
	}()
	req = a.expect(packets.Publish)
	id = strings.TrimPrefix(req.TopicName, "v1/devices/me/rpc/request/")
	b.publishAck("v1/devices/me/rpc/response/"+id, `{"forged":true}`)
	if r := <-done; !errors.Is(r.err, ErrRPCTimeout) {
		t.Fatalf("forged answer accepted: %v", r.err)
	}
	// Offline and unsubscribed devices fail at once.
	if _, err := e.srv.RPC(context.Background(), RPCRequest{Device: "basic-1", Method: "m"}); !errors.Is(err, ErrDeviceOffline) {
		t.Fatalf("offline device: %v", err)
	}
	gw := connectToken(t, e, "GWTOKEN", 4)
	gw.subscribe("v1/devices/me/attributes") // a SUBACK: the session is established, but not for RPC
	if _, err := e.srv.RPC(context.Background(), RPCRequest{Device: "gw-1", Method: "m"}); !errors.Is(err, ErrNotSubscribed) {
		t.Fatalf("unsubscribed device: %v", err)
	}
}

func TestClientSideRPC(t *testing.T) {
	e := newEnv(t)
	c := connectToken(t, e, "TOKEN1", 4)
	c.subscribe("v1/devices/me/rpc/response/+")
	pk := c.request("v1/devices/me/rpc/request/3", `{"method":"getSessionLimits","params":{}}`)
	var limits struct {
		MaxPayloadSize int `json:"maxPayloadSize"`
	}
	if pk.TopicName != "v1/devices/me/rpc/response/3" || json.Unmarshal(pk.Payload, &limits) != nil || limits.MaxPayloadSize != 65536 {
		t.Fatalf("session limits %s %s", pk.TopicName, pk.Payload)
	}
	pk = c.request("v1/devices/me/rpc/request/4", `{"method":"getTime","params":{}}`)
	if !strings.Contains(string(pk.Payload), `"error"`) {
		t.Fatalf("unsupported client RPC answered %s", pk.Payload)
	}
}

func TestProvisioning(t *testing.T) {
	e := newEnv(t)
	prov := func(body string) map[string]any {
		c, ack := dial(t, e.srv.Addr(), connectOpts{clientID: "p1", username: "provision"})
		if ack.ReasonCode != 0 {
			t.Fatalf("provision CONNACK %#x", ack.ReasonCode)
		}
		c.subscribe("/provision/response")
		reqID := c.publish("/provision/request", body, 1)
		pk := c.expect(packets.Publish)
		if ack := c.expect(packets.Puback); ack.PacketID != reqID {
			t.Fatalf("PUBACK %d for the provision request %d", ack.PacketID, reqID)
		}
		var m map[string]any
		if pk.TopicName != "/provision/response" || json.Unmarshal(pk.Payload, &m) != nil {
			t.Fatalf("response %s %s", pk.TopicName, pk.Payload)
		}
		// Anything else on a provisioning session is refused and closes it.
		if id := c.publish("v1/devices/me/telemetry", `{"a":1}`, 1); c.expect(packets.Puback).PacketID != id {
			t.Fatal("refused publish not acknowledged before the disconnect")
		}
		c.expectClosed()
		return m
	}
	m := prov(`{"deviceName":"new-sensor","provisionDeviceKey":"pkey","provisionDeviceSecret":"psecret"}`)
	if m["status"] != "SUCCESS" || m["credentialsType"] != "ACCESS_TOKEN" || m["credentialsValue"] == "" {
		t.Fatalf("provision response %v", m)
	}
	c := connectToken(t, e, m["credentialsValue"].(string), 4)
	if code := c.publishAck("v1/devices/me/telemetry", `{"t":1}`); code != 0 {
		t.Fatalf("provisioned device publish: %#x", code)
	}
	if m := prov(`{"deviceName":"x","provisionDeviceKey":"pkey","provisionDeviceSecret":"wrong"}`); m["status"] != "NOT_FOUND" {
		t.Fatalf("wrong secret: %v", m)
	}
	if m := prov(`{"deviceName":"new-sensor","provisionDeviceKey":"pkey","provisionDeviceSecret":"psecret"}`); m["status"] != "FAILURE" {
		t.Fatalf("existing device provisioned again: %v", m)
	}
	if d, ok := e.reg.Get("new-sensor"); !ok || d.Source != registry.SourceProvision {
		t.Fatalf("registry entry %+v %v", d, ok)
	}
}

// TestGatewayAPI drives a gateway-flagged device through v1/gateway/*.
func TestGatewayAPI(t *testing.T) {
	e := newEnv(t)
	gw := connectToken(t, e, "GWTOKEN", 4)
	gw.subscribe("v1/gateway/rpc", "v1/gateway/attributes", "v1/gateway/attributes/response")
	for _, p := range []struct{ topic, payload string }{
		{"v1/gateway/connect", `{"device":"Meter A","type":"meter"}`},
		{"v1/gateway/telemetry", `{"Meter A":[{"ts":1700000000000,"values":{"kwh":12.5}},{"kwh":12.6}],"Meter B":[{"v":1}]}`},
		{"v1/gateway/attributes", `{"Meter A":{"model":"X1"}}`},
	} {
		if code := gw.publishAck(p.topic, p.payload); code != 0 {
			t.Fatalf("%s: PUBACK %#x", p.topic, code)
		}
	}
	recs := e.records("telemetry")
	if len(recs) != 3 {
		t.Fatalf("%d telemetry records", len(recs))
	}
	for _, r := range recs {
		if header(r, "gateway") != "gw-1" || (string(r.Key) != "Meter A" && string(r.Key) != "Meter B") {
			t.Fatalf("record %q headers %+v", r.Key, r.Headers)
		}
		if string(r.Key) == "Meter A" && header(r, "device_type") != "meter" {
			t.Fatalf("device type header %q", header(r, "device_type"))
		}
	}
	if d, ok := e.reg.Get("Meter B"); !ok || d.Parent != "gw-1" {
		t.Fatalf("implicitly connected device: %+v %v", d, ok)
	}
	pk := gw.request("v1/gateway/attributes/request", `{"id":9,"device":"Meter A","client":true,"key":"model"}`)
	if pk.TopicName != "v1/gateway/attributes/response" || string(pk.Payload) != `{"id":9,"device":"Meter A","value":"X1"}` {
		t.Fatalf("gateway attribute response %s %s", pk.TopicName, pk.Payload)
	}
	done := make(chan json.RawMessage, 1)
	go func() {
		resp, err := e.srv.RPC(context.Background(), RPCRequest{Device: "Meter A", Method: "reset", Timeout: 10 * time.Second})
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	pk = gw.expect(packets.Publish)
	var rpc struct {
		Device string `json:"device"`
		Data   struct {
			ID     int64  `json:"id"`
			Method string `json:"method"`
		} `json:"data"`
	}
	if pk.TopicName != "v1/gateway/rpc" || json.Unmarshal(pk.Payload, &rpc) != nil || rpc.Device != "Meter A" || rpc.Data.Method != "reset" {
		t.Fatalf("gateway RPC %s %s", pk.TopicName, pk.Payload)
	}
	if pk.FixedHeader.Qos == 1 {
		gw.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
	}
	gw.publishAck("v1/gateway/rpc", fmt.Sprintf(`{"device":"Meter A","id":%d,"data":{"done":true}}`, rpc.Data.ID))
	if resp := <-done; string(resp) != `{"done":true}` {
		t.Fatalf("gateway RPC answer %s", resp)
	}
	// A device that is not a gateway may not use the gateway API.
	d := connectToken(t, e, "TOKEN1", 5)
	if code := d.publishAck("v1/gateway/telemetry", `{"X":[{"a":1}]}`); code != packets.ErrNotAuthorized.Code {
		t.Fatalf("non-gateway MQTT 5: %#x", code)
	}
	if e.rejected(reasonNotGateway) != 1 {
		t.Fatal("non-gateway use not counted")
	}
}
