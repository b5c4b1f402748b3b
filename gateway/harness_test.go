package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"
)

func signalNotify(c chan os.Signal) { signal.Notify(c, os.Interrupt, syscall.SIGTERM) }

func TestMain(m *testing.M) {
	// The daemon probes its state store in a child process of its own
	// binary; here that binary is this test binary, run as the daemon.
	probeCommand = func(dir string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "GATEWAY_E2E_DAEMON=1", "GATEWAY_E2E_ARGS=--probe-state "+dir)
		return cmd
	}
	// The restart test runs the daemon as a child process: this binary,
	// started with GATEWAY_E2E_DAEMON=1, is the daemon.
	if os.Getenv("GATEWAY_E2E_DAEMON") == "1" {
		os.Exit(run(strings.Fields(os.Getenv("GATEWAY_E2E_ARGS")), os.Environ(), os.Stdout, os.Stderr))
	}
	if addr := os.Getenv("GATEWAY_E2E_MOCHI"); addr != "" { // the benchmarks' baseline broker
		os.Exit(runPlainMochi(addr))
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreTopFunction("github.com/eclipse/paho.mqtt.golang.(*router).matchAndDispatch.func1")); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

const adminToken = "test-admin-token"

// baseConfig is the YAML every e2e daemon starts from; %s is the data dir.
const baseConfig = `
data_dir: %s
mqtt:
  listen: "127.0.0.1:0"
http:
  listen: "127.0.0.1:0"
  admin_token: ` + adminToken + `
kafka:
  listen: "127.0.0.1:0"
devices:
  - {name: boiler-1, token: TOKEN1, type: boiler}
  - {name: boiler-2, token: TOKEN2, type: boiler}
  - {name: plc-gw, token: GWTOKEN, gateway: true}
  - {name: sim-device-0, token: sim-token-0}
  - {name: sim-device-1, token: sim-token-1}
provisioning: {key: pkey, secret: psecret}
rpc:
  timeout: 10s
log:
  min_free_ratio: 0
  topics:
    telemetry: {partitions: 3}
logging: {level: error}
`

type daemon struct {
	*Daemon
	t       *testing.T
	dataDir string
}

// startDaemon runs the gateway in-process on free loopback ports; extra is
// appended to the YAML.
func startDaemon(t *testing.T, dataDir, extra string) *daemon {
	t.Helper()
	return startDaemonEnv(t, dataDir, extra, nil)
}

// startDaemonEnv is startDaemon with FERRY_* environment overrides.
func startDaemonEnv(t *testing.T, dataDir, extra string, env []string) *daemon {
	t.Helper()
	return startDaemonLogged(t, dataDir, extra, env, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// startDaemonLogged is startDaemonEnv with the daemon's logger.
func startDaemonLogged(t *testing.T, dataDir, extra string, env []string, logger *slog.Logger) *daemon {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	file := filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf(baseConfig, dataDir)+extra), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(file, env)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Start(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	dm := &daemon{Daemon: d, t: t, dataDir: dataDir}
	t.Cleanup(func() { dm.stop() })
	return dm
}

func (d *daemon) stop() {
	if d.Daemon != nil {
		if err := d.Daemon.Close(); err != nil {
			d.t.Errorf("daemon close: %v", err)
		}
		d.Daemon = nil
	}
}

func (d *daemon) broker() string { return "tcp://" + d.MQTTAddr().String() }

// api calls the HTTP API and decodes the JSON answer into out (if not nil).
func (d *daemon) api(method, path string, body any, out any) int {
	d.t.Helper()
	return d.apiAuth(method, path, body, out, adminToken)
}

func (d *daemon) apiAuth(method, path string, body any, out any, token string) int {
	d.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		buf, _ := json.Marshal(b)
		r = bytes.NewReader(buf)
	}
	req, _ := http.NewRequest(method, "http://"+d.HTTPAddr().String()+path, r)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			d.t.Fatalf("%s %s: %d %q: %v", method, path, resp.StatusCode, raw, err)
		}
	}
	return resp.StatusCode
}

// apiRecord is a record as GET .../records returns it.
type apiRecord struct {
	Partition int32             `json:"partition"`
	Offset    int64             `json:"offset"`
	Timestamp int64             `json:"timestamp"`
	Key       *string           `json:"key"`
	Value     json.RawMessage   `json:"value"`
	Headers   map[string]string `json:"headers"`
}

// records reads every record of a topic through the HTTP API.
func (d *daemon) records(topic string) []apiRecord {
	d.t.Helper()
	return topicRecords(d.t, topic, func(path string) (int, []byte) {
		var raw json.RawMessage
		code := d.api("GET", path, nil, &raw)
		return code, raw
	})
}

// topicRecords reads every record of a topic, page by page, through the
// HTTP API; get makes one GET (status and body).
func topicRecords(t testing.TB, topic string, get func(path string) (int, []byte)) []apiRecord {
	t.Helper()
	var info struct {
		Partitions []struct {
			Partition   int32 `json:"partition"`
			StartOffset int64 `json:"start_offset"`
			EndOffset   int64 `json:"end_offset"`
		} `json:"partitions"`
	}
	code, body := get("/api/v1/topics/" + topic)
	if code != http.StatusOK {
		t.Fatalf("topic %s: %d %s", topic, code, body)
	}
	if err := json.Unmarshal(body, &info); err != nil {
		t.Fatalf("topic %s: %v", topic, err)
	}
	var out []apiRecord
	for _, p := range info.Partitions {
		for off := p.StartOffset; off < p.EndOffset; {
			var page struct {
				Records []apiRecord `json:"records"`
				Next    int64       `json:"next_offset"`
			}
			code, body := get(fmt.Sprintf("/api/v1/topics/%s/records?partition=%d&offset=%d&limit=500", topic, p.Partition, off))
			if code != http.StatusOK {
				t.Fatalf("records: %d %s", code, body)
			}
			if err := json.Unmarshal(body, &page); err != nil {
				t.Fatalf("records: %v", err)
			}
			out = append(out, page.Records...)
			if page.Next <= off {
				break
			}
			off = page.Next
		}
	}
	return out
}

// metric returns the value of one sample line of /metrics, e.g.
// `ferry_kafka_groups{state="Stable"}` (labels in the exposition's order,
// which is alphabetical). A missing line fails the test: a check of a
// value must not pass because the metric is not exported at all.
func (d *daemon) metric(line string) float64 {
	d.t.Helper()
	v, ok := d.metricValue(line)
	if !ok {
		d.t.Fatalf("metric %s not exported", line)
	}
	return v
}

// metricValue is metric without the failure: ok is false when the line is
// missing.
func (d *daemon) metricValue(line string) (float64, bool) {
	d.t.Helper()
	v, ok := scrapeMetrics(d.t, d.HTTPAddr().String())[line]
	return v, ok
}

// scrapeMetrics reads the /metrics of the daemon at httpAddr into sample
// line (name{labels}) → value; a line whose value does not parse fails.
func scrapeMetrics(tb testing.TB, httpAddr string) map[string]float64 {
	tb.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	m := map[string]float64{}
	for _, l := range strings.Split(string(raw), "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if i < 0 || err != nil {
			tb.Fatalf("metrics: %q: %v", l, err)
		}
		m[l[:i]] = v
	}
	return m
}

// mqttClient connects a paho (MQTT 3.1.1) client as a device.
func mqttClient(t *testing.T, broker, username, clientID string, onLost func(error)) (paho.Client, paho.Token) {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker(broker).SetClientID(clientID).SetUsername(username).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetOrderMatters(false).
		SetProtocolVersion(4) // no silent retry with MQTT 3.1 after a refusal
	if onLost != nil {
		opts.SetConnectionLostHandler(func(_ paho.Client, err error) { onLost(err) })
	}
	c := paho.NewClient(opts)
	tok := c.Connect()
	tok.WaitTimeout(10 * time.Second)
	t.Cleanup(func() {
		if c.IsConnected() {
			c.Disconnect(100)
		}
	})
	return c, tok
}

func connectDevice(t *testing.T, d *daemon, token string) paho.Client {
	t.Helper()
	c, tok := mqttClient(t, d.broker(), token, "dev-"+token, nil)
	if tok.Error() != nil {
		t.Fatalf("connect %s: %v", token, tok.Error())
	}
	return c
}

func publish(t *testing.T, c paho.Client, topic, payload string) {
	t.Helper()
	tok := c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// freePort returns a loopback address nobody listens on (for a daemon that
// must come back on the same address after a restart).
func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
