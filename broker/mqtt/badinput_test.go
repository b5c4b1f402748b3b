package mqtt

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestBadInput covers every refusal ThingsBoard defines, on both protocol
// versions: the right answer, a counted metric, and nothing malformed in
// the log.
func TestBadInput(t *testing.T) {
	cases := []struct {
		name, topic, payload string
		reason               string
		v5Code               byte
		v3Disconnect         bool
	}{
		{"invalid json", "v1/devices/me/telemetry", `{"temperature":`, reasonInvalidPayload, 0x99, true},
		{"wrong shape", "v1/devices/me/telemetry", `[1,2,3]`, reasonInvalidPayload, 0x99, true},
		{"attributes not an object", "v1/devices/me/attributes", `["a"]`, reasonInvalidPayload, 0x99, true},
		{"non-integer request id", "v1/devices/me/attributes/request/abc", `{}`, reasonInvalidPayload, 0x99, true},
		{"protobuf topic", "v2/t/p", `x`, reasonInvalidPayload, 0x99, true},
		{"rpc without method", "v1/devices/me/rpc/request/1", `{"params":{}}`, reasonInvalidPayload, 0x99, true},
		{"oversize", "v1/devices/me/telemetry", `{"big":"` + strings.Repeat("x", 70000) + `"}`, reasonOversize, 0x97, true},
		{"unknown topic", "v1/devices/me/nonsense", `{"a":1}`, reasonUnknownTopic, 0x90, false},
		{"attribute key over 255 bytes", "v1/devices/me/attributes", `{"` + strings.Repeat("k", 256) + `":1}`, reasonInvalidPayload, 0x99, true},
		{"attribute key with a control character", "v2/a", `{"a\u0001b":1}`, reasonInvalidPayload, 0x99, true},
	}
	for _, version := range []byte{4, 5} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("v%d/%s", version, tc.name), func(t *testing.T) {
				e := newEnv(t)
				c := connectToken(t, e, "TOKEN1", version)
				// One good publish first: its acknowledgement must still
				// go out before any disconnect.
				good := c.publish("v1/devices/me/telemetry", `{"good":1}`, 1)
				bad := c.publish(tc.topic, tc.payload, 1)
				if ack := c.expect(packets.Puback); ack.PacketID != good || ack.ReasonCode != 0 {
					t.Fatalf("good publish ack %+v", ack)
				}
				switch {
				case version == 5:
					ack := c.expect(packets.Puback)
					if ack.PacketID != bad || ack.ReasonCode != tc.v5Code {
						t.Fatalf("MQTT 5 PUBACK id %d code %#x, want %d %#x", ack.PacketID, ack.ReasonCode, bad, tc.v5Code)
					}
					// The connection stays usable.
					if code := c.publishAck("v1/devices/me/telemetry", `{"after":1}`); code != 0 {
						t.Fatalf("publish after a refused one: %#x", code)
					}
				case tc.v3Disconnect:
					c.expectClosed()
				default:
					if ack := c.expect(packets.Puback); ack.PacketID != bad || ack.ReasonCode != 0 {
						t.Fatalf("MQTT 3.1.1 PUBACK %+v", ack)
					}
				}
				if got := e.rejected(tc.reason); got != 1 {
					t.Fatalf("ferry_mqtt_rejected_total{reason=%q} = %v", tc.reason, got)
				}
				for _, r := range e.records("telemetry") {
					if !strings.Contains(string(r.Value), `"good"`) && !strings.Contains(string(r.Value), `"after"`) {
						t.Fatalf("malformed input reached the log: %s", r.Value)
					}
				}
				if n := len(e.records("attributes")); n != 0 {
					t.Fatalf("%d attribute records", n)
				}
			})
		}
	}
}

// TestGatewayBadNames: device names and attribute keys the registry
// cannot hold are bad input on every gateway topic (MQTT 5 PUBACK 0x99,
// MQTT 3.1.1 disconnect), counted as invalid_payload, never as a storage
// error, and nothing of the publish is stored.
func TestGatewayBadNames(t *testing.T) {
	long := strings.Repeat("n", 256)
	cases := []struct{ name, topic, payload string }{
		{"connect long name", "v1/gateway/connect", `{"device":"` + long + `"}`},
		{"connect control character", "v1/gateway/connect", `{"device":"a\nb"}`},
		{"connect long type", "v1/gateway/connect", `{"device":"ok","type":"` + long + `"}`},
		{"telemetry long name", "v1/gateway/telemetry", `{"Good":[{"a":1}],"` + long + `":[{"a":1}]}`},
		{"telemetry control character", "v1/gateway/telemetry", `{"a\u0007":[{"a":1}]}`},
		{"attributes long name", "v1/gateway/attributes", `{"` + long + `":{"a":1}}`},
		{"attributes long key", "v1/gateway/attributes", `{"Good":{"` + long + `":1}}`},
		{"attribute request long name", "v1/gateway/attributes/request", `{"id":1,"device":"` + long + `","client":true,"key":"a"}`},
		{"rpc answer control character", "v1/gateway/rpc", `{"device":"a\u0000","id":1,"data":{}}`},
		{"disconnect long name", "v1/gateway/disconnect", `{"device":"` + long + `"}`},
	}
	for _, version := range []byte{4, 5} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("v%d/%s", version, tc.name), func(t *testing.T) {
				e := newEnv(t)
				c := connectToken(t, e, "GWTOKEN", version)
				id := c.publish(tc.topic, tc.payload, 1)
				if version == 5 {
					if code := c.expectAck(id); code != packets.ErrPayloadFormatInvalid.Code {
						t.Fatalf("PUBACK %#x, want 0x99", code)
					}
				} else {
					c.expectClosed()
				}
				if got := e.rejected(reasonInvalidPayload); got != 1 {
					t.Fatalf("invalid_payload counted %v", got)
				}
				if got := testutil.ToFloat64(e.metrics.StorageErrors); got != 0 {
					t.Fatalf("counted as %v storage errors", got)
				}
				if n := len(e.records("telemetry")) + len(e.records("attributes")); n != 0 {
					t.Fatalf("%d records stored", n)
				}
				if _, ok := e.reg.Get("Good"); ok {
					t.Fatal("a device of the refused publish was created")
				}
			})
		}
	}
}

// TestBadInputIsNotLoggedPerMessage: a device sending garbage in a loop is
// logged once a minute, counted every time.
func TestBadInputIsNotLoggedPerMessage(t *testing.T) {
	e := newEnv(t)
	var lines strings.Builder
	e.srv.logger = newTestLogger(&lines)
	c := connectToken(t, e, "TOKEN1", 5)
	for i := 0; i < 50; i++ {
		if code := c.publishAck("v1/devices/me/telemetry", `nope`); code != 0x99 {
			t.Fatalf("code %#x", code)
		}
	}
	if got := e.rejected(reasonInvalidPayload); got != 50 {
		t.Fatalf("counted %v", got)
	}
	if n := strings.Count(lines.String(), "publish refused"); n != 1 {
		t.Fatalf("%d log lines for 50 bad publishes", n)
	}
}

// TestConnackCodes checks ThingsBoard's CONNACK codes for refused logins.
func TestConnackCodes(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name     string
		version  byte
		clientID string
		username string
		password *string
		want     byte
	}{
		{"v3 token ok", 4, "x", "TOKEN1", nil, 0},
		{"v3 bad token", 4, "x", "NOPE", nil, 0x05}, // ThingsBoard's ReturnCodeResolver: bad user name or password → not authorized
		{"v3 no credentials", 4, "x", "", nil, 0x02},
		{"v3 basic ok", 4, "cid", "user", strp("pass"), 0},
		{"v3 basic wrong password", 4, "cid", "user", strp("bad"), 0x05},
		{"v3 nothing", 4, "", "", nil, 0x05},
		{"v3.1 bad token", 3, "x", "NOPE", nil, 0x05},
		{"v5 token ok", 5, "x", "TOKEN1", nil, 0},
		{"v5 bad token", 5, "x", "NOPE", nil, 0x86},
		{"v5 all three wrong", 5, "x", "u", strp("p"), 0x86},
		{"v5 unknown client id only", 5, "x", "", nil, 0x85},
		{"v5 nothing", 5, "", "", nil, 0x87},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, ack := dial(t, e.srv.Addr(), connectOpts{version: tc.version, clientID: tc.clientID, username: tc.username, password: tc.password})
			if ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != tc.want {
				t.Fatalf("CONNACK %#x, want %#x", ack.ReasonCode, tc.want)
			}
		})
	}
	if e.rejected("connect_auth") == 0 {
		t.Fatal("refused logins not counted")
	}
}

func TestAnonymousOnlyWhenAllowed(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.AllowAnonymous = true }))
	c, ack := dial(t, e.srv.Addr(), connectOpts{clientID: "anon-1"})
	if ack.ReasonCode != 0 {
		t.Fatalf("anonymous refused with allow_anonymous: %#x", ack.ReasonCode)
	}
	if code := c.publishAck("v1/devices/me/telemetry", `{"a":1}`); code != 0 {
		t.Fatalf("anonymous publish %#x", code)
	}
	if recs := e.records("telemetry"); len(recs) != 1 || string(recs[0].Key) != "anon-1" {
		t.Fatalf("anonymous record %+v", recs)
	}
}

// TestSubscriptionsLimitedToDeviceAPI: only ThingsBoard's filters are
// granted; gateway filters only for gateways.
func TestSubscriptionsLimitedToDeviceAPI(t *testing.T) {
	e := newEnv(t)
	for _, version := range []byte{4, 5} {
		c := connectToken(t, e, "TOKEN1", version)
		codes := c.subscribe("v1/devices/me/rpc/request/+", "#", "v1/devices/boiler-2/rpc/request/+", "v1/gateway/rpc", "$SYS/#", "v1/devices/me/attributes")
		fail := byte(0x80)
		if version == 5 {
			fail = 0x8F
		}
		want := []byte{1, fail, fail, fail, fail, 1}
		if string(codes) != string(want) {
			t.Fatalf("v%d SUBACK codes %v, want %v", version, codes, want)
		}
	}
	gw := connectToken(t, e, "GWTOKEN", 4)
	if codes := gw.subscribe("v1/gateway/rpc", "v1/gateway/attributes"); string(codes) != "\x01\x01" {
		t.Fatalf("gateway SUBACK %v", codes)
	}
}
