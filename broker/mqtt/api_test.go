package mqtt

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-iot/ferry/broker/testkit"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// TestTelemetryShapesOnEveryTopic: each of ThingsBoard's four telemetry
// payload shapes, on the v1 topic and both v2 JSON topics, gives one
// record per entry with the device's timestamp (or the arrival time).
func TestTelemetryShapesOnEveryTopic(t *testing.T) {
	shapes := []struct {
		name, payload string
		want          []string // record values; %d is the arrival time
	}{
		{"object", `{"temperature":42,"humidity":73.0}`, []string{`{"ts":%d,"values":{"temperature":42,"humidity":73.0}}`}},
		{"array of objects", `[{"key1":"value1"},{"key2":true}]`, []string{`{"ts":%d,"values":{"key1":"value1"}}`, `{"ts":%d,"values":{"key2":true}}`}},
		{"ts and values", `{"ts":1451649600512,"values":{"key1":"value1","key2":2}}`, []string{`{"ts":1451649600512,"values":{"key1":"value1","key2":2}}`}},
		{"array with ts", `[{"ts":1451649600000,"values":{"t":22.5}},{"ts":1451649601000,"values":{"t":22.7}}]`,
			[]string{`{"ts":1451649600000,"values":{"t":22.5}}`, `{"ts":1451649601000,"values":{"t":22.7}}`}},
	}
	for _, topic := range []string{"v1/devices/me/telemetry", "v2/t", "v2/t/j"} {
		for _, sh := range shapes {
			t.Run(topic+"/"+sh.name, func(t *testing.T) {
				e := newEnv(t)
				c := connectToken(t, e, "TOKEN1", 5)
				before := time.Now().UnixMilli()
				if code := c.publishAck(topic, sh.payload); code != 0 {
					t.Fatalf("PUBACK %#x", code)
				}
				after := time.Now().UnixMilli()
				recs := e.records("telemetry")
				if len(recs) != len(sh.want) {
					t.Fatalf("%d records, want %d", len(recs), len(sh.want))
				}
				for i, r := range recs {
					want := sh.want[i]
					if strings.Contains(want, "%d") {
						if r.Timestamp < before || r.Timestamp > after {
							t.Fatalf("arrival timestamp %d outside %d..%d", r.Timestamp, before, after)
						}
						want = fmt.Sprintf(want, r.Timestamp)
					}
					ts, _ := valuesOf(t, r)
					if string(r.Value) != want || ts != r.Timestamp || string(r.Key) != "boiler-1" || header(r, "device_type") != "boiler" {
						t.Fatalf("record %d: key %q ts %d value %s headers %+v, want %s", i, r.Key, r.Timestamp, r.Value, r.Headers, want)
					}
				}
			})
		}
	}
}

// TestV2DeviceAPI drives the short topics: attributes, attribute
// requests, client-side RPC and server-side RPC and attribute pushes,
// each answered in the topic family the device used.
func TestV2DeviceAPI(t *testing.T) {
	e := newEnv(t)
	c := connectToken(t, e, "TOKEN1", 4)
	for _, p := range []struct{ topic, payload string }{{"v2/a", `{"fw":"v1"}`}, {"v2/a/j", `{"model":"X"}`}} {
		if code := c.publishAck(p.topic, p.payload); code != 0 {
			t.Fatalf("%s: %#x", p.topic, code)
		}
	}
	if recs := e.records("attributes"); len(recs) != 2 {
		t.Fatalf("%d attribute records", len(recs))
	}
	if _, err := e.srv.PushSharedAttributes("boiler-1", []tb.KV{{Key: "mode", Value: strValue("eco")}}, nil); err != nil {
		t.Fatal(err)
	}
	c.subscribe("v2/a/res/+", "v2/r/res/+")
	for _, tc := range []struct{ topic, payload, respTopic, resp string }{
		{"v2/a/req/5", `{"clientKeys":"fw,model","sharedKeys":"mode"}`, "v2/a/res/5", `{"client":{"fw":"v1","model":"X"},"shared":{"mode":"eco"}}`},
		{"v2/a/req/j/6", `{"sharedKeys":"mode"}`, "v2/a/res/j/6", `{"shared":{"mode":"eco"}}`},
		{"v2/r/req/7", `{"method":"getSessionLimits","params":{}}`, "v2/r/res/7",
			`{"maxPayloadSize":65536,"maxInflightMessages":1024,"rateLimits":{"messages":null,"telemetryMessages":null,"telemetryDataPoints":null}}`},
		{"v2/r/req/j/8", `{"method":"getSessionLimits"}`, "v2/r/res/j/8",
			`{"maxPayloadSize":65536,"maxInflightMessages":1024,"rateLimits":{"messages":null,"telemetryMessages":null,"telemetryDataPoints":null}}`},
	} {
		pk := c.request(tc.topic, tc.payload)
		if pk.TopicName != tc.respTopic || string(pk.Payload) != tc.resp {
			t.Fatalf("%s answered on %s: %s; want %s %s", tc.topic, pk.TopicName, pk.Payload, tc.respTopic, tc.resp)
		}
	}
	// Server-side RPC and pushes on the v2 topics the device subscribed to.
	for _, sub := range []struct{ filter, prefix, answer string }{
		{"v2/r/req/+", "v2/r/req/", "v2/r/res/"},
		{"v2/r/req/j/+", "v2/r/req/j/", "v2/r/res/j/"},
	} {
		c.subscribe(sub.filter)
		done := rpcAsync(e, "boiler-1", 10*time.Second)
		req := c.nextPublish()
		if !strings.HasPrefix(req.TopicName, sub.prefix) || string(req.Payload) != `{"method":"m","params":null}` {
			t.Fatalf("RPC on %s: %s %s", sub.filter, req.TopicName, req.Payload)
		}
		id := strings.TrimPrefix(req.TopicName, sub.prefix)
		if code := c.publishAck(sub.answer+id, `{"via":"`+sub.filter+`"}`); code != 0 {
			t.Fatalf("answer PUBACK %#x", code)
		}
		if r := <-done; r.err != nil || string(r.resp) != `{"via":"`+sub.filter+`"}` {
			t.Fatalf("RPC result %s %v", r.resp, r.err)
		}
	}
	c.subscribe("v2/a")
	if pushed, err := e.srv.PushSharedAttributes("boiler-1", []tb.KV{{Key: "mode", Value: strValue("boost")}}, nil); err != nil || !pushed {
		t.Fatalf("push %v %v", pushed, err)
	}
	if pk := c.nextPublish(); pk.TopicName != "v2/a" || string(pk.Payload) != `{"mode":"boost"}` {
		t.Fatalf("push %s %s", pk.TopicName, pk.Payload)
	}
}

// TestSessionLimitsForGateway: a gateway also gets gatewayRateLimits.
// ThingsBoard serializes unset tenant-profile limits as JSON null (its
// SessionRateLimits record of Strings, written by a default ObjectMapper),
// which is what a profile without rate limits sends; the Python SDK reads
// a null limit as unlimited.
func TestSessionLimitsForGateway(t *testing.T) {
	e := newEnv(t)
	c := connectToken(t, e, "GWTOKEN", 5)
	c.subscribe("v1/devices/me/rpc/response/+")
	pk := c.request("v1/devices/me/rpc/request/1", `{"method":"getSessionLimits","params":{"timeout":5000}}`)
	const none = `{"messages":null,"telemetryMessages":null,"telemetryDataPoints":null}`
	want := `{"maxPayloadSize":65536,"maxInflightMessages":1024,"rateLimits":` + none + `,"gatewayRateLimits":` + none + `}`
	if pk.TopicName != "v1/devices/me/rpc/response/1" || string(pk.Payload) != want {
		t.Fatalf("session limits %s %s", pk.TopicName, pk.Payload)
	}
}

// TestGatewayDownlinks: shared attribute pushes and RPCs for a device
// behind a gateway go to the gateway; after v1/gateway/disconnect they
// stop, until the gateway speaks for the device again.
func TestGatewayDownlinks(t *testing.T) {
	e := newEnv(t)
	gw := connectToken(t, e, "GWTOKEN", 4)
	gw.subscribe("v1/gateway/rpc", "v1/gateway/attributes")
	if code := gw.publishAck("v1/gateway/connect", `{"device":"Meter A","type":"meter"}`); code != 0 {
		t.Fatalf("connect %#x", code)
	}
	pushed, err := e.srv.PushSharedAttributes("Meter A", []tb.KV{{Key: "interval", Value: tb.Value{Kind: tb.KindLong, Long: 30}}}, []string{"old"})
	if err != nil || !pushed {
		t.Fatalf("push %v %v", pushed, err)
	}
	if pk := gw.nextPublish(); pk.TopicName != "v1/gateway/attributes" || string(pk.Payload) != `{"device":"Meter A","data":{"interval":30,"deleted":["old"]}}` {
		t.Fatalf("gateway push %s %s", pk.TopicName, pk.Payload)
	}
	if code := gw.publishAck("v1/gateway/disconnect", `{"device":"Meter A"}`); code != 0 {
		t.Fatalf("disconnect %#x", code)
	}
	if _, err := e.srv.RPC(context.Background(), RPCRequest{Device: "Meter A", Method: "m"}); !errors.Is(err, ErrDeviceOffline) {
		t.Fatalf("RPC after disconnect: %v", err)
	}
	if pushed, err := e.srv.PushSharedAttributes("Meter A", []tb.KV{{Key: "interval", Value: tb.Value{Kind: tb.KindLong, Long: 60}}}, nil); err != nil || pushed {
		t.Fatalf("push after disconnect: %v %v", pushed, err)
	}
	// Speaking for it again routes it again.
	if code := gw.publishAck("v1/gateway/telemetry", `{"Meter A":[{"kwh":1}]}`); code != 0 {
		t.Fatalf("telemetry %#x", code)
	}
	done := rpcAsync(e, "Meter A", 10*time.Second)
	device, id := gatewayRPCID(t, gw.nextPublish()) // not the push made while disconnected
	if device != "Meter A" {
		t.Fatalf("RPC for %q", device)
	}
	gw.publishAck("v1/gateway/rpc", fmt.Sprintf(`{"device":"Meter A","id":%d,"data":"done"}`, id))
	if r := <-done; r.err != nil || string(r.resp) != `"done"` {
		t.Fatalf("RPC %s %v", r.resp, r.err)
	}
}

// TestGatewayAttributeRequests: ThingsBoard's gateway attribute request
// forms, client and shared scope, one key or many.
func TestGatewayAttributeRequests(t *testing.T) {
	e := newEnv(t)
	gw := connectToken(t, e, "GWTOKEN", 5)
	gw.subscribe("v1/gateway/attributes/response")
	if code := gw.publishAck("v1/gateway/attributes", `{"Meter A":{"model":"X1","serial":7}}`); code != 0 {
		t.Fatalf("attributes %#x", code)
	}
	if _, err := e.srv.PushSharedAttributes("Meter A", []tb.KV{{Key: "interval", Value: tb.Value{Kind: tb.KindLong, Long: 30}}}, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ req, resp string }{
		{`{"id":1,"device":"Meter A","client":true,"key":"model"}`, `{"id":1,"device":"Meter A","value":"X1"}`},
		{`{"id":2,"device":"Meter A","client":true,"keys":["model","serial"]}`, `{"id":2,"device":"Meter A","values":{"model":"X1","serial":7}}`},
		{`{"id":3,"device":"Meter A","client":false,"key":"interval"}`, `{"id":3,"device":"Meter A","value":30}`},
		{`{"id":4,"device":"Meter A","client":false,"key":"missing"}`, `{"id":4,"device":"Meter A"}`},
		{`{"id":5,"device":"Never Seen","client":true,"key":"a"}`, `{"id":5,"device":"Never Seen"}`},
	} {
		pk := gw.request("v1/gateway/attributes/request", tc.req)
		if pk.TopicName != "v1/gateway/attributes/response" || string(pk.Payload) != tc.resp {
			t.Fatalf("%s answered %s %s, want %s", tc.req, pk.TopicName, pk.Payload, tc.resp)
		}
	}
	if _, ok := e.reg.Get("Never Seen"); ok {
		t.Fatal("an attribute request created a device")
	}
}

// TestMetricsAfterKnownWorkload checks the ingest metrics exactly.
func TestMetricsAfterKnownWorkload(t *testing.T) {
	e := newEnv(t)
	a := connectToken(t, e, "TOKEN1", 4)
	b := connectToken(t, e, "TOKEN2", 5)
	gw := connectToken(t, e, "GWTOKEN", 4)
	// A connection counts once mochi reports its session established,
	// which it does after it has written the CONNACK.
	testkit.Eventually(t, 10*time.Second, func() bool { return testutil.ToFloat64(e.metrics.Connected) == 3 },
		"ferry_connected_devices 3 after three connects")
	for _, p := range []struct {
		c              *client
		topic, payload string
	}{
		{a, "v1/devices/me/telemetry", `{"t":1}`},                             // 1 record
		{a, "v2/t", `[{"ts":1,"values":{"t":1}},{"ts":2,"values":{"t":2}}]`},  // 2
		{b, "v1/devices/me/attributes", `{"fw":"1"}`},                         // 1 attributes record
		{b, "v1/devices/me/telemetry", `{"skip":null}`},                       // no values: 0
		{gw, "v1/gateway/telemetry", `{"A":[{"x":1},{"x":2}],"B":[{"y":1}]}`}, // 3
		{gw, "v1/gateway/attributes", `{"A":{"m":1},"B":{"m":2}}`},            // 2 attributes records
		{a, "nowhere", `{}`}, // unknown
	} {
		if code := p.c.publishAck(p.topic, p.payload); code != 0 && code != packets.ErrTopicNameInvalid.Code {
			t.Fatalf("%s: %#x", p.topic, code)
		}
	}
	const want = `
# HELP ferry_mqtt_messages_total MQTT publishes received from devices, by topic kind.
# TYPE ferry_mqtt_messages_total counter
ferry_mqtt_messages_total{kind="attributes"} 1
ferry_mqtt_messages_total{kind="gateway-attributes"} 1
ferry_mqtt_messages_total{kind="gateway-telemetry"} 1
ferry_mqtt_messages_total{kind="telemetry"} 3
ferry_mqtt_messages_total{kind="unknown"} 1
# HELP ferry_records_ingested_total Records appended to the log from MQTT, by log topic.
# TYPE ferry_records_ingested_total counter
ferry_records_ingested_total{topic="attributes"} 3
ferry_records_ingested_total{topic="telemetry"} 6
`
	if err := testutil.CollectAndCompare(e.metrics.Messages, strings.NewReader(want), "ferry_mqtt_messages_total"); err != nil {
		t.Fatal(err)
	}
	if err := testutil.CollectAndCompare(e.metrics.Records, strings.NewReader(want), "ferry_records_ingested_total"); err != nil {
		t.Fatal(err)
	}
	if n := len(e.records("telemetry")); n != 6 {
		t.Fatalf("%d telemetry records in the log", n)
	}
	b.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	testkit.Eventually(t, 20*time.Second, func() bool { return testutil.ToFloat64(e.metrics.Connected) == 2 }, "two connected devices after a DISCONNECT")
	// A refused login is not a connected device.
	dial(t, e.srv.Addr(), connectOpts{clientID: "x", username: "NOPE"})
	if got := testutil.ToFloat64(e.metrics.Connected); got != 2 {
		t.Fatalf("ferry_connected_devices %v after a refused login, want 2", got)
	}
}

// TestOversizePacketDisconnectCounted: a packet beyond the Maximum Packet
// Size the CONNACK advertises (max_payload + 64 KiB) ends the connection
// before it is read: MQTT 5 gets DISCONNECT 0x95, MQTT 3.1.1 (which has no
// server DISCONNECT) is closed; either way it is counted.
func TestOversizePacketDisconnectCounted(t *testing.T) {
	for _, version := range []byte{4, 5} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			e := newEnv(t, withConfig(func(c *Config) { c.MaxPayload = 1000 }))
			c := connectToken(t, e, "TOKEN1", version)
			var buf strings.Builder
			// PUBLISH QoS 0, remaining length 100000 (varint), then as much
			// as the server reads before it closes.
			buf.WriteString("\x30\xa0\x8d\x06")
			buf.WriteString("\x00\x17v1/devices/me/telemetry")
			buf.WriteString(strings.Repeat("x", 100000-25))
			_, _ = c.conn.Write([]byte(buf.String())) // the server may close mid-write
			if version == 5 {
				pk := c.expect(packets.Disconnect)
				if pk.ReasonCode != packets.ErrPacketTooLarge.Code {
					t.Fatalf("DISCONNECT %#x, want 0x95", pk.ReasonCode)
				}
			}
			c.expectClosed()
			testkit.Eventually(t, 20*time.Second, func() bool { return e.rejected(reasonPacketTooLarge) == 1 }, "the oversize packet to be counted")
			if n := len(e.records("telemetry")); n != 0 {
				t.Fatalf("%d records", n)
			}
		})
	}
}
