package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/ferry-iot/ferry/broker/testkit"
)

// TestCrossArchitectures builds the daemon for the boards Ferry ships to —
// linux/arm64 (Raspberry Pi 3/4/5 with a 64-bit OS, most ARM gateways) and
// linux/arm GOARM=7 (32-bit Raspberry Pi OS, where badger's default options
// corrupt data) — and runs each binary under qemu user-mode emulation:
//
//  1. start with a config file; a device publishes QoS 1 telemetry (many in
//     flight) and a client attribute; a device is added through the API;
//  2. SIGKILL (no clean shutdown) and start again: the log recovers on that
//     architecture, badger reopens, every acknowledged data point is in the
//     log exactly once, and the device added through the API can log in;
//  3. SIGTERM: the daemon exits 0 and says it stopped cleanly.
//
// It needs Debian's qemu-user-static (scripts/test.sh installs it).
func TestCrossArchitectures(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-architecture test: skipped in -short mode")
	}
	for _, arch := range []struct {
		name, goarch, goarm, qemu string
	}{
		{"arm64", "arm64", "", "qemu-aarch64-static"},
		{"armv7", "arm", "7", "qemu-arm-static"},
	} {
		t.Run(arch.name, func(t *testing.T) {
			qemu := testkit.NeedTool(t, arch.qemu, "qemu-user-static")
			bin := filepath.Join(t.TempDir(), "ferry-"+arch.name)
			build := exec.Command(goTool(t), "build", "-o", bin, ".")
			build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch.goarch, "GOARM="+arch.goarm,
				"GOFLAGS=-buildvcs=false")
			if out, err := build.CombinedOutput(); err != nil {
				t.Fatalf("go build for %s: %v\n%s", arch.name, err, out)
			}
			runEmulated(t, qemu, bin)
		})
	}
}

func goTool(t testing.TB) string {
	t.Helper()
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	p, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("go tool not found")
	}
	return p
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func runEmulated(t *testing.T, qemu, bin string) {
	dataDir := t.TempDir()
	cfgFile := filepath.Join(t.TempDir(), "ferry.yaml")
	cfg := fmt.Sprintf(`data_dir: %s
mqtt: {listen: "127.0.0.1:0"}
http: {listen: "127.0.0.1:0", admin_token: %s}
kafka: {listen: "127.0.0.1:0"}
devices:
  - {name: pi-sensor, token: PI-TOKEN, type: thermometer}
log: {min_free_ratio: 0}
logging: {level: warn}
`, dataDir, adminToken)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	p := startEmulated(t, qemu, bin, cfgFile)
	c, tok := mqttClient(t, "tcp://"+p.mqtt, "PI-TOKEN", "pi-sensor", nil)
	if tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	const n = 300
	var toks []paho.Token
	for i := range n {
		toks = append(toks, c.Publish("v1/devices/me/telemetry", 1, false, fmt.Sprintf(`{"seq":%d,"temperature":21.5}`, i)))
	}
	for i, tk := range toks {
		if !tk.WaitTimeout(60*time.Second) || tk.Error() != nil {
			t.Fatalf("publish %d: not acknowledged: %v", i, tk.Error())
		}
	}
	publish(t, c, "v1/devices/me/attributes", `{"firmware":"1.4.2"}`)
	if code, body := p.call("POST", "/api/v1/devices", `{"name":"pi-added","token":"ADDED-TOKEN"}`); code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("create device: %d %s", code, body)
	}
	c.Disconnect(0)

	p.kill() // no clean shutdown: recovery runs on this architecture
	p = startEmulated(t, qemu, bin, cfgFile)

	seen := map[int]int{}
	for _, r := range p.records(t, "telemetry") {
		var v struct {
			Values struct {
				Seq int `json:"seq"`
			} `json:"values"`
		}
		if err := json.Unmarshal(r.Value, &v); err != nil {
			t.Fatalf("record %d/%d: %v: %s", r.Partition, r.Offset, err, r.Value)
		}
		if r.Key == nil || *r.Key != "pi-sensor" || r.Headers["device_type"] != "thermometer" {
			t.Fatalf("record %d/%d: key %v headers %v", r.Partition, r.Offset, r.Key, r.Headers)
		}
		seen[v.Values.Seq]++
	}
	for i := range n { // every one was acknowledged
		if seen[i] != 1 {
			t.Fatalf("acknowledged data point %d is in the log %d times after SIGKILL and restart", i, seen[i])
		}
	}
	if attrs := p.records(t, "attributes"); len(attrs) != 1 || !strings.Contains(string(attrs[0].Value), `"firmware":"1.4.2"`) {
		t.Fatalf("attributes after restart: %+v", attrs)
	}
	c2, tok := mqttClient(t, "tcp://"+p.mqtt, "ADDED-TOKEN", "pi-added", nil)
	if tok.Error() != nil {
		t.Fatalf("device added through the API cannot log in after the restart: %v", tok.Error())
	}
	c2.Disconnect(0)

	if out := p.stop(t); !strings.Contains(out, "stopped cleanly") {
		t.Fatalf("SIGTERM: no clean stop:\n%s", out)
	}
}

// emulated is one run of the daemon under qemu.
type emulated struct {
	cmd              *exec.Cmd
	mqtt, http, kafk string
	mu               sync.Mutex
	out              bytes.Buffer // stdout and stderr
	done             chan struct{}
}

// listenLine is one listener of the daemon's start-up banner.
var listenLine = regexp.MustCompile(`^  (MQTT|Kafka|HTTP API) {2,}(\S+)`)

func startEmulated(t *testing.T, qemu, bin, cfgFile string) *emulated {
	t.Helper()
	p := &emulated{done: make(chan struct{})}
	p.cmd = exec.Command(qemu, bin, "--config", cfgFile)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = writerFunc(func(b []byte) (int, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.out.Write(b)
	})
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrs := make(chan []string, 1)
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		found := map[string]string{}
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.out.WriteString(line + "\n")
			p.mu.Unlock()
			if m := listenLine.FindStringSubmatch(line); m != nil && len(found) < 3 {
				found[m[1]] = m[2]
				if len(found) == 3 {
					addrs <- []string{found["MQTT"], found["Kafka"], found["HTTP API"]}
				}
			}
		}
		_ = p.cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	select {
	case a := <-addrs:
		p.mqtt, p.kafk, p.http = a[0], a[1], a[2]
	case <-p.done:
		t.Fatalf("daemon exited before it listened:\n%s", p.output())
	case <-time.After(120 * time.Second):
		t.Fatalf("daemon did not start within 120 s under emulation:\n%s", p.output())
	}
	return p
}

func (p *emulated) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *emulated) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and returns the output once the process exited 0.
func (p *emulated) stop(t *testing.T) string {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("no exit within 60 s of SIGTERM:\n%s", p.output())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM:\n%s", code, p.output())
	}
	return p.output()
}

func (p *emulated) call(method, path, body string) (int, string) {
	req, _ := http.NewRequest(method, "http://"+p.http+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// records reads a whole topic through the HTTP API.
func (p *emulated) records(t *testing.T, topic string) []apiRecord {
	t.Helper()
	return topicRecords(t, topic, func(path string) (int, []byte) {
		code, body := p.call("GET", path, "")
		return code, []byte(body)
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
