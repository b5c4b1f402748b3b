package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// TestE2ETelemetryShapes publishes every ThingsBoard payload shape with an
// unchanged ThingsBoard client (paho, token as user name) and reads the
// records back over the HTTP API.
func TestE2ETelemetryShapes(t *testing.T) {
	d := startDaemon(t, "", "")
	c := connectDevice(t, d, "TOKEN1")
	for _, p := range []struct{ topic, payload string }{
		{"v1/devices/me/telemetry", `{"temperature":42,"humidity":73.0,"status":"ok"}`},
		{"v1/devices/me/telemetry", `[{"a":1},{"b":true}]`},
		{"v2/t", `{"ts":1451649600512,"values":{"key1":"value1","key2":2}}`},
		{"v1/devices/me/telemetry", `[{"ts":1451649600000,"values":{"t":22.5}},{"ts":1451649601000,"values":{"t":22.7}}]`},
	} {
		publish(t, c, p.topic, p.payload)
	}
	recs := d.records("telemetry")
	if len(recs) != 6 {
		t.Fatalf("%d records, want 6", len(recs))
	}
	seen := map[string]bool{}
	for _, r := range recs {
		if r.Key == nil || *r.Key != "boiler-1" || r.Headers["device"] != "boiler-1" || r.Headers["device_type"] != "boiler" {
			t.Fatalf("record %+v", r)
		}
		var v struct {
			Ts     int64           `json:"ts"`
			Values json.RawMessage `json:"values"`
		}
		if err := json.Unmarshal(r.Value, &v); err != nil || v.Ts != r.Timestamp {
			t.Fatalf("value %s (timestamp %d): %v", r.Value, r.Timestamp, err)
		}
		var compact bytes.Buffer
		json.Compact(&compact, v.Values)
		seen[compact.String()] = true
	}
	for _, want := range []string{`{"temperature":42,"humidity":73.0,"status":"ok"}`, `{"a":1}`, `{"b":true}`,
		`{"key1":"value1","key2":2}`, `{"t":22.5}`, `{"t":22.7}`} {
		if !seen[want] {
			t.Errorf("no record with values %s (have %v)", want, seen)
		}
	}
}

// TestE2EAuthFailures checks ThingsBoard's MQTT 3.1.1 CONNACK codes.
func TestE2EAuthFailures(t *testing.T) {
	d := startDaemon(t, "", "")
	for _, tc := range []struct {
		user, clientID string
		code           byte
	}{
		{"WRONG-TOKEN", "c1", 5}, // not authorized (ThingsBoard's ReturnCodeResolver maps bad user name or password to it)
		{"", "unknown-id", 2},    // identifier rejected (client-id-only basic lookup)
	} {
		_, tok := mqttClient(t, d.broker(), tc.user, tc.clientID, nil)
		ct := tok.(*paho.ConnectToken)
		if tok.Error() == nil || ct.ReturnCode() != tc.code {
			t.Errorf("user %q client %q: return code %d (%v), want %d", tc.user, tc.clientID, ct.ReturnCode(), tok.Error(), tc.code)
		}
	}
	if got := d.metric(`ferry_mqtt_rejected_total{reason="connect_auth"}`); got != 2 {
		t.Fatalf("refused logins counted %v", got)
	}
}

// TestE2ERPCRoundTrip: an HTTP caller's RPC reaches the device over MQTT and
// its answer comes back in the HTTP response; a slow device times out.
func TestE2ERPCRoundTrip(t *testing.T) {
	d := startDaemon(t, "", "")
	c := connectDevice(t, d, "TOKEN1")
	tok := c.Subscribe("v1/devices/me/rpc/request/+", 1, func(cl paho.Client, m paho.Message) {
		id := strings.TrimPrefix(m.Topic(), "v1/devices/me/rpc/request/")
		var req struct {
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
		}
		json.Unmarshal(m.Payload(), &req)
		if req.Method == "slow" {
			return
		}
		cl.Publish("v1/devices/me/rpc/response/"+id, 1, false, fmt.Sprintf(`{"method":%q,"echo":%s}`, req.Method, req.Params))
	})
	tok.Wait()
	var out struct {
		Response map[string]any `json:"response"`
	}
	code := d.api("POST", "/api/v1/devices/boiler-1/rpc", map[string]any{"method": "setGpio", "params": map[string]int{"pin": 7}}, &out)
	if code != 200 || out.Response["method"] != "setGpio" || fmt.Sprint(out.Response["echo"]) != "map[pin:7]" {
		t.Fatalf("RPC: %d %+v", code, out)
	}
	var e struct {
		Error string `json:"error"`
	}
	if code := d.api("POST", "/api/v1/devices/boiler-1/rpc", map[string]any{"method": "slow", "timeout": "300ms"}, &e); code != 504 || e.Error == "" {
		t.Fatalf("slow RPC: %d %+v", code, e)
	}
	if code := d.api("POST", "/api/v1/devices/boiler-2/rpc", map[string]any{"method": "x"}, &e); code != 409 {
		t.Fatalf("RPC to an offline device: %d %+v", code, e)
	}
	if code := d.api("POST", "/api/v1/devices/nobody/rpc", map[string]any{"method": "x"}, &e); code != 404 {
		t.Fatalf("RPC to an unknown device: %d", code)
	}
	if code := d.api("POST", "/api/v1/devices/boiler-1/rpc", `{"method":`, &e); code != 400 || !strings.Contains(e.Error, "invalid JSON") {
		t.Fatalf("bad RPC body: %d %+v", code, e)
	}
}

// TestE2EAttributes: client attributes from the device, shared attributes
// from the API (pushed to the subscribed device), and an attribute request
// answering both.
func TestE2EAttributes(t *testing.T) {
	d := startDaemon(t, "", "")
	c := connectDevice(t, d, "TOKEN1")
	pushes := make(chan string, 4)
	responses := make(chan string, 4)
	c.Subscribe("v1/devices/me/attributes", 1, func(_ paho.Client, m paho.Message) { pushes <- string(m.Payload()) }).Wait()
	c.Subscribe("v1/devices/me/attributes/response/+", 1, func(_ paho.Client, m paho.Message) {
		responses <- m.Topic() + " " + string(m.Payload())
	}).Wait()
	publish(t, c, "v1/devices/me/attributes", `{"firmware":"2.1.0","battery":97}`)
	var res struct {
		Pushed bool `json:"pushed"`
	}
	if code := d.api("POST", "/api/v1/devices/boiler-1/attributes/shared", `{"setpoint":21.5,"mode":"eco"}`, &res); code != 200 || !res.Pushed {
		t.Fatalf("shared attributes: %d %+v", code, res)
	}
	select {
	case p := <-pushes:
		if p != `{"setpoint":21.5,"mode":"eco"}` {
			t.Fatalf("push %s", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no shared attribute push")
	}
	publish(t, c, "v1/devices/me/attributes/request/1", `{"clientKeys":"firmware","sharedKeys":"setpoint"}`)
	select {
	case r := <-responses:
		if r != `v1/devices/me/attributes/response/1 {"client":{"firmware":"2.1.0"},"shared":{"setpoint":21.5}}` {
			t.Fatalf("response %s", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no attribute response")
	}
	var attrs map[string]map[string]json.RawMessage
	if code := d.api("GET", "/api/v1/devices/boiler-1/attributes", nil, &attrs); code != 200 ||
		string(attrs["client"]["battery"]) != "97" || string(attrs["shared"]["mode"]) != `"eco"` {
		t.Fatalf("attributes: %d %+v", code, attrs)
	}
	if n := len(d.records("attributes")); n != 1 {
		t.Fatalf("%d attribute records", n)
	}
}

// TestE2EGatewayDevice: a gateway-flagged device reports for two devices
// behind it, and an RPC to one of them goes through the gateway.
func TestE2EGatewayDevice(t *testing.T) {
	d := startDaemon(t, "", "")
	gw := connectDevice(t, d, "GWTOKEN")
	gw.Subscribe("v1/gateway/rpc", 1, func(cl paho.Client, m paho.Message) {
		var req struct {
			Device string `json:"device"`
			Data   struct {
				ID     int64  `json:"id"`
				Method string `json:"method"`
			} `json:"data"`
		}
		json.Unmarshal(m.Payload(), &req)
		cl.Publish("v1/gateway/rpc", 1, false, fmt.Sprintf(`{"device":%q,"id":%d,"data":{"ok":%q}}`, req.Device, req.Data.ID, req.Data.Method))
	}).Wait()
	publish(t, gw, "v1/gateway/connect", `{"device":"Modbus Meter","type":"meter"}`)
	publish(t, gw, "v1/gateway/telemetry", `{"Modbus Meter":[{"ts":1700000000000,"values":{"kwh":1.5}}],"Pump 2":[{"rpm":900}]}`)
	publish(t, gw, "v1/gateway/attributes", `{"Modbus Meter":{"serial":"A-1"}}`)
	// A device with its own credentials is not the gateway's: acknowledged
	// (MQTT 3.1.1) and dropped.
	publish(t, gw, "v1/gateway/telemetry", `{"boiler-1":[{"forged":1}]}`)
	if got := d.metric(`ferry_mqtt_rejected_total{reason="foreign_device"}`); got != 1 {
		t.Fatalf("foreign_device refusals %v, want 1", got)
	}
	recs := d.records("telemetry")
	if len(recs) != 2 {
		t.Fatalf("%d records", len(recs))
	}
	for _, r := range recs {
		if r.Headers["gateway"] != "plc-gw" {
			t.Fatalf("record %+v lacks the gateway header", r)
		}
	}
	var dev deviceJSON
	if code := d.api("GET", "/api/v1/devices/Pump%202", nil, &dev); code != 200 || dev.Parent != "plc-gw" || dev.Source != "gateway" {
		t.Fatalf("device behind the gateway: %d %+v", code, dev)
	}
	var out struct {
		Response map[string]string `json:"response"`
	}
	if code := d.api("POST", "/api/v1/devices/Modbus%20Meter/rpc", map[string]any{"method": "reset"}, &out); code != 200 || out.Response["ok"] != "reset" {
		t.Fatalf("RPC through the gateway: %d %+v", code, out)
	}
}

// TestE2EBadInput: an MQTT 3.1.1 device sending invalid JSON is
// disconnected, oversize payloads likewise, unknown topics are acknowledged
// and dropped; all are counted and nothing malformed is stored.
func TestE2EBadInput(t *testing.T) {
	d := startDaemon(t, "", "")
	for _, tc := range []struct {
		name, topic, payload, reason string
		disconnect                   bool
	}{
		{"invalid json", "v1/devices/me/telemetry", `{"t": oops}`, "invalid_payload", true},
		{"oversize", "v1/devices/me/telemetry", `{"x":"` + strings.Repeat("y", 70000) + `"}`, "oversize", true},
		{"unknown topic", "v1/devices/me/whatever", `{"t":1}`, "unknown_topic", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var lost atomic.Bool
			c, tok := mqttClient(t, d.broker(), "TOKEN1", "bad-"+tc.reason, func(error) { lost.Store(true) })
			if tok.Error() != nil {
				t.Fatal(tok.Error())
			}
			pt := c.Publish(tc.topic, 1, false, tc.payload)
			acked := pt.WaitTimeout(2*time.Second) && pt.Error() == nil
			deadline := time.Now().Add(5 * time.Second)
			for tc.disconnect && !lost.Load() && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if tc.disconnect && (!lost.Load() || acked) {
				t.Fatalf("not disconnected (lost=%v acked=%v)", lost.Load(), acked)
			}
			if !tc.disconnect && !acked {
				t.Fatal("unknown topic not acknowledged")
			}
			if got := d.metric(fmt.Sprintf(`ferry_mqtt_rejected_total{reason=%q}`, tc.reason)); got != 1 {
				t.Fatalf("counted %v", got)
			}
		})
	}
	if n := len(d.records("telemetry")); n != 0 {
		t.Fatalf("%d records stored from bad input", n)
	}
}

// TestE2EDeviceManagement covers the registry API: auth, create, conflicts,
// validation, replace, delete, and survival across a restart.
func TestE2EDeviceManagement(t *testing.T) {
	dataDir := t.TempDir()
	d := startDaemon(t, dataDir, "")
	var e struct {
		Error string `json:"error"`
	}
	if code := d.apiAuth("GET", "/api/v1/devices", nil, &e, ""); code != 401 || e.Error == "" {
		t.Fatalf("no token: %d %+v", code, e)
	}
	if code := d.apiAuth("GET", "/api/v1/devices", nil, &e, "wrong"); code != 401 {
		t.Fatalf("wrong token: %d", code)
	}
	if code := d.api("POST", "/api/v1/devices", map[string]any{"name": "api-dev", "token": "API-TOKEN", "type": "sensor"}, nil); code != 201 {
		t.Fatalf("create: %d", code)
	}
	if code := d.api("POST", "/api/v1/devices", map[string]any{"name": "api-dev", "token": "OTHER"}, &e); code != 409 {
		t.Fatalf("duplicate create: %d", code)
	}
	if code := d.api("POST", "/api/v1/devices", map[string]any{"name": "thief", "token": "TOKEN1"}, &e); code != 409 {
		t.Fatalf("taken token: %d %+v", code, e)
	}
	if code := d.api("POST", "/api/v1/devices", map[string]any{"name": "", "password": "p"}, &e); code != 400 || e.Error == "" {
		t.Fatalf("invalid device: %d %+v", code, e)
	}
	if code := d.api("POST", "/api/v1/devices", `{"name":"x","tokn":"y"}`, &e); code != 400 || !strings.Contains(e.Error, "tokn") {
		t.Fatalf("unknown field: %d %+v", code, e)
	}
	c := connectDevice(t, d, "API-TOKEN")
	publish(t, c, "v1/devices/me/telemetry", `{"t":1}`)
	c.Disconnect(100)
	if code := d.api("PUT", "/api/v1/devices/api-dev", map[string]any{"token": "NEW-TOKEN", "type": "sensor"}, nil); code != 200 {
		t.Fatalf("replace: %d", code)
	}
	d.stop()
	d = startDaemon(t, dataDir, "")
	if _, tok := mqttClient(t, d.broker(), "API-TOKEN", "x", nil); tok.Error() == nil {
		t.Fatal("the replaced token still works after a restart")
	}
	connectDevice(t, d, "NEW-TOKEN").Disconnect(100)
	var list struct {
		Devices []deviceJSON `json:"devices"`
	}
	d.api("GET", "/api/v1/devices", nil, &list)
	if len(list.Devices) != 6 {
		t.Fatalf("devices after restart: %+v", list.Devices)
	}
	if code := d.api("DELETE", "/api/v1/devices/api-dev", nil, nil); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	if code := d.api("GET", "/api/v1/devices/api-dev", nil, &e); code != 404 {
		t.Fatalf("deleted device: %d", code)
	}
	if n := len(d.records("telemetry")); n != 1 {
		t.Fatalf("telemetry lost across the restart: %d records", n)
	}
}

// TestE2EHealthAndTopics checks the read-only endpoints.
func TestE2EHealthAndTopics(t *testing.T) {
	d := startDaemon(t, "", "")
	var h map[string]any
	if code := d.api("GET", "/healthz", nil, &h); code != 200 || h["status"] != "ok" {
		t.Fatalf("healthz: %d %v", code, h)
	}
	var topics struct {
		Topics []struct {
			Name       string `json:"name"`
			Partitions []any  `json:"partitions"`
		} `json:"topics"`
	}
	// The device topics, the commands topic and its responses, and the
	// client-side RPC requests and replies.
	if code := d.api("GET", "/api/v1/topics", nil, &topics); code != 200 || len(topics.Topics) != 6 ||
		topics.Topics[5].Name != "telemetry" || len(topics.Topics[5].Partitions) != 3 {
		t.Fatalf("topics: %d %+v", code, topics)
	}
	var e struct {
		Error string `json:"error"`
	}
	for _, c := range []struct {
		path string
		code int
	}{
		{"/api/v1/topics/nope", 404},
		{"/api/v1/topics/telemetry/records?partition=9", 404},
		{"/api/v1/topics/telemetry/records?offset=x", 400},
		{"/api/v1/topics/telemetry/records?offset=5", 416},
		{"/api/v1/topics/telemetry/records?limit=0", 400},
		{"/api/v2/nothing", 404},
	} {
		if code := d.api("GET", c.path, nil, &e); code != c.code || e.Error == "" {
			t.Errorf("GET %s: %d %q, want %d with a message", c.path, code, e.Error, c.code)
		}
	}
	if got := d.metric(`ferry_http_requests_total{code="404",route="topic"}`); got != 1 {
		t.Fatalf("HTTP errors counted %v", got)
	}
}
