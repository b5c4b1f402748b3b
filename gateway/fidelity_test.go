package main

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/broker/testkit"
)

// TestFidelityMosquittoMQTT311: with mosquitto's own clients on MQTT
// 3.1.1 — a QoS 2 publish completes the QoS 2 handshake and is stored
// once; bad input closes the connection without a DISCONNECT (3.1.1 has
// none for servers), counted; refused logins get ThingsBoard's return
// codes, and the log says why in words without the token.
func TestFidelityMosquittoMQTT311(t *testing.T) {
	pub := testkit.NeedTool(t, "mosquitto_pub", "mosquitto-clients")
	var logs syncBuffer
	d := startDaemonLogged(t, "", "", nil, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})))

	code, out := mosquittoRun(t, d, pub, "-u", "TOKEN1", "-q", "2", "-d", "-t", "v1/devices/me/telemetry", "-m", `{"qos2":1}`)
	if code != 0 || !strings.Contains(out, "received PUBREC") || !strings.Contains(out, "received PUBCOMP") {
		t.Fatalf("QoS 2 publish: exit %d\n%s", code, out)
	}
	recs := d.records("telemetry")
	if len(recs) != 1 || !strings.Contains(string(recs[0].Value), `"qos2":1`) {
		t.Fatalf("records after one QoS 2 publish: %+v", recs)
	}

	code, out = mosquittoRun(t, d, pub, "-u", "TOKEN1", "-q", "1", "-d", "-t", "v1/devices/me/telemetry", "-m", `not json`)
	if code == 0 || strings.Contains(out, "received DISCONNECT") || strings.Contains(out, "received PUBACK") {
		t.Fatalf("invalid JSON on MQTT 3.1.1: exit %d\n%s", code, out)
	}
	if n := d.metric("ferry_mqtt_closed_v3_total"); n < 1 {
		t.Fatalf("closed 3.1.1 connections counted %v", n)
	}

	code, out = mosquittoRun(t, d, pub, "-i", "forgot-token", "-t", "v1/devices/me/telemetry", "-m", "{}")
	if code == 0 || !strings.Contains(out, "identifier rejected") {
		t.Fatalf("no user name: exit %d\n%s", code, out)
	}
	code, out = mosquittoRun(t, d, pub, "-u", "SECRET-WRONG-TOKEN", "-t", "v1/devices/me/telemetry", "-m", "{}")
	if code == 0 || !strings.Contains(out, "not authori") { // 3.1.1 code 5, as ThingsBoard answers
		t.Fatalf("unknown token: exit %d\n%s", code, out)
	}
	time.Sleep(100 * time.Millisecond)
	l := logs.String()
	for _, want := range []string{"connection refused: no credentials", "connection refused: unknown access token", "device=user:"} {
		if !strings.Contains(l, want) {
			t.Fatalf("log has no %q:\n%s", want, l)
		}
	}
	if strings.Contains(l, "SECRET-WRONG-TOKEN") {
		t.Fatal("the presented token was logged")
	}
}

// TestFidelityGatewayForeignDevice: a ThingsBoard gateway (paho, MQTT
// 3.1.1) sending one message for its own devices and one it does not own
// gets its own devices' data stored; the foreign one is refused, counted
// and logged.
func TestFidelityGatewayForeignDevice(t *testing.T) {
	var logs syncBuffer
	d := startDaemonLogged(t, "", "", nil, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
	gw, tok := mqttClient(t, d.broker(), "GWTOKEN", "plc-gw", nil)
	if tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	publish(t, gw, "v1/gateway/telemetry", `{"Meter 1":[{"kwh":1}],"boiler-1":[{"forged":1}],"Meter 2":[{"kwh":2}]}`)
	var keys []string
	for _, r := range d.records("telemetry") {
		keys = append(keys, *r.Key)
	}
	if strings.Join(keys, ",") != "Meter 1,Meter 2" && strings.Join(keys, ",") != "Meter 2,Meter 1" {
		t.Fatalf("stored records of %v, want the gateway's two meters", keys)
	}
	if n := d.metric(`ferry_mqtt_rejected_total{reason="foreign_device"}`); n != 1 {
		t.Fatalf("foreign_device %v, want 1", n)
	}
	if !strings.Contains(logs.String(), "named_device=boiler-1") {
		t.Fatalf("the foreign device was not logged:\n%s", logs.String())
	}
	var dev map[string]any
	if code := d.api("GET", "/api/v1/devices/Meter%201", nil, &dev); code != http.StatusOK || dev["gateway_device"] != "plc-gw" {
		t.Fatalf("Meter 1: %d %v", code, dev)
	}
}
