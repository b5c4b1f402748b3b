package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/ferry-iot/ferry/broker/testkit"
)

// The adversarial tests attack the daemon binary (the process users run,
// so its resident set is its own) the way a hostile device on the plant
// network would, with the default caps, and after each attack check that a
// legitimate device and a legitimate Kafka client still get in within a
// second and that the daemon's resident set stayed under memory_limit +
// 16 MiB.

// rssCeilingKiB is the default memory_limit (48 MiB) + 16 MiB.
const rssCeilingKiB = (48 + 16) << 10

// hostile is a daemon child process under attack.
type hostile struct {
	cmd                *exec.Cmd
	mqtt, kafka, httpA string
	log                *syncBuffer
	peakKiB            int64 // largest resident set seen by checkRSS
	seq                int
}

// startHostile starts the daemon binary with the defaults but for loopback
// listeners, a SASL user on the Kafka listener, devices and extra YAML.
func startHostile(t *testing.T, extra string) *hostile {
	t.Helper()
	return startHostileEnv(t, extra, nil)
}

// startHostileEnv is startHostile with FERRY_* variables; prefix (e.g.
// prlimit) runs the daemon.
func startHostileEnv(t *testing.T, extra string, env []string, prefix ...string) *hostile {
	t.Helper()
	h := &hostile{mqtt: freePort(t), kafka: freePort(t), httpA: freePort(t), log: &syncBuffer{}}
	cfg := fmt.Sprintf(`data_dir: %s
mqtt: {listen: %q}
http: {listen: %q, admin_token: %s}
kafka:
  listen: %q
  sasl_users: [{username: backend, password: s3cret}]
devices:
  - {name: boiler-1, token: TOKEN1}
log: {min_free_ratio: 0}
logging: {level: warn}
%s`, t.TempDir(), h.mqtt, h.httpA, adminToken, h.kafka, extra)
	file := filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append(prefix, daemonBinary(t), "--config", file)
	h.cmd = exec.Command(args[0], args[1:]...)
	h.cmd.Env = append(os.Environ(), env...)
	h.cmd.Stdout, h.cmd.Stderr = h.log, h.log
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- h.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("daemon exit: %v\n%s", err, h.log.String())
			}
		case <-time.After(30 * time.Second):
			h.cmd.Process.Kill()
			<-done
			t.Errorf("daemon did not stop:\n%s", h.log.String())
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; {
		if c, err := net.DialTimeout("tcp", h.httpA, 200*time.Millisecond); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not start:\n%s", h.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.checkLegit(t, "start")
	return h
}

// checkLegit connects a legitimate device that publishes at QoS 1 and a
// legitimate Kafka client that produces and reads back, each within a
// second, then checks the resident set.
func (h *hostile) checkLegit(t *testing.T, after string) {
	t.Helper()
	h.seq++
	start := time.Now()
	opts := paho.NewClientOptions().AddBroker("tcp://" + h.mqtt).SetClientID(fmt.Sprintf("legit-%d", h.seq)).
		SetUsername("TOKEN1").SetAutoReconnect(false).SetProtocolVersion(4).SetConnectTimeout(time.Second)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(time.Second) || tok.Error() != nil {
		t.Fatalf("after %s: a legitimate device could not connect within a second: %v\n%s", after, tok.Error(), h.log.String())
	}
	tok := c.Publish("v1/devices/me/telemetry", 1, false, fmt.Sprintf(`{"legit":%d}`, h.seq))
	ok := tok.WaitTimeout(time.Second-time.Since(start)) && tok.Error() == nil
	c.Disconnect(0)
	if !ok {
		t.Fatalf("after %s: a legitimate device's publish was not acknowledged within a second of connecting: %v", after, tok.Error())
	}

	start = time.Now()
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.kafka), kgo.SASL(plain.Auth{User: "backend", Pass: "s3cret"}.AsMechanism()),
		kgo.DefaultProduceTopic("telemetry"), kgo.RequestRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte("legit"), Value: []byte(strconv.Itoa(h.seq))}).FirstErr(); err != nil {
		t.Fatalf("after %s: a legitimate Kafka client could not produce within a second: %v (%v)", after, err, time.Since(start))
	}
	h.checkRSS(t, after)
}

// checkRSS fails the test when the daemon's resident set ever passed the
// ceiling (its peak, VmHWM, so a spike between two checks counts too).
func (h *hostile) checkRSS(t *testing.T, after string) {
	t.Helper()
	_, peak := rssKiB(h.cmd.Process.Pid)
	h.peakKiB = peak
	if peak == 0 || peak > rssCeilingKiB {
		t.Fatalf("after %s: peak resident set %d KiB, ceiling %d KiB (memory_limit + 16 MiB)", after, peak, rssCeilingKiB)
	}
}

// metric reads one sample of the daemon's /metrics (always open).
func (h *hostile) metric(t *testing.T, line string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + h.httpA + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(l, line+" "); ok {
			v, _ := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v
		}
	}
	t.Fatalf("metric %s not exported", line)
	return 0
}

// healthy reads /healthz and fails the test unless it says ok.
func (h *hostile) healthy(t *testing.T, after string) {
	t.Helper()
	resp, err := http.Get("http://" + h.httpA + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after %s: /healthz %d %s", after, resp.StatusCode, raw)
	}
}

// swarm holds attacking sockets.
type swarm struct {
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
	stop  chan struct{}
}

func newSwarm(t *testing.T) *swarm {
	s := &swarm{stop: make(chan struct{})}
	t.Cleanup(s.close)
	return s
}

// dial opens n sockets to addr; with write, each runs it in a goroutine
// the swarm owns (until it fails or the swarm closes).
func (s *swarm) dial(t *testing.T, addr string, n int, write func(c net.Conn)) []net.Conn {
	t.Helper()
	var out []net.Conn
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		s.mu.Lock()
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		out = append(out, c)
		if write != nil {
			s.wg.Go(func() { write(c) })
		}
	}
	return out
}

// open dials n sockets to addr, writing first to each.
func (s *swarm) open(t *testing.T, addr string, n int, first []byte) {
	t.Helper()
	for _, c := range s.dial(t, addr, n, nil) {
		if len(first) > 0 {
			c.Write(first) // may fail once the daemon closed it: that is its answer
		}
	}
}

// stream opens n sockets that each write head and then body bytes of
// zeros as fast as the daemon takes them, until it closes them or the
// swarm closes.
func (s *swarm) stream(t *testing.T, addr string, n int, head []byte, body int) {
	t.Helper()
	chunk := make([]byte, 64<<10)
	s.dial(t, addr, n, func(c net.Conn) {
		if _, err := c.Write(head); err != nil {
			return
		}
		for sent := 0; sent < body; sent += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
}

// drip opens n sockets that each write b one byte per interval until the
// swarm closes (slowloris).
func (s *swarm) drip(t *testing.T, addr string, n int, b []byte, interval time.Duration) {
	t.Helper()
	s.dial(t, addr, n, func(c net.Conn) {
		for j := 0; ; j = (j + 1) % len(b) {
			if _, err := c.Write(b[j : j+1]); err != nil {
				return
			}
			select {
			case <-s.stop:
				return
			case <-time.After(interval):
			}
		}
	})
}

// closedByPeer counts the swarm's sockets the daemon has closed.
func (s *swarm) closedByPeer() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.conns {
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeoutErr(err) {
			n++
		}
	}
	return n
}

func isTimeoutErr(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func (s *swarm) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
	s.mu.Unlock()
	s.wg.Wait()
}

// kafkaFrame is a size-prefixed frame claiming size bytes, with body.
func kafkaFrame(size int32, body []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(size))
	return append(b, body...)
}

// mqttConnectHeader is the fixed header of a CONNECT declaring n bytes.
func mqttConnectHeader(n int) []byte {
	b := []byte{0x10}
	for {
		x := byte(n % 128)
		n /= 128
		if n > 0 {
			x |= 0x80
		}
		b = append(b, x)
		if n == 0 {
			return b
		}
	}
}

// TestAdversarial runs the attacks one after another against one daemon.
func TestAdversarial(t *testing.T) {
	if testing.Short() {
		t.Skip("adversarial: skipped in -short mode")
	}
	h := startHostile(t, "")
	attacks := []struct {
		name string
		run  func(t *testing.T, s *swarm)
	}{
		{"mqtt half-open flood (3,000 sockets, no CONNECT)", func(t *testing.T, s *swarm) {
			s.open(t, h.mqtt, 3000, nil)
		}},
		{"mqtt slowloris (200 sockets dripping a CONNECT)", func(t *testing.T, s *swarm) {
			s.drip(t, h.mqtt, 200, append(mqttConnectHeader(200), bytes.Repeat([]byte{0}, 200)...), 200*time.Millisecond)
		}},
		{"mqtt oversized CONNECT (128 KiB declared and sent, 300 sockets)", func(t *testing.T, s *swarm) {
			s.stream(t, h.mqtt, 300, mqttConnectHeader(128<<10), 128<<10)
		}},
		{"mqtt garbage (500 sockets)", func(t *testing.T, s *swarm) {
			s.open(t, h.mqtt, 500, bytes.Repeat([]byte{0xff, 0x00, 0x7f}, 1000))
		}},
		{"kafka pre-auth 16 MiB frames (30 sockets sending them)", func(t *testing.T, s *swarm) {
			s.stream(t, h.kafka, 30, kafkaFrame(16<<20, nil), 16<<20)
		}},
		{"kafka connection flood (1,100 sockets, nothing sent)", func(t *testing.T, s *swarm) {
			s.open(t, h.kafka, 1100, nil)
		}},
		{"kafka slowloris (200 sockets dripping a frame)", func(t *testing.T, s *swarm) {
			s.drip(t, h.kafka, 200, kafkaFrame(10000, make([]byte, 100)), 200*time.Millisecond)
		}},
		{"kafka oversized and malformed frames (200 sockets)", func(t *testing.T, s *swarm) {
			s.open(t, h.kafka, 100, kafkaFrame(1<<30, nil))
			s.open(t, h.kafka, 100, kafkaFrame(12, []byte{0x7f, 0x7f, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff}))
		}},
		{"http slowloris (300 sockets dripping headers)", func(t *testing.T, s *swarm) {
			s.drip(t, h.httpA, 300, []byte("GET /api/v1/topics HTTP/1.1\r\nHost: x\r\nX-A: "+strings.Repeat("a", 100)), 200*time.Millisecond)
		}},
		{"http connection flood (1,000 sockets) and oversized headers (50)", func(t *testing.T, s *swarm) {
			s.open(t, h.httpA, 1000, nil)
			s.open(t, h.httpA, 50, []byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("b", 200<<10)+"\r\n\r\n"))
		}},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			s := newSwarm(t)
			a.run(t, s)
			time.Sleep(300 * time.Millisecond) // the daemon handles what arrived
			// During the attack: the sockets are still open (or cut).
			h.checkLegit(t, a.name)
			h.healthy(t, a.name)
			s.close()
			h.checkLegit(t, a.name+", once it stopped")
		})
	}
	t.Logf("peak resident set during the attacks: %d KiB (ceiling %d KiB)", h.peakKiB, rssCeilingKiB)
	if n := h.metric(t, `ferry_listener_evicted_total{listener="mqtt"}`); n == 0 {
		t.Error("no MQTT socket was evicted: the half-open flood did not reach the pending cap")
	}
	// The 30 unauthenticated 16 MiB frames fit the pending cap (64) and are
	// each refused by size; of the 100 oversized ones some may be evicted
	// by the pending cap before their frame is read.
	if n := h.metric(t, `ferry_kafka_malformed_total{reason="frame_size"}`); n < 30 {
		t.Errorf("oversized Kafka frames refused: %v, want at least 30", n)
	}
}

// TestAdversarialConnectionCap: authenticated devices past
// mqtt.max_connections are refused with a CONNACK code while the connected
// ones keep working; once they leave, a device gets in again at once.
func TestAdversarialConnectionCap(t *testing.T) {
	if testing.Short() {
		t.Skip("adversarial: skipped in -short mode")
	}
	const capN = 20
	h := startHostileEnv(t, "", []string{fmt.Sprintf("FERRY_MQTT_MAX_CONNECTIONS=%d", capN)})
	connect := func(i int) (paho.Client, error) {
		opts := paho.NewClientOptions().AddBroker("tcp://" + h.mqtt).SetClientID(fmt.Sprintf("fleet-%d", i)).
			SetUsername("TOKEN1").SetAutoReconnect(false).SetProtocolVersion(4).SetConnectTimeout(5 * time.Second)
		c := paho.NewClient(opts)
		tok := c.Connect()
		tok.WaitTimeout(5 * time.Second)
		return c, tok.Error()
	}
	var fleet []paho.Client
	for i := 0; i < capN; i++ {
		c, err := connect(i)
		if err != nil {
			t.Fatalf("device %d of %d: %v", i, capN, err)
		}
		fleet = append(fleet, c)
	}
	for i := capN; i < capN+10; i++ {
		_, err := connect(i)
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "unavailable") {
			t.Fatalf("device %d past the cap of %d: %v, want refused (server unavailable)", i, capN, err)
		}
	}
	if n := h.metric(t, `ferry_mqtt_rejected_total{reason="connect_max_connections"}`); n != 10 {
		t.Fatalf("refusals counted %v, want 10", n)
	}
	for i, c := range fleet {
		if tok := c.Publish("v1/devices/me/telemetry", 1, false, `{"n":1}`); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("connected device %d cannot publish at the cap: %v", i, tok.Error())
		}
	}
	h.checkRSS(t, "the cap")
	for _, c := range fleet {
		c.Disconnect(50)
	}
	time.Sleep(200 * time.Millisecond)
	h.checkLegit(t, "the fleet left")
}

// TestAdversarialDescriptors: under a low descriptor limit
// (RLIMIT_NOFILE 1024, hard), neither route that used to run the daemon
// out of descriptors does: 1,100 sockets that never send CONNECT (the
// pending cap closes the oldest), and Kafka CreateTopics of 19 × 1,024
// partitions (log.max_partitions: POLICY_VIOLATION). The listeners keep
// accepting all along.
func TestAdversarialDescriptors(t *testing.T) {
	if testing.Short() {
		t.Skip("adversarial: skipped in -short mode")
	}
	prlimit := testkit.NeedTool(t, "prlimit", "util-linux")
	h := startHostileEnv(t, "", nil, prlimit, "--nofile=1024:1024")
	if !strings.Contains(h.log.String(), "open-file limit is below") {
		t.Errorf("no warning that the caps allow more descriptors than the limit:\n%s", h.log.String())
	}

	s := newSwarm(t)
	s.open(t, h.mqtt, 1100, nil)
	time.Sleep(300 * time.Millisecond)
	h.checkLegit(t, "1,100 sockets without CONNECT")
	h.healthy(t, "1,100 sockets without CONNECT")
	if n := s.closedByPeer(); n < 1100-128 {
		t.Fatalf("%d of 1,100 idle sockets closed, want all but the pending cap (128)", n)
	}
	s.close()

	adm, err := kgo.NewClient(kgo.SeedBrokers(h.kafka), kgo.SASL(plain.Auth{User: "backend", Pass: "s3cret"}.AsMechanism()))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topics := make([]string, 19)
	for i := range topics {
		topics[i] = fmt.Sprintf("flood-%d", i)
	}
	resps, err := kadm.NewClient(adm).CreateTopics(ctx, 1024, 1, nil, topics...)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resps.Sorted() {
		if !errors.Is(r.Err, kerr.PolicyViolation) || !strings.Contains(r.ErrMessage, "partitions limit") {
			t.Fatalf("CreateTopics %s × 1024 partitions: %v %q, want POLICY_VIOLATION naming the partitions limit", r.Topic, r.Err, r.ErrMessage)
		}
	}
	h.checkLegit(t, "CreateTopics of 19 × 1,024 partitions")
	h.healthy(t, "CreateTopics of 19 × 1,024 partitions")
	for _, l := range []string{"mqtt", "kafka", "http"} {
		if n := h.metric(t, fmt.Sprintf(`ferry_listener_accept_errors_total{listener=%q}`, l)); n != 0 {
			t.Errorf("%s: %v failed accepts, want 0 (the caps hold the descriptors)", l, n)
		}
	}
}

// TestAdversarialAcceptExhausted: with caps above a low descriptor limit
// (RLIMIT_NOFILE 256, pending cap 1,000), idle sockets do run the daemon
// out of descriptors. The MQTT listener keeps retrying instead of dying,
// /healthz (asked over a connection opened before) reports it as not
// accepting with the reason, and once the sockets go it accepts again by
// itself.
func TestAdversarialAcceptExhausted(t *testing.T) {
	if testing.Short() {
		t.Skip("adversarial: skipped in -short mode")
	}
	prlimit := testkit.NeedTool(t, "prlimit", "util-linux")
	h := startHostileEnv(t, "", []string{"FERRY_MQTT_MAX_PENDING=1000", "FERRY_MQTT_CONNECT_TIMEOUT=120s"},
		prlimit, "--nofile=256:256")
	// One keep-alive connection to the HTTP API, opened while descriptors
	// are free.
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer hc.CloseIdleConnections()
	health := func() (int, string) {
		resp, err := hc.Get("http://" + h.httpA + "/healthz")
		if err != nil {
			t.Fatalf("healthz: %v", err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}
	if code, body := health(); code != http.StatusOK {
		t.Fatalf("healthz before: %d %s", code, body)
	}
	s := newSwarm(t)
	s.open(t, h.mqtt, 300, nil)
	var code int
	var body string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if code, body = health(); code == http.StatusServiceUnavailable {
			break
		}
	}
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "mqtt on") || !strings.Contains(body, "too many open files") {
		t.Fatalf("healthz out of descriptors: %d %s", code, body)
	}
	s.close()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if code, body = health(); code == http.StatusOK {
			break
		}
	}
	if code != http.StatusOK {
		t.Fatalf("healthz after the sockets closed: %d %s", code, body)
	}
	h.checkLegit(t, "running out of descriptors")
	if n := h.metric(t, `ferry_listener_accept_errors_total{listener="mqtt"}`); n == 0 {
		t.Fatal("no failed accept counted")
	}
	if !strings.Contains(h.log.String(), "accept failed, retrying") {
		t.Fatalf("the failing accepts were not logged:\n%s", h.log.String())
	}
}
