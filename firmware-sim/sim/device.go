package sim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Topics of the ThingsBoard device API (v1).
const (
	topicTelemetry   = "v1/devices/me/telemetry"
	topicAttributes  = "v1/devices/me/attributes"
	topicRPCRequest  = "v1/devices/me/rpc/request/"  // + {id}
	topicRPCResponse = "v1/devices/me/rpc/response/" // + {id}
	filterRPCRequest = topicRPCRequest + "+"
)

// Timing. MaxReconnectInterval is in config.go.
const (
	connectTimeout    = 5 * time.Second
	writeTimeout      = 10 * time.Second // paho's wait to hand a packet to its writer
	keepAlive         = 30 * time.Second
	ackTimeout        = 10 * time.Second // SUBACK, provisioning PUBACK and answer
	drainGrace        = 2 * time.Second  // after ctx ends, wait this long for acks in flight
	disconnectQuiesce = 250              // milliseconds, for paho's Disconnect
	pollInterval      = 100 * time.Millisecond
	// stopTimeout bounds the wait for paho to finish a Disconnect that
	// came during a reconnect attempt: up to two backoff sleeps plus the
	// attempt itself, with some slack.
	stopTimeout = 2*MaxReconnectInterval + connectTimeout + 5*time.Second
	rpcQueue    = 16 // RPC requests waiting for the device goroutine
	// rpcLinger is how long a device that answers RPC stays connected
	// after its last message.
	rpcLinger = 200 * time.Millisecond
)

// kind is what a tracked publish carries.
type kind uint8

const (
	kindTelemetry kind = iota
	kindAttributes
	kindRPC
)

type rpcRequest struct {
	id      string
	payload []byte
}

// device is one simulated board. Its goroutine (run) owns the paho client
// and every goroutine the device starts: one waiter per publish token in
// flight. paho's handlers only touch atomics, mu and buffered channels,
// never block, and never call into paho.
type device struct {
	idx  int
	name string
	cfg  *Config
	st   *stats
	log  *slog.Logger

	client  mqtt.Client // the logged-in client; set and used by the device goroutine
	lastSeq int         // last telemetry seq sent; device goroutine only

	// epoch changes whenever a connection may have been replaced: before
	// every reconnect attempt (OnReconnecting, called synchronously by
	// paho's reconnect loop) and when paho lists its store to resume (the
	// first thing resume() does, before it re-sends stored messages and
	// completes their old tokens with nil). A token that completes in a
	// later epoch than it was published in is not proof of a PUBACK.
	epoch    atomic.Uint64
	connects atomic.Int64 // successful connections of the logged-in client

	mu struct {
		sync.Mutex
		up      bool // connection open, as far as the handlers know
		stopped bool // shutting down: handlers no longer touch the counters
	}

	reconnected chan struct{}   // cap 1: OnConnect after a reconnect asks for a re-subscribe
	rpc         chan rpcRequest // cap rpcQueue: requests from paho's router
	rpcDropped  atomic.Int64    // requests that found rpc full
	slots       chan struct{}   // cap Inflight: holds one entry per unacknowledged publish
	abandon     chan struct{}   // closed once paho has stopped; waiters stop waiting
	waiters     sync.WaitGroup  // one per publish token being waited for
}

func newDevice(idx int, cfg *Config, st *stats) *device {
	name := fmt.Sprintf(cfg.DeviceNameFormat, idx)
	return &device{
		idx:         idx,
		name:        name,
		cfg:         cfg,
		st:          st,
		log:         cfg.Logger.With("device", name),
		reconnected: make(chan struct{}, 1),
		rpc:         make(chan rpcRequest, rpcQueue),
		slots:       make(chan struct{}, cfg.Inflight),
		abandon:     make(chan struct{}),
	}
}

// run provisions if asked, connects, publishes until Messages are sent or
// ctx ends, and returns once the client and all waiters have stopped. It
// returns an error only for a failure that retrying cannot fix.
func (d *device) run(ctx context.Context, startDelay time.Duration) error {
	if !sleepCtx(ctx, startDelay) {
		return nil
	}
	token := fmt.Sprintf(d.cfg.TokenFormat, d.idx)
	if d.cfg.Provision {
		t, err := d.provision(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		token = t
	}
	opts := d.options(token).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(MaxReconnectInterval).
		SetOnConnectHandler(d.onConnect).
		SetReconnectingHandler(d.onReconnecting).
		SetConnectionLostHandler(d.onConnectionLost)
	client, err := d.connect(ctx, opts, func() mqtt.Store {
		return &epochStore{OrderedMemoryStore: mqtt.NewOrderedMemoryStore(), epoch: &d.epoch}
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	d.client = client
	d.markUp(true)
	d.subscribe(ctx)
	finished := d.publishLoop(ctx)
	if finished && d.cfg.AnswerRPC {
		// Stay a moment after the last message, as a real device stays
		// connected: an RPC request already on its way gets answered.
		linger := time.NewTimer(rpcLinger)
		d.await(ctx, linger.C, false)
		linger.Stop()
	}
	d.shutdown(ctx, finished)
	return nil
}

// options are the paho options every connection of the device shares.
// CleanSession is true, as ThingsBoard keeps no sessions; so
// subscriptions are re-made after every reconnect.
func (d *device) options(username string) *mqtt.ClientOptions {
	return mqtt.NewClientOptions().
		AddBroker(d.cfg.Broker).
		SetClientID(d.name).
		SetUsername(username).
		SetProtocolVersion(4). // MQTT 3.1.1, no silent fallback to 3.1
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false). // connect retries the first connect itself, ctx-aware
		SetConnectTimeout(connectTimeout).
		SetWriteTimeout(writeTimeout).
		SetKeepAlive(keepAlive).
		SetOrderMatters(true) // handlers run in paho's router goroutine; ours never block
}

// connect makes the first connection, retrying with exponential backoff
// (1 s doubling to MaxReconnectInterval, with jitter) while the broker is
// unreachable or unavailable. Every attempt uses a fresh client, because
// paho warns against reusing one. newStore, if set, gives each its store.
func (d *device) connect(ctx context.Context, opts *mqtt.ClientOptions, newStore func() mqtt.Store) (mqtt.Client, error) {
	backoff := time.Second
	for {
		if newStore != nil {
			opts.SetStore(newStore())
		}
		client := mqtt.NewClient(opts)
		tok := client.Connect()
		<-tok.Done() // bounded by connectTimeout; paho's connect goroutine ends with it
		err := tok.Error()
		if err == nil {
			return client, nil
		}
		code := tok.(*mqtt.ConnectToken).ReturnCode()
		if !connectRetryable(code) {
			return nil, &RefusedError{Device: d.idx, Code: code}
		}
		level := slog.LevelDebug
		if backoff == time.Second { // the first failure says why nothing happens
			level = slog.LevelWarn
		}
		d.log.Log(ctx, level, "connect failed, retrying with backoff", "broker", d.cfg.Broker, "err", err)
		if !sleepCtx(ctx, jitter(backoff)) {
			return nil, ctx.Err()
		}
		backoff = min(2*backoff, MaxReconnectInterval)
	}
}

// onConnect runs (in its own goroutine, started by paho) after every
// successful connection.
func (d *device) onConnect(mqtt.Client) {
	if d.connects.Add(1) > 1 {
		d.st.reconnects.Add(1)
		d.log.Info("reconnected")
		select {
		case d.reconnected <- struct{}{}:
		default: // a re-subscribe is already pending
		}
	}
	d.markUp(true)
}

// onReconnecting runs synchronously in paho's reconnect loop before each
// attempt, so before resume() can complete any old token.
func (d *device) onReconnecting(mqtt.Client, *mqtt.ClientOptions) {
	d.epoch.Add(1)
	d.markUp(false)
}

func (d *device) onConnectionLost(_ mqtt.Client, err error) {
	d.markUp(false)
	d.log.Warn("connection lost", "err", err)
}

// markUp keeps the shared Connected gauge in step with this device.
func (d *device) markUp(up bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mu.stopped || d.mu.up == up {
		return
	}
	d.mu.up = up
	if up {
		d.st.connected.Add(1)
	} else {
		d.st.connected.Add(-1)
	}
}

// subscribe (re-)makes the RPC subscription on the current connection.
func (d *device) subscribe(ctx context.Context) {
	if !d.cfg.AnswerRPC {
		return
	}
	tok := d.client.Subscribe(filterRPCRequest, d.cfg.wireQoS(), d.onRPC)
	if err := waitToken(ctx, tok, ackTimeout); err != nil {
		if ctx.Err() == nil {
			d.log.Warn("subscribe failed; retried after the next reconnect", "filter", filterRPCRequest, "err", err)
		}
		return
	}
	if code := tok.(*mqtt.SubscribeToken).Result()[filterRPCRequest]; code > 2 {
		d.log.Warn("subscription refused", "filter", filterRPCRequest, "code", code)
	}
}

// onRPC runs in paho's router goroutine: it only queues the request.
func (d *device) onRPC(_ mqtt.Client, m mqtt.Message) {
	id, ok := strings.CutPrefix(m.Topic(), topicRPCRequest)
	if !ok || id == "" {
		return
	}
	select {
	case d.rpc <- rpcRequest{id: id, payload: bytes.Clone(m.Payload())}:
	default:
		d.rpcDropped.Add(1)
	}
}

// answer publishes the reply to one RPC request. Replies do not take an
// Inflight slot, so a slow broker cannot make them wait behind telemetry.
func (d *device) answer(req rpcRequest) {
	epoch := d.epoch.Load()
	// Refused at once (the connection just dropped): the server times the
	// request out, as ThingsBoard does when a device goes away mid-RPC.
	_ = d.publish(kindRPC, topicRPCResponse+req.id, rpcReply(d.idx, d.lastSeq, req.payload), -1, epoch, false)
}

// publishLoop sends telemetry (and attributes) until Messages are sent,
// reporting true, or ctx ends, reporting false.
func (d *device) publishLoop(ctx context.Context) bool {
	var tick <-chan time.Time
	if d.cfg.Rate > 0 {
		t := time.NewTicker(max(time.Duration(float64(time.Second)/d.cfg.Rate), time.Microsecond))
		defer t.Stop()
		tick = t.C
	}
	for seq := 0; d.cfg.Messages == 0 || seq < d.cfg.Messages; {
		if tick != nil && !d.await(ctx, tick, false) {
			return false
		}
		if !d.await(ctx, nil, true) {
			return false
		}
		// Read the epoch before checking the connection: if it drops
		// after the check, the reconnect changes the epoch after this read.
		epoch := d.epoch.Load()
		if !d.client.IsConnectionOpen() {
			<-d.slots // give the slot back and wait for the connection
			if !d.awaitConnection(ctx) {
				return false
			}
			continue
		}
		shape := d.cfg.Shapes[seq%len(d.cfg.Shapes)]
		if !d.publish(kindTelemetry, topicTelemetry, Telemetry(shape, d.idx, seq, time.Now()), seq, epoch, true) {
			<-d.slots // the connection dropped after the check: same reading again once it is back
			if !d.awaitConnection(ctx) {
				return false
			}
			continue
		}
		d.lastSeq = seq
		seq++
		if every := d.cfg.AttributesEvery; every > 0 && seq%every == 0 {
			if !d.await(ctx, nil, true) {
				return false
			}
			if !d.publish(kindAttributes, topicAttributes, Attributes(d.idx, seq-1), seq-1, d.epoch.Load(), true) {
				<-d.slots // the next update carries the attributes' current values
			}
		}
	}
	return true
}

// await waits for a value from recv or, with slot, for a free Inflight
// slot (taking it). Meanwhile it answers RPC requests and re-subscribes
// after reconnects. It reports false when ctx ends.
func (d *device) await(ctx context.Context, recv <-chan time.Time, slot bool) bool {
	var slots chan struct{}
	if slot {
		slots = d.slots
	}
	for {
		select {
		case <-ctx.Done():
			return false
		case <-recv:
			return true
		case slots <- struct{}{}:
			return true
		case <-d.reconnected:
			d.subscribe(ctx)
		case req := <-d.rpc:
			d.answer(req)
		}
	}
}

// awaitConnection waits until the connection is open again.
func (d *device) awaitConnection(ctx context.Context) bool {
	t := time.NewTimer(pollInterval)
	defer t.Stop()
	for !d.client.IsConnectionOpen() {
		if !d.await(ctx, t.C, false) {
			return false
		}
		t.Reset(pollInterval)
	}
	return true
}

// publish hands one message to paho and starts its waiter. slot says
// whether the caller took an Inflight slot for it. It reports false, with
// nothing counted and nothing started, when paho refused the message at
// once because the connection had just dropped (ErrNotConnected: neither
// stored nor written): firmware keeps such a reading and sends it again
// once it is connected, so the caller gives the slot back and retries.
func (d *device) publish(k kind, topic string, payload []byte, seq int, epoch uint64, slot bool) bool {
	start := time.Now()
	tok := d.client.Publish(topic, d.cfg.wireQoS(), false, payload)
	select {
	case <-tok.Done():
		if errors.Is(tok.Error(), mqtt.ErrNotConnected) {
			d.st.retried.Add(1)
			return false
		}
	default:
	}
	if k == kindTelemetry {
		d.st.sent.Add(1)
	}
	d.waiters.Add(1)
	go d.track(tok, k, seq, epoch, start, slot)
	return true
}

// track waits for one publish token and counts its outcome exactly once.
func (d *device) track(tok mqtt.Token, k kind, seq int, epoch uint64, start time.Time, slot bool) {
	defer d.waiters.Done()
	abandoned := false
	select {
	case <-tok.Done():
	case <-d.abandon:
		select {
		case <-tok.Done(): // completed after all: prefer the real answer
		default:
			abandoned = true
		}
	}
	took := time.Since(start)
	sameEpoch := d.epoch.Load() == epoch
	if slot {
		<-d.slots
	}
	var err error
	if !abandoned {
		err = tok.Error()
	}
	o := classify(err, sameEpoch, abandoned)
	switch k {
	case kindTelemetry:
		d.st.count(o, took)
		if o == Failed {
			d.log.Debug("publish failed", "seq", seq, "err", err)
		}
		if d.cfg.OnMessage != nil {
			d.cfg.OnMessage(MessageResult{Device: d.idx, Seq: seq, Outcome: o, Latency: took, Err: err})
		}
	case kindAttributes:
		if o == Acked {
			d.st.attributes.Add(1)
		}
	case kindRPC:
		if o == Acked {
			d.st.rpcAnswered.Add(1)
		}
	}
}

// shutdown lets acknowledgements in flight arrive, disconnects, waits for
// paho to stop, and then for every waiter. finished says all Messages
// were sent: then it waits for their acks for as long as ctx allows.
func (d *device) shutdown(ctx context.Context, finished bool) {
	if finished {
		for answered := false; !answered; { // answer what is already queued
			select {
			case req := <-d.rpc:
				d.answer(req)
			default:
				answered = true
			}
		}
	}
	drained := make(chan struct{})
	go func() { // no Add after this point: the device goroutine publishes no more
		d.waiters.Wait()
		close(drained)
	}()
	if finished {
		select {
		case <-drained:
		case <-ctx.Done():
		}
	}
	grace := time.NewTimer(drainGrace)
	select {
	case <-drained:
	case <-grace.C:
	}
	grace.Stop()

	if d.client.IsConnectionOpen() {
		d.st.connectedAtEnd.Add(1)
	}
	d.mu.Lock()
	d.mu.stopped = true
	if d.mu.up {
		d.mu.up = false
		d.st.connected.Add(-1)
	}
	d.mu.Unlock()
	stopClient(d.client, d.log)
	close(d.abandon)
	<-drained
	if n := d.rpcDropped.Load(); n > 0 {
		d.log.Warn("RPC requests dropped: queue full", "count", n)
	}
}

// stopClient disconnects and waits until paho has stopped for good.
// Disconnect returns after its quiesce time even while a reconnect
// attempt is still running; paho finishes the disconnect when that
// attempt ends, which can take a backoff sleep plus connectTimeout.
func stopClient(c mqtt.Client, log *slog.Logger) {
	c.Disconnect(disconnectQuiesce)
	deadline := time.Now().Add(stopTimeout)
	for c.IsConnected() {
		if time.Now().After(deadline) {
			log.Error("paho client did not stop in time", "waited", stopTimeout)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// epochStore is paho's OrderedMemoryStore (resumes in publish order,
// unlike MemoryStore's map order) that changes the device's epoch when
// paho lists it. With CleanSession and no ConnectRetry, paho lists its
// store only in resume(), right after a reconnect, before it re-sends
// stored messages and completes their old tokens with nil (#563).
type epochStore struct {
	*mqtt.OrderedMemoryStore
	epoch *atomic.Uint64
}

func (s *epochStore) All() []string {
	s.epoch.Add(1)
	return s.OrderedMemoryStore.All()
}

// errAckTimeout is wrapped by callers of waitToken.
var errAckTimeout = errors.New("no acknowledgement in time")

// waitToken waits for tok, ctx or timeout, whichever comes first.
func waitToken(ctx context.Context, tok mqtt.Token, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errAckTimeout
	}
}

// sleepCtx sleeps for d; it reports false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// jitter spreads d over [d/2, d) so that devices do not retry in step.
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}
