package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// Client-side RPC: a device asks, a backend answers.
//
// ThingsBoard hands a device's client-side RPC request
// (v1/devices/me/rpc/request/{id}) to its rule engine; Ferry's equivalent
// is the log. A request Ferry does not answer itself (getSessionLimits)
// is appended to the requests topic, and the device's PUBACK waits for it
// to be durable:
//
//	key     the device name
//	value   {"device":"boiler-1","id":7,"method":"getTime","params":{...}}
//	headers device, device_type
//
// A backend (any Kafka client, or the HTTP API) answers by producing to
// the replies topic, keyed by the device name:
//
//	{"device":"boiler-1","id":7,"response":{...}}    → the device gets {...}
//	{"device":"boiler-1","id":7,"error":"no clock"}  → the device gets {"error":"no clock"}
//
// ("device" may be left out when the record's key names the device.) The
// answer goes to the connection that asked, on the response topic of the
// request's topic family (v1/devices/me/rpc/response/{id}, v2/r/res/{id},
// ...). A request nobody answers within the timeout gets
// {"error":"timeout: ..."}. Pending requests live in memory: one pending
// across a restart of Ferry times out on the device's side, as it does
// across a restart of ThingsBoard's transport. Replies are read from the
// end of the replies topic as it was when Ferry started.

// ClientRPCConfig turns on forwarding client-side RPC to a backend.
type ClientRPCConfig struct {
	Requests, Replies *commitlog.Topic
	Timeout           time.Duration // default 60 s, ThingsBoard's CLIENT_SIDE_RPC_TIMEOUT
}

// ErrNoPendingRPC: no client-side RPC of that device and id waits for an
// answer (never asked, answered already, or timed out).
var ErrNoPendingRPC = errors.New("mqtt: no client-side RPC of that device and id is waiting")

type clientKey struct {
	device string
	id     int64
}

type clientCall struct {
	s     *session
	topic string // the response topic for the request's topic family
	timer *time.Timer
}

// clientRPC is the forwarding state: pending requests and the readers of
// the replies topic.
type clientRPC struct {
	srv *Server
	cfg ClientRPCConfig

	mu      sync.Mutex
	pending map[clientKey]*clientCall // guarded by mu

	cancel context.CancelFunc
	wg     sync.WaitGroup // one reader per replies partition
}

// StartClientRPC forwards client-side RPC requests to cfg.Requests and
// delivers the answers found in cfg.Replies. Call it after Start; Close
// stops it.
func (srv *Server) StartClientRPC(cfg ClientRPCConfig) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Minute
	}
	c := &clientRPC{srv: srv, cfg: cfg, pending: map[clientKey]*clientCall{}}
	ctx, cancel := context.WithCancel(srv.ctx)
	c.cancel = cancel
	for _, p := range cfg.Replies.Partitions() {
		c.wg.Add(1)
		go c.read(ctx, p, p.HighWatermark())
	}
	srv.crpc.Store(c)
}

// stop ends the readers and fails nothing: pending devices time out.
func (c *clientRPC) stop() {
	c.cancel()
	c.wg.Wait()
	c.mu.Lock()
	for k, call := range c.pending {
		call.timer.Stop()
		delete(c.pending, k)
	}
	c.mu.Unlock()
}

// forward appends a device's request to the requests topic and waits for
// its answer; the PUBACK waits for the append.
func (c *clientRPC) forward(s *session, pk *pub, t tb.Topic, req tb.RPCRequest, start time.Time) {
	value, _ := json.Marshal(struct {
		Device string          `json:"device"`
		ID     int64           `json:"id"`
		Method string          `json:"method"`
		Params json.RawMessage `json:"params"`
	}{s.device.Name, t.RequestID, req.Method, req.Params})
	rec := commitlog.Record{Key: []byte(s.device.Name), Value: value, Timestamp: start.UnixMilli(), Headers: RecordHeaders(s.device, "")}
	k := clientKey{s.device.Name, t.RequestID}
	call := &clientCall{s: s, topic: tb.ResponseTopic(t)}
	call.timer = time.AfterFunc(c.cfg.Timeout, func() { c.expire(k, call) })
	c.mu.Lock()
	if old := c.pending[k]; old != nil { // the device reused an id: the newer request wins
		old.timer.Stop()
	}
	c.pending[k] = call
	c.mu.Unlock()
	c.srv.metrics.ClientRPC.WithLabelValues("forwarded").Inc()
	fut := c.cfg.Requests.Append(s.appendCtx, []commitlog.Record{rec})
	s.enqueue(ackItem{packetID: pk.id, qos: pk.qos, fut: fut, start: start})
}

func (c *clientRPC) expire(k clientKey, call *clientCall) {
	c.mu.Lock()
	if c.pending[k] != call {
		c.mu.Unlock()
		return
	}
	delete(c.pending, k)
	c.mu.Unlock()
	c.srv.metrics.ClientRPC.WithLabelValues("timeout").Inc()
	b, _ := json.Marshal(map[string]string{"error": fmt.Sprintf("timeout: no backend answered within %v", c.cfg.Timeout)})
	c.srv.reply(call.s, call.topic, b)
}

// answer delivers payload to the device's pending request id.
func (c *clientRPC) answer(device string, id int64, payload []byte) error {
	k := clientKey{device, id}
	c.mu.Lock()
	call := c.pending[k]
	delete(c.pending, k)
	c.mu.Unlock()
	if call == nil {
		c.srv.metrics.ClientRPC.WithLabelValues("unmatched_reply").Inc()
		return fmt.Errorf("%w: %s id %d", ErrNoPendingRPC, device, id)
	}
	call.timer.Stop()
	c.srv.metrics.ClientRPC.WithLabelValues("answered").Inc()
	if err := call.s.publish(call.topic, payload); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrDeviceOffline, device, err)
	}
	return nil
}

// AnswerClientRPC answers a device's pending client-side RPC request id
// with payload (any JSON), as a reply record would (the HTTP API).
func (srv *Server) AnswerClientRPC(device string, id int64, payload json.RawMessage) error {
	c := srv.crpc.Load()
	if c == nil {
		return fmt.Errorf("%w: client-side RPC forwarding is off", ErrNoPendingRPC)
	}
	return c.answer(device, id, payload)
}

// read delivers the reply records of one partition from offset on.
func (c *clientRPC) read(ctx context.Context, p *commitlog.Partition, offset int64) {
	defer c.wg.Done()
	for ctx.Err() == nil {
		recs, next, _, err := p.ReadRecords(offset, 256<<10)
		switch {
		case errors.Is(err, commitlog.ErrOffsetOutOfRange):
			offset = p.StartOffset() // retention passed us: go on from the oldest kept
			continue
		case err != nil:
			c.srv.limiter.Warn(c.srv.logger, "client_rpc_read", "mqtt: reading client-side RPC replies", "err", err)
			if errors.Is(err, commitlog.ErrClosed) || errors.Is(err, commitlog.ErrUnknownTopic) {
				return
			}
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
				return
			}
			continue
		}
		for _, r := range recs {
			c.deliver(r)
		}
		if next > offset {
			offset = next
			continue
		}
		if p.Wait(ctx, offset) != nil {
			return
		}
	}
}

// deliver decodes one reply record and answers its request.
func (c *clientRPC) deliver(r commitlog.Record) {
	var v struct {
		Device   string          `json:"device"`
		ID       *int64          `json:"id"`
		Response json.RawMessage `json:"response"`
		Error    *string         `json:"error"`
	}
	if err := json.Unmarshal(r.Value, &v); err != nil || v.ID == nil || (v.Response == nil && v.Error == nil) {
		c.srv.metrics.ClientRPC.WithLabelValues("invalid_reply").Inc()
		c.srv.limiter.Warn(c.srv.logger, "client_rpc_invalid", "mqtt: a client-side RPC reply is not {\"id\":..,\"response\":..} or {\"id\":..,\"error\":..}: skipped",
			"offset", r.Offset, "key", truncate(string(r.Key), 64))
		return
	}
	device := v.Device
	if device == "" {
		device = string(r.Key)
	}
	payload := []byte(v.Response)
	if v.Error != nil {
		payload, _ = json.Marshal(map[string]string{"error": *v.Error})
	}
	if err := c.answer(device, *v.ID, payload); err != nil {
		c.srv.logger.Debug("mqtt: client-side RPC reply not delivered", "device", device, "id", strconv.FormatInt(*v.ID, 10), "err", err)
	}
}
