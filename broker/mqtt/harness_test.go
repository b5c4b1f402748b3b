package mqtt

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
	"github.com/ferry-iot/ferry/broker/registry"
	"github.com/ferry-iot/ferry/broker/state"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// env is a broker over an in-memory log and registry.
type env struct {
	t       *testing.T
	srv     *Server
	log     *commitlog.Log
	reg     *registry.Registry
	st      *state.Store
	metrics *Metrics
}

type envOption func(*Config, *[]commitlog.Option)

func withLogFS(fs vfs.FS) envOption {
	return func(_ *Config, o *[]commitlog.Option) { *o = append(*o, commitlog.WithFS(fs)) }
}

func withConfig(fn func(*Config)) envOption {
	return func(c *Config, _ *[]commitlog.Option) { fn(c) }
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	cfg := Config{Listen: "127.0.0.1:0", Logger: quiet(), Provisioning: Provisioning{Key: "pkey", Secret: "psecret"}}
	logOpts := []commitlog.Option{commitlog.WithFS(vfs.NewMem()), commitlog.WithLogger(quiet())}
	for _, o := range opts {
		o(&cfg, &logOpts)
	}
	e := &env{t: t}
	e.metrics = NewMetrics(prometheus.NewRegistry())
	cfg.Metrics = e.metrics
	var err error
	if e.st, err = state.Open("", state.WithInMemory(), state.WithLogger(quiet())); err != nil {
		t.Fatal(err)
	}
	if e.reg, err = registry.Open(e.st); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.reg.Put(registry.Device{Name: "boiler-1", Type: "boiler"}, registry.Credentials{Token: "TOKEN1"}))
	must(e.reg.Put(registry.Device{Name: "boiler-2", Type: "boiler"}, registry.Credentials{Token: "TOKEN2"}))
	must(e.reg.Put(registry.Device{Name: "basic-1"}, registry.Credentials{ClientID: "cid", Username: "user", Password: "pass"}))
	must(e.reg.Put(registry.Device{Name: "gw-1", Gateway: true}, registry.Credentials{Token: "GWTOKEN"}))
	if e.log, err = commitlog.Open("/log", logOpts...); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"telemetry", "attributes"} {
		if _, err := e.log.CreateTopic(name, commitlog.TopicConfig{Partitions: 2}); err != nil {
			t.Fatal(err)
		}
	}
	if e.srv, err = New(cfg, e.reg, e.log); err != nil {
		t.Fatal(err)
	}
	must(e.srv.Start())
	t.Cleanup(e.close)
	return e
}

func (e *env) close() {
	if err := e.srv.Close(); err != nil {
		e.t.Errorf("close broker: %v", err)
	}
	e.log.Close()
	e.st.Close()
}

// records returns every record of a log topic, all partitions, by offset.
func (e *env) records(topic string) []commitlog.Record {
	e.t.Helper()
	tp, err := e.log.Topic(topic)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []commitlog.Record
	for _, p := range tp.Partitions() {
		for off := p.StartOffset(); off < p.HighWatermark(); {
			recs, next, _, err := p.ReadRecords(off, 1<<20)
			if err != nil {
				e.t.Fatal(err)
			}
			out = append(out, recs...)
			off = next
		}
	}
	return out
}

func (e *env) rejected(reason string) float64 {
	return testutil.ToFloat64(e.metrics.Rejected.WithLabelValues(reason))
}

// client is a minimal MQTT client built on mochi's packet codec, so tests
// control exactly what goes on the wire and see every packet that comes
// back, in order.
type client struct {
	t       *testing.T
	conn    net.Conn
	r       *bufio.Reader
	version byte
	nextID  uint16
}

type connectOpts struct {
	version            byte // 4 (3.1.1) or 5
	clientID, username string
	password           *string
}

func dial(t *testing.T, addr net.Addr, o connectOpts) (*client, packets.Packet) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if o.version == 0 {
		o.version = 4
	}
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn), version: o.version}
	t.Cleanup(func() { conn.Close() })
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: o.version,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: o.clientID}}
	if o.version == 3 {
		pk.Connect.ProtocolName = []byte("MQIsdp")
	}
	if o.username != "" {
		pk.Connect.UsernameFlag, pk.Connect.Username = true, []byte(o.username)
	}
	if o.password != nil {
		pk.Connect.PasswordFlag, pk.Connect.Password = true, []byte(*o.password)
	}
	c.write(pk)
	ack, err := c.read(5 * time.Second)
	if err != nil {
		t.Fatalf("no CONNACK: %v", err)
	}
	return c, ack
}

func connectToken(t *testing.T, e *env, token string, version byte) *client {
	t.Helper()
	c, ack := dial(t, e.srv.Addr(), connectOpts{version: version, clientID: "c-" + token, username: token})
	if ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("connect %s: %+v", token, ack)
	}
	return c
}

func (c *client) write(pk packets.Packet) {
	c.t.Helper()
	pk.ProtocolVersion = c.version
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Pubrel:
		err = pk.PubrelEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	default:
		c.t.Fatalf("test client cannot encode %v", pk.FixedHeader.Type)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.conn.Write(buf.Bytes()); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read returns the next packet, or an error on timeout or a closed
// connection (io.EOF).
func (c *client) read(timeout time.Duration) (packets.Packet, error) {
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	var pk packets.Packet
	hb, err := c.r.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, err
	}
	n, mult := 0, 1
	for {
		b, err := c.r.ReadByte()
		if err != nil {
			return pk, err
		}
		n += int(b&127) * mult
		if b&128 == 0 {
			break
		}
		mult *= 128
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return pk, err
	}
	pk.ProtocolVersion = c.version
	pk.FixedHeader.Remaining = n
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	}
	return pk, err
}

// expect reads packets until one of type typ arrives (answering server
// publishes is left to the caller: they are returned too when typ is
// Publish).
func (c *client) expect(typ byte) packets.Packet {
	c.t.Helper()
	for {
		pk, err := c.read(10 * time.Second)
		if err != nil {
			c.t.Fatalf("waiting for packet type %d: %v", typ, err)
		}
		if pk.FixedHeader.Type == typ {
			return pk
		}
	}
}

// expectClosed asserts the server closes the connection (after an optional
// DISCONNECT) without sending another PUBACK.
func (c *client) expectClosed() {
	c.t.Helper()
	for {
		pk, err := c.read(10 * time.Second)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				c.t.Fatal("connection still open")
			}
			return
		}
		if pk.FixedHeader.Type == packets.Puback {
			c.t.Fatalf("unexpected PUBACK %d (code %#x) before the connection closed", pk.PacketID, pk.ReasonCode)
		}
		if pk.FixedHeader.Type == packets.Disconnect && c.version < 5 {
			c.t.Fatalf("DISCONNECT (code %#x) sent to an MQTT %d client: MQTT 3.x has no server DISCONNECT", pk.ReasonCode, c.version)
		}
	}
}

func (c *client) publish(topic string, payload string, qos byte) uint16 {
	c.t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, TopicName: topic, Payload: []byte(payload)}
	if qos > 0 {
		c.nextID++
		pk.PacketID = c.nextID
	}
	c.write(pk)
	return pk.PacketID
}

// publishAck publishes at QoS 1 and returns the PUBACK's reason code.
func (c *client) publishAck(topic, payload string) byte {
	c.t.Helper()
	id := c.publish(topic, payload, 1)
	ack := c.expect(packets.Puback)
	if ack.PacketID != id {
		c.t.Fatalf("PUBACK for %d, expected %d", ack.PacketID, id)
	}
	return ack.ReasonCode
}

func (c *client) subscribe(filters ...string) []byte {
	c.t.Helper()
	c.nextID++
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: c.nextID}
	for _, f := range filters {
		pk.Filters = append(pk.Filters, packets.Subscription{Filter: f, Qos: 1})
	}
	c.write(pk)
	return c.expect(packets.Suback).ReasonCodes
}

// valuesOf decodes a telemetry record value.
func valuesOf(t *testing.T, rec commitlog.Record) (int64, map[string]any) {
	t.Helper()
	var v struct {
		Ts     int64          `json:"ts"`
		Values map[string]any `json:"values"`
	}
	dec := json.NewDecoder(bytes.NewReader(rec.Value))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("record value %q: %v", rec.Value, err)
	}
	return v.Ts, v.Values
}

func header(rec commitlog.Record, key string) string {
	for _, h := range rec.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// newTestLogger writes text logs to w (for counting log lines).
func newTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(&lockedWriter{w: w}, nil))
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// request publishes at QoS 1 and waits for both the server's response
// PUBLISH and the PUBACK of the request, which may come in either order.
func (c *client) request(topic, payload string) packets.Packet {
	c.t.Helper()
	id := c.publish(topic, payload, 1)
	var resp packets.Packet
	acked, answered := false, false
	for !acked || !answered {
		pk, err := c.read(10 * time.Second)
		if err != nil {
			c.t.Fatalf("request %s: %v", topic, err)
		}
		switch {
		case pk.FixedHeader.Type == packets.Puback && pk.PacketID == id:
			acked = true
		case pk.FixedHeader.Type == packets.Publish && !answered:
			resp, answered = pk, true
		default:
			c.t.Fatalf("request %s: unexpected packet %v id %d", topic, pk.FixedHeader.Type, pk.PacketID)
		}
	}
	return resp
}

// ack answers a server publish received at QoS 1.
func (c *client) ack(pk packets.Packet) {
	c.t.Helper()
	if pk.FixedHeader.Qos == 1 {
		c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
	}
}

// nextPublish returns the next server PUBLISH, acknowledging it, and fails
// on any PUBACK or other packet before it (callers expect a downlink here).
func (c *client) nextPublish() packets.Packet {
	c.t.Helper()
	for {
		pk, err := c.read(10 * time.Second)
		if err != nil {
			c.t.Fatalf("waiting for a server publish: %v", err)
		}
		switch pk.FixedHeader.Type {
		case packets.Publish:
			c.ack(pk)
			return pk
		case packets.Suback, packets.Pingresp:
		default:
			c.t.Fatalf("packet type %d (id %d) before the expected server publish", pk.FixedHeader.Type, pk.PacketID)
		}
	}
}

// expectAck reads the next packet, which must be the PUBACK of id, and
// returns its reason code.
func (c *client) expectAck(id uint16) byte {
	c.t.Helper()
	pk, err := c.read(10 * time.Second)
	if err != nil {
		c.t.Fatalf("waiting for PUBACK %d: %v", id, err)
	}
	if pk.FixedHeader.Type != packets.Puback || pk.PacketID != id {
		c.t.Fatalf("packet type %d id %d (topic %q %s), want PUBACK %d", pk.FixedHeader.Type, pk.PacketID, pk.TopicName, pk.Payload, id)
	}
	return pk.ReasonCode
}
