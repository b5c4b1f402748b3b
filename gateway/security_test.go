package main

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/ferry-iot/ferry/broker/kafkaserver"
	"github.com/ferry-iot/ferry/broker/testkit"
)

// mosquittoRun runs a mosquitto client against the daemon's MQTT listener
// and returns its exit status and output.
func mosquittoRun(t *testing.T, d *daemon, tool string, args ...string) (int, string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(d.MQTTAddr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, append([]string{"-h", host, "-p", port}, args...)...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %v hung:\n%s", tool, args, out)
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	return 0, string(out)
}

// rpcDevice connects device (token) with client id clientID and answers
// every RPC with {"pong":true}; lost reports a lost connection.
func rpcDevice(t *testing.T, d *daemon, token, clientID string, lost *atomic.Bool) paho.Client {
	t.Helper()
	c, tok := mqttClient(t, d.broker(), token, clientID, func(error) { lost.Store(true) })
	if tok.Error() != nil {
		t.Fatalf("connect %s: %v", clientID, tok.Error())
	}
	sub := c.Subscribe("v1/devices/me/rpc/request/+", 1, func(cl paho.Client, m paho.Message) {
		id := strings.TrimPrefix(m.Topic(), "v1/devices/me/rpc/request/")
		cl.Publish("v1/devices/me/rpc/response/"+id, 1, false, `{"pong":true}`)
	})
	if !sub.WaitTimeout(5*time.Second) || sub.Error() != nil {
		t.Fatalf("subscribe: %v", sub.Error())
	}
	return c
}

// rpcPong sends a ping RPC to device and reports whether it answered.
func rpcPong(t *testing.T, d *daemon, device string) (int, string) {
	t.Helper()
	var out struct {
		Response map[string]any `json:"response"`
		Error    string         `json:"error"`
	}
	code := d.api("POST", "/api/v1/devices/"+device+"/rpc", map[string]any{"method": "ping", "timeout": "5s"}, &out)
	if code == http.StatusOK && out.Response["pong"] != true {
		t.Fatalf("RPC answer %+v", out.Response)
	}
	return code, out.Error
}

// TestSecurityProvisioningBypass: the user name or client id "provision"
// opens nothing while provisioning is off, and while it is on it gives a
// session confined to the provisioning topics that can never take a
// device's place — the attack was mosquitto_sub -u provision -i boiler-1,
// which used to get CONNACK 0 and disconnect the real boiler-1.
func TestSecurityProvisioningBypass(t *testing.T) {
	sub := testkit.NeedTool(t, "mosquitto_sub", "mosquitto-clients")

	t.Run("off", func(t *testing.T) {
		d := startDaemonEnv(t, "", "", []string{"FERRY_PROVISIONING_KEY=", "FERRY_PROVISIONING_SECRET="})
		var lost atomic.Bool
		rpcDevice(t, d, "TOKEN1", "boiler-1", &lost)
		for _, args := range [][]string{
			{"-u", "provision", "-i", "boiler-1", "-t", "x", "-W", "3"},
			{"-u", "TOKEN2", "-i", "provision", "-t", "v1/devices/me/attributes", "-W", "3"},
			{"-u", "provision", "-i", "anything", "-t", "/provision/response", "-W", "3"},
		} {
			code, out := mosquittoRun(t, d, sub, args...)
			if code != 5 || !strings.Contains(out, "not authorised") {
				t.Fatalf("%v with provisioning off: exit %d\n%s", args, code, out)
			}
		}
		if lost.Load() {
			t.Fatal("boiler-1 was disconnected")
		}
		if code, msg := rpcPong(t, d, "boiler-1"); code != http.StatusOK {
			t.Fatalf("RPC to boiler-1 after the attempts: %d %s", code, msg)
		}
		if n := d.metric(`ferry_mqtt_rejected_total{reason="connect_provisioning_disabled"}`); n != 3 {
			t.Fatalf("refusals counted: %v, want 3", n)
		}
	})

	t.Run("on", func(t *testing.T) {
		d := startDaemon(t, "", "") // baseConfig enables provisioning
		var lost atomic.Bool
		rpcDevice(t, d, "TOKEN1", "boiler-1", &lost)
		for i := 0; i < 3; i++ {
			code, out := mosquittoRun(t, d, sub, "-u", "provision", "-i", "boiler-1", "-t", "x", "-W", "3")
			// Connected as a provisioning client, whose subscription to
			// anything but /provision/response is refused.
			if code != 0 || !strings.Contains(out, "All subscription requests were denied") {
				t.Fatalf("provisioning client subscribing to x: exit %d\n%s", code, out)
			}
		}
		if lost.Load() {
			t.Fatal("a provisioning client with boiler-1's client id disconnected boiler-1")
		}
		if code, msg := rpcPong(t, d, "boiler-1"); code != http.StatusOK {
			t.Fatalf("RPC to boiler-1 after three provisioning clients with its client id: %d %s", code, msg)
		}
		// A provisioning client may still provision.
		code, out := mosquittoRun(t, d, sub, "-u", "provision", "-i", "boiler-1", "-t", "/provision/response", "-W", "2", "-v")
		if code != 27 { // timed out waiting: subscribed, nothing sent to it
			t.Fatalf("provisioning client subscribing to /provision/response: exit %d\n%s", code, out)
		}
	})
}

// TestSecurityTakeoverByClientID: a client id names a session only within
// its device. Another device's credentials (or a provisioning client) with
// boiler-1's client id leave boiler-1 alone; boiler-1's own credentials
// take its session over — logged and counted.
func TestSecurityTakeoverByClientID(t *testing.T) {
	sub := testkit.NeedTool(t, "mosquitto_sub", "mosquitto-clients")
	var logs syncBuffer
	d := startDaemonLogged(t, "", "", nil, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	var lost atomic.Bool
	rpcDevice(t, d, "TOKEN1", "boiler-1", &lost)
	for i := 0; i < 3; i++ {
		code, out := mosquittoRun(t, d, sub, "-u", "TOKEN2", "-i", "boiler-1", "-t", "v1/devices/me/attributes", "-W", "2")
		if code != 27 {
			t.Fatalf("boiler-2 with boiler-1's client id: exit %d\n%s", code, out)
		}
	}
	if lost.Load() {
		t.Fatal("another device with boiler-1's client id disconnected boiler-1")
	}
	if code, msg := rpcPong(t, d, "boiler-1"); code != http.StatusOK {
		t.Fatalf("RPC to boiler-1: %d %s", code, msg)
	}
	if n := d.metric("ferry_mqtt_session_takeovers_total"); n != 0 {
		t.Fatalf("takeovers %v, want 0", n)
	}
	if strings.Contains(logs.String(), "takes over") {
		t.Fatalf("a takeover was logged:\n%s", logs.String())
	}

	// boiler-1's own credentials and client id: the new connection wins.
	code, out := mosquittoRun(t, d, sub, "-u", "TOKEN1", "-i", "boiler-1", "-t", "v1/devices/me/attributes", "-W", "2")
	if code != 27 {
		t.Fatalf("boiler-1 reconnecting: exit %d\n%s", code, out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !lost.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !lost.Load() {
		t.Fatal("the device's own new connection did not take over its session")
	}
	if n := d.metric("ferry_mqtt_session_takeovers_total"); n != 1 {
		t.Fatalf("takeovers %v, want 1", n)
	}
	if !strings.Contains(logs.String(), "takes over its session") || !strings.Contains(logs.String(), "device=boiler-1") {
		t.Fatalf("the takeover was not logged:\n%s", logs.String())
	}
}

// TestSecurityDownlinksTwoSessions: a device listening with mosquitto_sub
// while a second, unsubscribed connection of the same device comes and
// goes still gets its RPCs and shared-attribute pushes, and counts as
// online the whole time.
func TestSecurityDownlinksTwoSessions(t *testing.T) {
	subTool := testkit.NeedTool(t, "mosquitto_sub", "mosquitto-clients")
	pubTool := testkit.NeedTool(t, "mosquitto_pub", "mosquitto-clients")
	d := startDaemon(t, "", "")
	host, port, _ := net.SplitHostPort(d.MQTTAddr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	listener := exec.CommandContext(ctx, subTool, "-h", host, "-p", port, "-u", "TOKEN1", "-i", "listener", "-q", "1",
		"-t", "v1/devices/me/rpc/request/+", "-t", "v1/devices/me/attributes", "-v")
	stdout, _ := listener.StdoutPipe()
	if err := listener.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		listener.Process.Kill()
		listener.Wait()
	}()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	online := func() bool {
		var dev struct {
			Connected bool `json:"connected"`
		}
		if code := d.api("GET", "/api/v1/devices/boiler-1", nil, &dev); code != http.StatusOK {
			t.Fatalf("GET device: %d", code)
		}
		return dev.Connected
	}
	// rpc sends one RPC, answers it from a short-lived mosquitto_pub as the
	// listener's script would, and returns the API's answer.
	rpc := func(n int) {
		t.Helper()
		result := make(chan string, 1)
		go func() {
			var out struct {
				Response json.RawMessage `json:"response"`
				Error    string          `json:"error"`
			}
			for i := 0; i < 100; i++ { // until the listener's subscription is in place
				out.Error = ""
				if code := d.api("POST", "/api/v1/devices/boiler-1/rpc", map[string]any{"method": "ping", "params": n, "timeout": "10s"}, &out); code != http.StatusConflict {
					result <- string(out.Response) + out.Error
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			result <- "never subscribed"
		}()
		var line string
		select {
		case line = <-lines:
		case <-ctx.Done():
			t.Fatal("the listening connection got no RPC")
		}
		topic, payload, _ := strings.Cut(line, " ")
		id, ok := strings.CutPrefix(topic, "v1/devices/me/rpc/request/")
		if !ok || !strings.Contains(payload, `"params":`+string(rune('0'+n))) {
			t.Fatalf("listener received %q", line)
		}
		if out, err := exec.CommandContext(ctx, pubTool, "-h", host, "-p", port, "-u", "TOKEN1", "-i", "answer", "-q", "1",
			"-t", "v1/devices/me/rpc/response/"+id, "-m", `{"pong":true}`).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub answer: %v\n%s", err, out)
		}
		if r := <-result; r != `{"pong":true}` {
			t.Fatalf("RPC %d answered %q", n, r)
		}
	}
	rpc(1)

	// A second connection of the device, subscribed to nothing.
	second, tok := mqttClient(t, d.broker(), "TOKEN1", "second-socket", nil)
	if tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	rpc(2)
	var pushed struct {
		Delivered bool `json:"pushed"`
	}
	if code := d.api("POST", "/api/v1/devices/boiler-1/attributes/shared", map[string]any{"mode": "eco"}, &pushed); code != http.StatusOK || !pushed.Delivered {
		t.Fatalf("shared attribute push with two connections: %d %+v", code, pushed)
	}
	select {
	case line := <-lines:
		if line != `v1/devices/me/attributes {"mode":"eco"}` {
			t.Fatalf("listener received %q", line)
		}
	case <-ctx.Done():
		t.Fatal("the shared attribute push did not reach the subscribed connection")
	}
	if !online() {
		t.Fatal("device offline with two connections")
	}
	second.Disconnect(100)
	time.Sleep(100 * time.Millisecond)
	if !online() {
		t.Fatal("device counted offline after its second connection closed, its first still up")
	}
	rpc(3)
	if n := d.metric("ferry_devices_online"); n != 1 {
		t.Fatalf("ferry_devices_online %v, want 1", n)
	}
}

// TestSecurityAdminTokenGenerated: with no http.admin_token the daemon
// generates one into the data directory (mode 0600), requires it for every
// /api/v1 route, keeps it across restarts and never logs it;
// http.allow_anonymous_reads opens the read routes only.
func TestSecurityAdminTokenGenerated(t *testing.T) {
	dataDir := t.TempDir()
	var logs syncBuffer
	env := []string{"FERRY_HTTP_ADMIN_TOKEN="}
	d := startDaemonLogged(t, dataDir, "", env, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	file := filepath.Join(dataDir, adminTokenFile)
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatalf("no token file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v, want 0600", fi.Mode().Perm())
	}
	raw, _ := os.ReadFile(file)
	token := strings.TrimSpace(string(raw))
	if len(token) != 64 {
		t.Fatalf("token %d characters, want 64 hex", len(token))
	}
	for _, path := range []string{"/api/v1/topics", "/api/v1/topics/telemetry/records", "/api/v1/groups", "/api/v1/devices"} {
		if code := d.apiAuth("GET", path, nil, nil, ""); code != http.StatusUnauthorized {
			t.Fatalf("GET %s without a token: %d, want 401", path, code)
		}
		if code := d.apiAuth("GET", path, nil, nil, adminToken); code != http.StatusUnauthorized {
			t.Fatalf("GET %s with a wrong token: %d, want 401", path, code)
		}
		if code := d.apiAuth("GET", path, nil, nil, token); code != http.StatusOK {
			t.Fatalf("GET %s with the generated token: %d", path, code)
		}
	}
	// The scheme is case-insensitive (RFC 9110).
	req, _ := http.NewRequest("GET", "http://"+d.HTTPAddr().String()+"/api/v1/topics", nil)
	req.Header.Set("Authorization", "bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("lower-case scheme: %d", resp.StatusCode)
	}
	for _, open := range []string{"/healthz", "/metrics"} {
		if code := d.apiAuth("GET", open, nil, nil, ""); code != http.StatusOK {
			t.Fatalf("GET %s: %d", open, code)
		}
	}
	d.stop()
	if strings.Contains(logs.String(), token) {
		t.Fatal("the token was logged")
	}

	// A restart keeps the token; anonymous reads open the read routes only.
	d = startDaemonEnv(t, dataDir, "", append(env, "FERRY_HTTP_ALLOW_ANONYMOUS_READS=true"))
	if d.token != token {
		t.Fatal("the token changed across a restart")
	}
	if code := d.apiAuth("GET", "/api/v1/topics/telemetry/records", nil, nil, ""); code != http.StatusOK {
		t.Fatalf("anonymous read with allow_anonymous_reads: %d", code)
	}
	if code := d.apiAuth("GET", "/api/v1/devices", nil, nil, ""); code != http.StatusUnauthorized {
		t.Fatalf("device list without a token: %d", code)
	}
}

// TestSecurityExposureWarnings: a listener reachable beyond loopback that
// needs no credential is named at start; the same listener on loopback,
// or with its credential required, is not.
func TestSecurityExposureWarnings(t *testing.T) {
	wide := &net.TCPAddr{IP: net.IPv6unspecified, Port: 1}
	loop := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	cfg := &Config{}
	cfg.MQTT.AllowAnonymous = true
	cfg.HTTP.AllowAnonymousReads = true
	got := exposed(cfg, []net.Addr{wide, loop}, wide, wide)
	var keys []string
	for _, w := range got {
		keys = append(keys, strings.SplitN(w.msg, ":", 2)[0])
	}
	if strings.Join(keys, ",") != "mqtt,http,kafka" {
		t.Fatalf("warnings for %v, want mqtt (the wide listener only), http, kafka: %+v", keys, got)
	}
	cfg.Kafka.SASLUsers = []kafkaserver.SASLUser{{Username: "u", Password: "p"}}
	cfg.MQTT.AllowAnonymous, cfg.HTTP.AllowAnonymousReads = false, false
	if got := exposed(cfg, []net.Addr{wide}, wide, wide); len(got) != 0 {
		t.Fatalf("warnings with credentials required everywhere: %+v", got)
	}
	cfg = &Config{}
	cfg.MQTT.AllowAnonymous, cfg.HTTP.AllowAnonymousReads = true, true
	if got := exposed(cfg, []net.Addr{loop}, loop, loop); len(got) != 0 {
		t.Fatalf("warnings for loopback listeners: %+v", got)
	}
}
