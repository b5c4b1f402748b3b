package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// tbState is what the test broker saw and how it behaves. It outlives
// broker restarts, so a test can check what reached "storage" across them.
type tbState struct {
	provisionKey, provisionSecret string
	sendRPC                       bool          // send one RPC request to each device that subscribes
	publishDelay                  time.Duration // hold telemetry this long before the PUBACK

	mu struct {
		sync.Mutex
		telemetry map[string][][]byte // client id → payloads, in arrival order
		firstCopy map[string][]int    // client id → seqs stored from a first send (DUP=0)
		attrs     map[string]int      // client id → attribute updates
		rpcSent   map[string]string   // client id → RPC request id
		rpcReply  map[string][]byte   // client id → reply payload
		replyID   map[string]string   // client id → request id the reply was for
		issued    map[string]bool     // tokens issued by provisioning
		logins    map[string]int      // user name → accepted logins
		rpcNext   int
	}
}

func newTBState() *tbState {
	s := &tbState{provisionKey: "prov-key", provisionSecret: "prov-secret"}
	s.mu.telemetry = map[string][][]byte{}
	s.mu.firstCopy = map[string][]int{}
	s.mu.attrs = map[string]int{}
	s.mu.rpcSent = map[string]string{}
	s.mu.rpcReply = map[string][]byte{}
	s.mu.replyID = map[string]string{}
	s.mu.issued = map[string]bool{}
	s.mu.logins = map[string]int{}
	return s
}

// seqs returns the seq of every telemetry message client id sent, in
// arrival order (duplicates included).
func (s *tbState) seqs(t *testing.T, id string) []int {
	t.Helper()
	s.mu.Lock()
	payloads := s.mu.telemetry[id]
	s.mu.Unlock()
	out := make([]int, 0, len(payloads))
	for _, p := range payloads {
		out = append(out, seqOf(t, p))
	}
	return out
}

// total counts telemetry messages received from all devices.
func (s *tbState) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, p := range s.mu.telemetry {
		n += len(p)
	}
	return n
}

// tbHook plays the parts of ThingsBoard's device API the simulator uses.
type tbHook struct {
	mqtt.HookBase
	st *tbState
}

func (h *tbHook) ID() string { return "thingsboard-test" }

func (h *tbHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnSubscribed, mqtt.OnPublish}, []byte{b})
}

// OnConnectAuthenticate accepts "provision", "sim-token-*" and tokens
// that provisioning issued.
func (h *tbHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	user := string(pk.Connect.Username)
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	ok := user == provisionUsername || strings.HasPrefix(user, "sim-token-") || h.st.mu.issued[user]
	if ok {
		h.st.mu.logins[user]++
	}
	return ok
}

func (h *tbHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

// OnSubscribed sends one RPC request to a device the first time it
// subscribes the RPC filter (before the SUBACK, as the hook runs first).
func (h *tbHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	if !h.st.sendRPC {
		return
	}
	for _, f := range pk.Filters {
		if f.Filter != filterRPCRequest {
			continue
		}
		h.st.mu.Lock()
		_, sent := h.st.mu.rpcSent[cl.ID]
		id := fmt.Sprint(h.st.mu.rpcNext)
		if !sent {
			h.st.mu.rpcNext++
			h.st.mu.rpcSent[cl.ID] = id
		}
		h.st.mu.Unlock()
		if !sent {
			h.send(cl, topicRPCRequest+id, []byte(`{"method":"setGpio","params":{"pin":4,"enabled":true}}`))
		}
	}
}

func (h *tbHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch {
	case pk.TopicName == topicProvisionRequest:
		h.send(cl, topicProvisionResponse, h.provision(pk.Payload))
	case pk.TopicName == topicTelemetry:
		// Store, then PUBACK (mochi writes it when the hook returns); a
		// broker shut down while it holds a message loses it unacked.
		time.Sleep(h.st.publishDelay)
		if cl.Closed() {
			return pk, packets.ErrRejectPacket
		}
		h.st.mu.Lock()
		h.st.mu.telemetry[cl.ID] = append(h.st.mu.telemetry[cl.ID], pk.Payload)
		if !pk.FixedHeader.Dup {
			h.st.mu.firstCopy[cl.ID] = append(h.st.mu.firstCopy[cl.ID], seqOfPayload(pk.Payload))
		}
		h.st.mu.Unlock()
	case pk.TopicName == topicAttributes:
		h.st.mu.Lock()
		h.st.mu.attrs[cl.ID]++
		h.st.mu.Unlock()
	case strings.HasPrefix(pk.TopicName, topicRPCResponse):
		h.st.mu.Lock()
		h.st.mu.rpcReply[cl.ID] = pk.Payload
		h.st.mu.replyID[cl.ID] = strings.TrimPrefix(pk.TopicName, topicRPCResponse)
		h.st.mu.Unlock()
	}
	return pk, nil
}

func (h *tbHook) provision(payload []byte) []byte {
	var req struct {
		DeviceName string `json:"deviceName"`
		Key        string `json:"provisionDeviceKey"`
		Secret     string `json:"provisionDeviceSecret"`
	}
	if json.Unmarshal(payload, &req) != nil || req.Key != h.st.provisionKey || req.Secret != h.st.provisionSecret {
		return []byte(`{"errorMsg":"Provision data was not found!","status":"NOT_FOUND"}`)
	}
	token := "prov-token-" + req.DeviceName
	h.st.mu.Lock()
	h.st.mu.issued[token] = true
	h.st.mu.Unlock()
	return fmt.Appendf(nil, `{"credentialsType":"ACCESS_TOKEN","credentialsValue":%q,"status":"SUCCESS"}`, token)
}

// send writes a QoS 0 PUBLISH to this client only, as ThingsBoard answers
// one session (a broker-wide publish would reach every subscriber).
func (h *tbHook) send(cl *mqtt.Client, topic string, payload []byte) {
	_ = cl.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   topic,
		Payload:     payload,
	})
}

// testBroker is a mochi server on a loopback port.
type testBroker struct {
	srv  *mqtt.Server
	ln   net.Listener
	addr string
	once sync.Once
}

// startBroker serves st on addr ("127.0.0.1:0" for a fresh port); the
// broker stops at the end of the test unless stopped before.
func startBroker(t testing.TB, addr string, st *tbState) *testBroker {
	t.Helper()
	var ln net.Listener
	var err error
	for range 50 { // a restarted broker may race the old socket's close
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(&tbHook{st: st}, nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewNet("t1", ln)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	b := &testBroker{srv: srv, ln: ln, addr: ln.Addr().String()}
	t.Cleanup(b.stop)
	return b
}

func (b *testBroker) url() string { return "tcp://" + b.addr }

// stop closes the listener before the clients, so that no client
// reconnects into a closing server (mochi closes clients first; #541).
func (b *testBroker) stop() {
	b.once.Do(func() {
		_ = b.ln.Close()
		_ = b.srv.Close()
	})
}

// seqOfPayload extracts "seq" in the broker, where there is no *testing.T
// to fail; -1 when the payload has none (the test then fails elsewhere).
func seqOfPayload(payload []byte) int {
	var probe struct {
		Seq    *int `json:"seq"`
		Values struct {
			Seq *int `json:"seq"`
		} `json:"values"`
	}
	var list []json.RawMessage
	if json.Unmarshal(payload, &list) != nil {
		list = []json.RawMessage{payload}
	}
	for _, e := range list {
		probe.Seq, probe.Values.Seq = nil, nil
		if json.Unmarshal(e, &probe) == nil {
			if probe.Seq != nil {
				return *probe.Seq
			}
			if probe.Values.Seq != nil {
				return *probe.Values.Seq
			}
		}
	}
	return -1
}

// seqOf extracts "seq" from a telemetry payload of any shape.
func seqOf(t *testing.T, payload []byte) int {
	t.Helper()
	values, _ := decodeTelemetry(t, payload)
	seq, ok := values["seq"].(json.Number)
	if !ok {
		t.Fatalf("no seq in %s", payload)
	}
	n, err := seq.Int64()
	if err != nil {
		t.Fatalf("seq %v: %v", seq, err)
	}
	return int(n)
}

// decodeTelemetry parses a payload by ThingsBoard's rules (an object, or
// an array of objects; an object with "ts" and "values" carries its own
// timestamp) and returns all key/values merged, failing on a key that
// appears twice, plus the timestamps seen.
func decodeTelemetry(t *testing.T, payload []byte) (map[string]any, []int64) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var root any
	if err := dec.Decode(&root); err != nil {
		t.Fatalf("invalid JSON %s: %v", payload, err)
	}
	if dec.More() {
		t.Fatalf("trailing data after JSON in %s", payload)
	}
	var objects []map[string]any
	switch r := root.(type) {
	case map[string]any:
		objects = append(objects, r)
	case []any:
		for _, e := range r {
			o, ok := e.(map[string]any)
			if !ok {
				t.Fatalf("array element %v is not an object in %s", e, payload)
			}
			objects = append(objects, o)
		}
	default:
		t.Fatalf("root is neither object nor array: %s", payload)
	}
	merged := map[string]any{}
	var stamps []int64
	for _, o := range objects {
		kv := o
		if ts, hasTS := o["ts"]; hasTS {
			values, ok := o["values"].(map[string]any)
			if !ok || len(o) != 2 {
				t.Fatalf("ts object without a values object: %s", payload)
			}
			n, err := ts.(json.Number).Int64()
			if err != nil {
				t.Fatalf("ts %v: %v", ts, err)
			}
			stamps = append(stamps, n)
			kv = values
		}
		for k, v := range kv {
			if _, dup := merged[k]; dup {
				t.Fatalf("key %q twice in %s", k, payload)
			}
			merged[k] = v
		}
	}
	return merged, stamps
}
