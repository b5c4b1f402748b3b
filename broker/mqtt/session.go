package mqtt

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/registry"
)

// session is one authenticated connection.
type session struct {
	srv       *Server
	cl        *mochi.Client
	device    registry.Device
	clientID  string // as the client presented it (cl.ID is mochi's key, sessionKey)
	provision bool   // a provisioning-only session
	v5        bool

	// appendCtx is the server's context naming this connection as one
	// producer to the log's commit policy (source).
	appendCtx context.Context
	source    commitlog.Source

	// Subscriptions that enable downlinks (set by OnSubscribe).
	// Subscriptions that enable downlinks (set by OnSubscribe): the filter
	// the device used, which decides the topic family of the downlink.
	attrFilter atomic.Pointer[string] // v1/devices/me/attributes, v2/a, v2/a/j (shared attribute pushes)
	rpcFilter  atomic.Pointer[string] // v1/devices/me/rpc/request/+, v2/r/req/+, v2/r/req/j/+
	subGwAttrs atomic.Bool            // v1/gateway/attributes
	subGwRPC   atomic.Bool            // v1/gateway/rpc

	mu      sync.Mutex
	queue   []ackItem // guarded by mu: acknowledgements in arrival order
	running bool      // guarded by mu: an acker goroutine is draining queue
	closing bool      // guarded by mu: a disconnect is decided; process nothing more
	timer   *time.Timer
}

// ackItem is one publish waiting for its acknowledgement.
type ackItem struct {
	packetID   uint16
	qos        byte
	fut        *commitlog.Future // records appended to the log; nil: none
	reg        *registry.Write   // the publish's last registry write (attributes, new devices); nil: none
	err        error             // a storage failure known before queueing
	code       byte              // PUBACK reason code when nothing failed
	disconnect bool              // close the connection instead of acknowledging (MQTT 3.x error path)
	// then runs on the acker when the item's turn comes, after everything
	// queued before it is decided (and before its own PUBACK): replies that
	// must see the session's earlier writes, such as attribute responses.
	then  func()
	start time.Time
}

// pending reports whether deciding the item may wait for storage.
func (it *ackItem) pending() bool {
	return (it.fut != nil && !isDone(it.fut.Done())) || (it.reg != nil && !isDone(it.reg.Done()))
}

// isClosing reports whether the session stopped processing publishes.
func (s *session) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// enqueue hands an acknowledgement to the session's acker, starting it if
// it is idle. Ackers exit when their queue is empty, so idle devices cost
// no goroutine.
func (s *session) enqueue(it ackItem) {
	s.mu.Lock()
	if it.disconnect {
		s.closing = true
	}
	if it.qos == 0 && !it.disconnect && it.fut == nil && it.reg == nil && it.err == nil && it.then == nil {
		s.mu.Unlock()
		return
	}
	s.queue = append(s.queue, it)
	if !s.running {
		s.running = true
		s.srv.ackWG.Add(1)
		go s.drain()
	}
	s.mu.Unlock()
}

// drain is the acker: it decides queued items in order until none are
// left. PUBACKs whose storage completed together (one commit cycle) leave in
// one write, so a pipelining device costs one syscall per cycle, not per
// message.
func (s *session) drain() {
	defer s.srv.ackWG.Done()
	var acks []byte
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.running = false
			s.queue = nil
			s.mu.Unlock()
			s.flush(acks)
			return
		}
		it := s.queue[0]
		s.queue[0] = ackItem{}
		s.queue = s.queue[1:]
		s.mu.Unlock()
		if it.pending() { // about to wait: send what is decided
			acks = s.flush(acks)
		}
		code, ok := s.decide(&it)
		if !ok { // acknowledge what came before, then close
			acks = s.flush(acks)
			s.disconnect(packets.Code{Code: code, Reason: "rejected"})
			continue
		}
		if it.then != nil {
			acks = s.flush(acks)
			it.then()
		}
		if it.qos > 0 {
			acks = s.appendAck(acks, it, code)
		}
	}
}

func isDone(done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// appendAck encodes the acknowledgement of a publish: a PUBACK, or for a
// QoS 2 publish (MQTT 3.x) a PUBREC, whose PUBREL mochi answers with
// PUBCOMP (handlePublish registered it in flight). MQTT 3.x carries the
// packet id only; MQTT 5 adds the reason code when it is not success (no
// properties), checked against what MQTT 5 allows on a PUBACK.
func (s *session) appendAck(dst []byte, it ackItem, code byte) []byte {
	typ := byte(packets.Puback)
	if it.qos == 2 {
		typ = packets.Pubrec
	}
	id := it.packetID
	if s.v5 && code != 0 {
		code = s.srv.guardReason(typ, code)
		return append(dst, typ<<4, 3, byte(id>>8), byte(id), code)
	}
	return append(dst, typ<<4, 2, byte(id>>8), byte(id))
}

// flush writes encoded PUBACKs in one write, under mochi's write lock so
// they never interleave with packets mochi writes. A closed connection is
// not an error here: the device resends after reconnecting.
func (s *session) flush(acks []byte) []byte {
	if len(acks) == 0 || s.cl.Closed() {
		return acks[:0]
	}
	s.cl.Lock()
	_, _ = s.cl.Net.Conn.Write(acks)
	s.cl.Unlock()
	return acks[:0]
}

// decide waits for an item's storage (if any: its records in the log and
// its registry writes) and returns the PUBACK reason code, or ok=false and
// the reason to close the connection with.
func (s *session) decide(it *ackItem) (code byte, ok bool) {
	code = it.code
	if it.fut != nil || it.reg != nil || it.err != nil {
		err := it.err
		if it.reg != nil {
			if werr := it.reg.Wait(); err == nil { // the registry completes every write
				err = werr
			}
		}
		if it.fut != nil {
			<-it.fut.Done() // the log completes every future, also on Close
			if err == nil {
				err = it.fut.Err()
			}
		}
		if err != nil {
			s.srv.metrics.StorageErrors.Inc()
			s.srv.logLimited(s.device.Name, "storage", "storage failure: not acknowledging", "err", err)
			if !s.v5 {
				return packets.ErrUnspecifiedError.Code, false // the device resends after reconnecting
			}
			code = pubackCodes[reasonStorage].Code
			if errors.Is(err, commitlog.ErrLogFull) || errors.Is(err, syscall.ENOSPC) { // a full log, or a full disk under the state store
				code = pubackCodes[reasonLogFull].Code
			}
		} else if it.qos > 0 {
			s.srv.metrics.AckLatency.Observe(time.Since(it.start).Seconds())
		}
	}
	if it.disconnect {
		return code, false
	}
	return code, true
}

// disconnect closes the connection (with a DISCONNECT reason on MQTT 5).
func (s *session) disconnect(code packets.Code) {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	if code.Code < packets.ErrUnspecifiedError.Code {
		code = packets.ErrUnspecifiedError
	}
	s.srv.closeClient(s.cl, code)
}

// publish writes one message to this client (never through fan-out), with
// QoS min(subscription QoS, 1).
func (s *session) publish(topic string, payload []byte) error {
	qos := s.qosFor(topic)
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic,
		Payload:     payload,
		Created:     time.Now().Unix(),
	}
	if qos > 0 {
		id, err := s.cl.NextPacketID()
		if err != nil {
			return err
		}
		pk.PacketID = uint16(id)
		s.cl.State.Inflight.Set(pk) // mochi clears it when the device's PUBACK arrives
	}
	if err := s.cl.WritePacket(pk); err != nil {
		if errors.Is(err, mochi.ErrConnectionClosed) {
			return errConnectionGone
		}
		return err
	}
	s.srv.metrics.Downlinks.Inc()
	return nil
}

// qosFor returns the QoS of the client's subscription matching topic (0
// when none: ThingsBoard then sends at most once).
func (s *session) qosFor(topic string) byte {
	var q byte
	for filter, sub := range s.cl.State.Subscriptions.GetAll() {
		if matchTopic(filter, topic) && sub.Qos > q {
			q = sub.Qos
		}
	}
	return min(q, 1)
}

// matchTopic reports whether an MQTT filter (with + and #) matches topic.
func matchTopic(filter, topic string) bool {
	fs, ts := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fs {
		if f == "#" {
			return true
		}
		if i >= len(ts) || (f != "+" && f != ts[i]) {
			return false
		}
	}
	return len(fs) == len(ts)
}

// startTimer disconnects the session after d (provisioning sessions),
// restarting the countdown when it runs already.
func (s *session) startTimer(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer != nil {
		s.timer.Reset(d)
		return
	}
	s.timer = time.AfterFunc(d, func() {
		s.srv.closeClient(s.cl, disconnectCodes["provisioned"])
	})
}

func (s *session) stopTimer() {
	s.mu.Lock()
	if s.timer != nil {
		s.timer.Stop()
	}
	s.mu.Unlock()
}

// session returns the session of an authenticated client.
func (srv *Server) session(cl *mochi.Client) *session {
	v, ok := srv.sessions.Load(cl)
	if !ok {
		return nil
	}
	return v.(*session)
}
