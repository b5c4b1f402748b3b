package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/broker/testkit"
)

// TestInteropMosquittoClients drives the gateway with Debian's
// mosquitto_pub and mosquitto_sub, as a device firmware script would.
func TestInteropMosquittoClients(t *testing.T) {
	pub := testkit.NeedTool(t, "mosquitto_pub", "mosquitto-clients")
	sub := testkit.NeedTool(t, "mosquitto_sub", "mosquitto-clients")
	d := startDaemon(t, "", "")
	host, port, _ := net.SplitHostPort(d.MQTTAddr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	// Telemetry at QoS 1, MQTT 3.1.1 and 5 (-d shows the PUBACK).
	out := run(pub, "-h", host, "-p", port, "-u", "TOKEN1", "-q", "1", "-d",
		"-t", "v1/devices/me/telemetry", "-m", `{"temperature":21.5,"source":"mosquitto_pub"}`)
	if !strings.Contains(out, "received PUBACK") {
		t.Fatalf("no PUBACK:\n%s", out)
	}
	out = run(pub, "-V", "mqttv5", "-h", host, "-p", port, "-u", "TOKEN1", "-q", "1", "-d",
		"-t", "v1/devices/me/telemetry", "-m", `not json`)
	if !strings.Contains(out, "RC:153") { // 0x99 payload format invalid
		t.Fatalf("MQTT 5 bad payload not answered with 0x99:\n%s", out)
	}
	recs := d.records("telemetry")
	if len(recs) != 1 || !strings.Contains(string(recs[0].Value), `"source":"mosquitto_pub"`) {
		t.Fatalf("records: %+v", recs)
	}
	// A bad token: mosquitto_pub reports the refusal (ThingsBoard's 3.1.1
	// return code for it: not authorized).
	cmd := exec.CommandContext(ctx, pub, "-h", host, "-p", port, "-u", "WRONG", "-q", "1", "-t", "v1/devices/me/telemetry", "-m", "{}")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(strings.ToLower(string(out)), "not authori") {
		t.Fatalf("bad token accepted or unexplained: %v\n%s", err, out)
	}

	// Server-side RPC to a device whose "firmware" is mosquitto_sub.
	subCmd := exec.CommandContext(ctx, sub, "-h", host, "-p", port, "-u", "TOKEN1", "-i", "rpc-dev", "-q", "1",
		"-t", "v1/devices/me/rpc/request/+", "-v", "-C", "1")
	stdout, _ := subCmd.StdoutPipe()
	if err := subCmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer subCmd.Wait()
	result := make(chan string, 1)
	go func() {
		var out struct {
			Response json.RawMessage `json:"response"`
			Error    string          `json:"error"`
		}
		// The subscription may not be in place yet: retry while the device
		// is reported unsubscribed or offline.
		for i := 0; i < 100; i++ {
			out.Error = ""
			code := d.api("POST", "/api/v1/devices/boiler-1/rpc", map[string]any{"method": "ping", "params": map[string]int{"n": 1}}, &out)
			if code != 409 {
				result <- string(out.Response) + out.Error
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		result <- "device never subscribed"
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("mosquitto_sub got nothing: %v", err)
	}
	topic, payload, _ := strings.Cut(strings.TrimSpace(line), " ")
	if !strings.HasPrefix(topic, "v1/devices/me/rpc/request/") || payload != `{"method":"ping","params":{"n":1}}` {
		t.Fatalf("mosquitto_sub received %q", line)
	}
	id := strings.TrimPrefix(topic, "v1/devices/me/rpc/request/")
	run(pub, "-h", host, "-p", port, "-u", "TOKEN1", "-i", "rpc-answer", "-q", "1",
		"-t", "v1/devices/me/rpc/response/"+id, "-m", `{"pong":true}`)
	select {
	case r := <-result:
		var got map[string]bool
		if json.Unmarshal([]byte(r), &got) != nil || !got["pong"] {
			t.Fatalf("RPC answer %q", r)
		}
	case <-ctx.Done():
		t.Fatal("RPC never completed")
	}
}
