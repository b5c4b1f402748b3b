package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ferry-iot/ferry/bridge"
	"github.com/ferry-iot/ferry/broker/commitlog"
)

// daemonEnv is the test process's environment without FERRY_ settings and
// without the harness's own switches, so a child daemon sees only what the
// test gives it.
func daemonEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FERRY_") && !strings.HasPrefix(kv, "GATEWAY_E2E_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// TestDaemonRunsWithoutConfigFile: `go run ./gateway` with no flags and no
// config file, in an empty directory, starts on the embedded defaults,
// prints where it stores data (./data, made absolute), and stops cleanly on
// SIGINT with exit status 0. The listeners are moved to loopback ports
// through the environment (tests bind loopback only, and the default ports
// may be taken on this machine); every other setting is a default.
func TestDaemonRunsWithoutConfigFile(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Dir = dir
	cmd.Env = daemonEnv("GATEWAY_E2E_DAEMON=1", // no GATEWAY_E2E_ARGS: run() gets no arguments
		"FERRY_MQTT_LISTEN=127.0.0.1:0", "FERRY_HTTP_LISTEN=127.0.0.1:0", "FERRY_KAFKA_LISTEN=127.0.0.1:0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() { // owned by this test: ends when the child's stdout closes
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var out []string
	waitFor := func(prefix string) string {
		t.Helper()
		timeout := time.After(60 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					cmd.Wait()
					t.Fatalf("daemon exited before printing %q:\nstdout:\n%s\nstderr:\n%s", prefix, strings.Join(out, "\n"), stderr.String())
				}
				out = append(out, l)
				if strings.HasPrefix(l, prefix) {
					return l
				}
			case <-timeout:
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("no %q line:\nstdout:\n%s\nstderr:\n%s", prefix, strings.Join(out, "\n"), stderr.String())
			}
		}
	}
	line := waitFor("ferry: node ")
	_, stored, ok := strings.Cut(line, ", data in ")
	if !ok {
		t.Fatalf("first line %q does not say where data is stored", line)
	}
	wantDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	if gotDir, err := filepath.EvalSymlinks(filepath.Dir(stored)); err != nil || filepath.Join(gotDir, filepath.Base(stored)) != filepath.Join(wantDir, "data") {
		t.Fatalf("stores data in %q, want ./data of its working directory %s", stored, wantDir)
	}
	waitFor("  MQTT            127.0.0.1:")
	waitFor("ferry: add a device")
	for _, sub := range []string{"log", "state"} {
		if fi, err := os.Stat(filepath.Join(stored, sub)); err != nil || !fi.IsDir() {
			t.Fatalf("%s/%s: %v", stored, sub, err)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	waitFor("ferry: stopped cleanly")
	for l := range lines {
		out = append(out, l)
	}
	if err := cmd.Wait(); err != nil {
		var ee *exec.ExitError
		errors.As(err, &ee)
		t.Fatalf("exit: %v (status %v)\nstdout:\n%s\nstderr:\n%s", err, ee, strings.Join(out, "\n"), stderr.String())
	}
}

// shiftedClock is the system clock moved by settable offsets: wall time
// (record timestamps, retention's wall check) and the monotonic time the
// log's own clock follows.
type shiftedClock struct {
	start      time.Time
	wall, mono atomic.Int64 // nanoseconds
	nows       atomic.Int64 // calls of Now: record timestamps, and one at the start of every retention pass
}

func newShiftedClock() *shiftedClock { return &shiftedClock{start: time.Now()} }

func (c *shiftedClock) Now() time.Time {
	c.nows.Add(1)
	return time.Now().Add(time.Duration(c.wall.Load()))
}
func (c *shiftedClock) Monotonic() time.Duration {
	return time.Since(c.start) + time.Duration(c.mono.Load())
}

// startDaemonClock is startDaemonEnv with the log on clock.
func startDaemonClock(t *testing.T, dataDir, extra string, env []string, clock commitlog.Clock) *daemon {
	t.Helper()
	return startDaemonOpts(t, dataDir, extra, env, startOptions{logOpts: []commitlog.Option{commitlog.WithClock(clock)}})
}

func startDaemonOpts(t *testing.T, dataDir, extra string, env []string, so startOptions) *daemon {
	t.Helper()
	file := filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf(baseConfig, dataDir)+extra), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(file, env)
	if err != nil {
		t.Fatal(err)
	}
	d, err := start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), so)
	if err != nil {
		t.Fatal(err)
	}
	dm := &daemon{Daemon: d, t: t, dataDir: dataDir}
	t.Cleanup(func() { dm.stop() })
	return dm
}

type topicInfo struct {
	Partitions []struct {
		Partition   int32 `json:"partition"`
		StartOffset int64 `json:"start_offset"`
		EndOffset   int64 `json:"end_offset"`
	} `json:"partitions"`
}

// span returns a topic's records still stored and ever written, over its partitions.
func (d *daemon) span(topic string) (stored, written int64) {
	d.t.Helper()
	var info topicInfo
	if code := d.api("GET", "/api/v1/topics/"+topic, nil, &info); code != 200 {
		d.t.Fatalf("topic %s: %d", topic, code)
	}
	for _, p := range info.Partitions {
		stored += p.EndOffset - p.StartOffset
		written += p.EndOffset
	}
	return stored, written
}

// TestDaemonRestartKeepsHeldDataPastRetention: telemetry older than its
// retention, of which the bridge's stored checkpoint says only the first
// records are upstream, survives a restart whose retention would run at
// once (retention_interval 1us, everything already past its age): the
// bridge's hold is in place before the first pass. Attributes, not bridged, expire
// in that same restart, which shows the passes ran.
func TestDaemonRestartKeepsHeldDataPastRetention(t *testing.T) {
	up, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	upClosed := false
	defer func() {
		if !upClosed {
			up.Close()
		}
	}()
	bridgeYAML := fmt.Sprintf(`
bridges:
  kafka:
    brokers: [%q]
    topics: {telemetry: site.telemetry}
    backoff: 50ms
    max_backoff: 200ms
`, up.ListenAddrs()[0])
	env := []string{"FERRY_LOG_TOPICS_TELEMETRY_RETENTION=1h", "FERRY_LOG_TOPICS_ATTRIBUTES_RETENTION=1h"}
	dataDir := t.TempDir()
	const old = 978307200000 // 2001-01-01: past retention by its timestamps

	// Run 1: five records go upstream, then the uplink dies and five more
	// (and some attributes) wait; an hour and more of log time passes.
	clock := newShiftedClock()
	d := startDaemonClock(t, dataDir, bridgeYAML, append(env, "FERRY_LOG_RETENTION_INTERVAL=1h"), clock)
	c := connectDevice(t, d, "TOKEN1")
	for i := 0; i < 5; i++ {
		publish(t, c, "v1/devices/me/telemetry", fmt.Sprintf(`{"ts":%d,"values":{"n":%d}}`, old+int64(i), i))
	}
	var st struct {
		Bridges []bridge.Status `json:"bridges"`
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		d.api("GET", "/api/v1/bridges", nil, &st)
		if len(st.Bridges) == 1 && st.Bridges[0].RecordsSent >= 5 && st.Bridges[0].Lag == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bridge did not replicate the first records: %+v", st)
		}
	}
	up.Close()
	upClosed = true
	for i := 5; i < 10; i++ {
		publish(t, c, "v1/devices/me/telemetry", fmt.Sprintf(`{"ts":%d,"values":{"n":%d}}`, old+int64(i), i))
	}
	for i := 0; i < 3; i++ {
		publish(t, c, "v1/devices/me/attributes", fmt.Sprintf(`{"a":%d}`, i))
	}
	c.Disconnect(100)
	clock.mono.Store(int64(2 * time.Hour))
	d.stop() // the bridge stores its checkpoint: 5 records upstream

	// Run 2: retention may run every microsecond from the start, with
	// every record past its age by the log's clock and by the wall clock.
	// Right after the log opens, start waits until a retention pass has
	// completed (the second pass began: nothing else calls the clock's Now
	// before devices connect) or, where retention cannot run yet, a while:
	// whatever the scheduler does, a pass that is allowed to run before the
	// holds are set has run by then.
	clock2 := newShiftedClock()
	clock2.wall.Store(int64(2 * time.Hour))
	waited := func(*commitlog.Log) {
		for deadline := time.Now().Add(300 * time.Millisecond); clock2.nows.Load() < 2 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}
	d = startDaemonOpts(t, dataDir, bridgeYAML, append(env, "FERRY_LOG_RETENTION_INTERVAL=1us"),
		startOptions{logOpts: []commitlog.Option{commitlog.WithClock(clock2)}, afterOpen: waited})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		stored, written := d.span("attributes")
		if written == 3 && stored == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("attributes past retention still stored (%d of %d): retention did not run", stored, written)
		}
	}
	if stored, written := d.span("telemetry"); written != 10 || stored < 5 {
		t.Fatalf("telemetry: %d of %d records stored after the restart, want at least the 5 not yet upstream", stored, written)
	}
	if recs := d.records("telemetry"); len(recs) < 5 || !strings.Contains(string(recs[len(recs)-1].Value), `"n":9`) {
		t.Fatalf("telemetry records after the restart: %+v", recs)
	}
}

// TestDaemonConfigDevicesAreConfigOwned: the configuration is the source
// of truth for the devices it lists. The API refuses to change or delete
// them (so a restart never silently undoes an API edit), a changed entry
// takes effect at the next start, and devices the API created, or that
// the configuration no longer lists, are the API's and survive restarts.
func TestDaemonConfigDevicesAreConfigOwned(t *testing.T) {
	dataDir := t.TempDir()
	d := startDaemon(t, dataDir, "")
	var e struct {
		Error string `json:"error"`
	}
	if code := d.api("PUT", "/api/v1/devices/boiler-1", map[string]any{"token": "NEW"}, &e); code != 409 ||
		!strings.Contains(e.Error, "devices[0]") {
		t.Fatalf("PUT of a configured device: %d %q, want 409 naming devices[0]", code, e.Error)
	}
	if code := d.api("DELETE", "/api/v1/devices/boiler-2", nil, &e); code != 409 || !strings.Contains(e.Error, "devices[1]") {
		t.Fatalf("DELETE of a configured device: %d %q, want 409 naming devices[1]", code, e.Error)
	}
	if code := d.api("POST", "/api/v1/devices", map[string]any{"name": "boiler-1", "token": "NEW"}, nil); code != 409 {
		t.Fatalf("POST of a configured device's name: %d", code)
	}
	if code := d.api("POST", "/api/v1/devices", map[string]any{"name": "api-dev", "token": "API1"}, nil); code != 201 {
		t.Fatalf("POST api-dev: %d", code)
	}
	if code := d.api("PUT", "/api/v1/devices/api-dev", map[string]any{"token": "API2", "type": "meter"}, nil); code != 200 {
		t.Fatalf("PUT api-dev: %d", code)
	}
	connectDevice(t, d, "TOKEN1").Disconnect(100) // unchanged by the refused PUT
	d.stop()

	// Restart with boiler-1's token changed and boiler-2 no longer listed.
	d = startDaemonEnv(t, dataDir, "", []string{`FERRY_DEVICES=[{name: boiler-1, token: TOKEN1B, type: boiler}]`})
	connectDevice(t, d, "TOKEN1B").Disconnect(100)
	if _, tok := mqttClient(t, d.broker(), "TOKEN1", "old-token", nil); tok.Error() == nil {
		t.Fatal("boiler-1's old token still accepted after the configuration changed it")
	}
	connectDevice(t, d, "API2").Disconnect(100) // the API's edit of its own device stayed
	var dev deviceJSON
	if code := d.api("GET", "/api/v1/devices/api-dev", nil, &dev); code != 200 || dev.Type != "meter" || dev.Source != "api" {
		t.Fatalf("api-dev after restart: %d %+v", code, dev)
	}
	if code := d.api("PUT", "/api/v1/devices/boiler-2", map[string]any{"token": "TOKEN2B"}, nil); code != 200 {
		t.Fatalf("PUT of a device the configuration no longer lists: %d", code)
	}
	if code := d.api("DELETE", "/api/v1/devices/boiler-2", nil, nil); code != 204 {
		t.Fatalf("DELETE of a device the configuration no longer lists: %d", code)
	}
	if code := d.api("PUT", "/api/v1/devices/boiler-1", map[string]any{"token": "X"}, nil); code != 409 {
		t.Fatalf("PUT of boiler-1 after restart: %d", code)
	}
}
