package mqtt

import (
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestReasonCodesLegal holds every reason code Ferry can send (its
// tables) against the packet types MQTT 5 allows it on, and checks that
// the allowance table refuses what the specification refuses.
func TestReasonCodesLegal(t *testing.T) {
	for reason, c := range pubackCodes {
		if !legalReason(packets.Puback, c.Code) {
			t.Errorf("PUBACK code %#x for %s is not allowed on PUBACK", c.Code, reason)
		}
	}
	for reason, c := range connackCodes {
		if !legalReason(packets.Connack, c.Code) || c.Code < 0x80 {
			t.Errorf("CONNACK code %#x for %s is not a CONNACK refusal", c.Code, reason)
		}
		if v3 := v3Connack(c); v3 < 1 || v3 > 5 {
			t.Errorf("MQTT 3.x CONNACK %d for %s is not a 3.1.1 return code", v3, reason)
		}
	}
	for reason, c := range disconnectCodes {
		if !legalReason(packets.Disconnect, c.Code) {
			t.Errorf("DISCONNECT code %#x for %s is not allowed on DISCONNECT", c.Code, reason)
		}
	}
	// The table is not permissive: codes the specification keeps off a
	// packet type.
	for _, bad := range []struct{ typ, code byte }{
		{packets.Puback, 0x95}, // Packet too large: CONNACK and DISCONNECT only
		{packets.Puback, 0x8E}, // Session taken over: DISCONNECT only
		{packets.Connack, 0x8E},
		{packets.Connack, 0x8B}, // Server shutting down: DISCONNECT only
		{packets.Suback, 0x99},
		{packets.Disconnect, 0x86}, // Bad user name or password: CONNACK only
		{packets.Pubcomp, 0x80},
		{packets.Puback, 0x02},
	} {
		if legalReason(bad.typ, bad.code) {
			t.Errorf("code %#x allowed on %s", bad.code, packets.PacketNames[bad.typ])
		}
	}
}

// TestReasonCodesSentAreLegal drives every refusal an MQTT 5 client can
// meet and checks each reason code it receives against the packet type it
// came on, and that the broker never had to replace one.
func TestReasonCodesSentAreLegal(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.MaxPayload = 2000; c.Provisioning.Key = "" }))
	seen := map[byte]bool{} // packet types with reason codes received
	check := func(pk packets.Packet) {
		t.Helper()
		typ := pk.FixedHeader.Type
		if packetBit(typ) == 0 {
			return
		}
		codes := append([]byte{pk.ReasonCode}, pk.ReasonCodes...)
		if typ == packets.Suback {
			codes = pk.ReasonCodes
		}
		for _, c := range codes {
			if !legalReason(typ, c) {
				t.Errorf("%s with reason code %#x", packets.PacketNames[typ], c)
			}
			seen[typ] = true
		}
	}
	// CONNACK refusals.
	for _, o := range []connectOpts{
		{version: 5, clientID: "x", username: "NOPE"},
		{version: 5, clientID: "x"},
		{version: 5},
		{version: 5, clientID: "p", username: "provision"},
	} {
		_, ack := dial(t, e.srv.Addr(), o)
		check(ack)
		if ack.ReasonCode == 0 {
			t.Fatalf("%+v was accepted", o)
		}
	}
	// PUBACK refusals on one connection.
	c := connectToken(t, e, "TOKEN1", 5)
	for _, p := range []struct{ topic, payload string }{
		{"v1/devices/me/telemetry", `{"t":`},
		{"v1/devices/me/telemetry", `{"big":"` + strings.Repeat("x", 3000) + `"}`},
		{"v1/devices/me/nonsense", `{}`},
		{"v1/gateway/telemetry", `{"d":[{"t":1}]}`},
		{"v1/devices/me/telemetry", `{"ok":1}`},
	} {
		id := c.publish(p.topic, p.payload, 1)
		ack := c.expect(packets.Puback)
		if ack.PacketID != id {
			t.Fatalf("PUBACK %d for %d", ack.PacketID, id)
		}
		check(ack)
	}
	// SUBACK refusal.
	c.nextID++
	c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: c.nextID,
		Filters: packets.Subscriptions{{Filter: "#", Qos: 1}, {Filter: "v1/devices/me/attributes", Qos: 2}}})
	sub := c.expect(packets.Suback)
	check(sub)
	if len(sub.ReasonCodes) != 2 || sub.ReasonCodes[0] < 0x80 || sub.ReasonCodes[1] != 1 {
		t.Fatalf("SUBACK %v, want a refusal and QoS 1 granted (ThingsBoard's maximum)", sub.ReasonCodes)
	}
	// A QoS 2 publish after the CONNACK said Maximum QoS 1: DISCONNECT 0x9B.
	c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, PacketID: 99,
		TopicName: "v1/devices/me/telemetry", Payload: []byte(`{"q":2}`)})
	dis := c.expect(packets.Disconnect)
	check(dis)
	if dis.ReasonCode != packets.ErrQosNotSupported.Code {
		t.Fatalf("DISCONNECT %#x after a QoS 2 publish, want 0x9B", dis.ReasonCode)
	}
	c.expectClosed()
	if n := testutil.ToFloat64(e.metrics.IllegalReasons); n != 0 {
		t.Fatalf("%v reason codes replaced", n)
	}
	for _, typ := range []byte{packets.Connack, packets.Puback, packets.Suback, packets.Disconnect} {
		if !seen[typ] {
			t.Fatalf("no %s received", packets.PacketNames[typ])
		}
	}
}

// TestConnackAdvertisesLimits: a successful MQTT 5 CONNACK tells the
// client the Maximum Packet Size, Topic Alias Maximum and Maximum QoS.
func TestConnackAdvertisesLimits(t *testing.T) {
	e := newEnv(t)
	_, ack := dial(t, e.srv.Addr(), connectOpts{version: 5, clientID: "x", username: "TOKEN1"})
	p := ack.Properties
	want := e.srv.mochi.Options.Capabilities.MaximumPacketSize
	if ack.ReasonCode != 0 || p.MaximumPacketSize != want || p.TopicAliasMaximum != 16 ||
		!p.MaximumQosFlag || p.MaximumQos != 1 {
		t.Fatalf("CONNACK %#x properties %+v: want Maximum Packet Size %d, Topic Alias Maximum 16, Maximum QoS 1",
			ack.ReasonCode, p, want)
	}
}

// TestQoS2OnMQTT311: a 3.1.1 client's QoS 2 publish is stored once and
// completes the QoS 2 handshake (PUBREC, then PUBCOMP for its PUBREL); a
// resend while PUBREC is outstanding is not stored again.
func TestQoS2OnMQTT311(t *testing.T) {
	e := newEnv(t)
	c := connectToken(t, e, "TOKEN1", 4)
	pub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, PacketID: 7,
		TopicName: "v1/devices/me/telemetry", Payload: []byte(`{"q":2}`)}
	c.write(pub)
	rec := c.expect(packets.Pubrec)
	if rec.PacketID != 7 {
		t.Fatalf("PUBREC for %d", rec.PacketID)
	}
	pub.FixedHeader.Dup = true
	c.write(pub) // a resend: the PUBREC is still outstanding
	if again := c.expect(packets.Pubrec); again.PacketID != 7 {
		t.Fatalf("PUBREC for %d", again.PacketID)
	}
	c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 7})
	if comp := c.expect(packets.Pubcomp); comp.PacketID != 7 {
		t.Fatalf("PUBCOMP for %d", comp.PacketID)
	}
	time.Sleep(50 * time.Millisecond)
	if n := len(e.records("telemetry")); n != 1 {
		t.Fatalf("%d records for one QoS 2 publish, want 1", n)
	}
}
