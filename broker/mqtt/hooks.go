package mqtt

import (
	"bytes"
	"errors"
	"fmt"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/netguard"
	"github.com/ferry-iot/ferry/broker/registry"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// hook is the mochi hook that turns the broker into a ThingsBoard device
// endpoint. It provides only the events listed in Provides.
type hook struct {
	mochi.HookBase
	srv *Server
}

func (h *hook) ID() string { return "ferry-thingsboard" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mochi.OnConnect, mochi.OnConnectAuthenticate, mochi.OnACLCheck, mochi.OnSessionEstablished,
		mochi.OnDisconnect, mochi.OnSubscribe, mochi.OnSubscribed, mochi.OnUnsubscribe, mochi.OnPublish,
		mochi.OnPacketEncode,
	}, []byte{b})
}

var errRefused = errors.New("mqtt: connection refused")

// OnConnect authenticates the client as ThingsBoard does
// (docs/thingsboard.md#authentication) and, when it fails, writes
// ThingsBoard's CONNACK code (docs/thingsboard.md#connack-codes) before
// refusing.
//
// A client presenting the user name or client id "provision" is a
// provisioning client: refused unless provisioning is configured, and
// confined to the provisioning topics, under a client id of its own, so it
// never shares a session with a device. Every other client must present a
// device's credentials (or, with anonymous access on, none). mochi keys
// sessions by client id; here the key is the device and its client id
// (sessionKey), so a connection can only take the place of an earlier
// connection of the same device with the same client id — which is
// logged and counted.
func (h *hook) OnConnect(cl *mochi.Client, pk packets.Packet) error {
	srv := h.srv
	user := string(pk.Connect.Username)
	pass := pk.Connect.Password
	clientID := string(pk.Connect.ClientIdentifier)
	v5 := cl.Properties.ProtocolVersion == 5
	if srv.isProbe(user, pass) && !v5 {
		cl.ID = probeUser + "/" + randomHex(8)
		netguard.Authenticated(cl.Net.Conn)
		srv.probes.Store(cl, struct{}{})
		return nil
	}
	if srv.closing.Load() {
		return h.refuse(cl, v5, "shutting_down", "shutting_down", "the broker is shutting down", user, clientID)
	}
	if srv.log.DiskFull() {
		// Refused cheaply while the log cannot store anything: a device
		// that reconnects after a refused publish backs off here, keeping
		// its unacknowledged messages, instead of publishing into the
		// full disk again; it is admitted as soon as space returns.
		return h.refuse(cl, v5, "disk_full", "disk_full", "the disk is full; publishes cannot be stored until space returns", user, clientID)
	}
	if !srv.admitSession() {
		return h.refuse(cl, v5, "max_connections", "max_connections",
			fmt.Sprintf("mqtt.max_connections (%d) reached", srv.cfg.MaxConnections), user, clientID)
	}
	admitted := false
	defer func() {
		if !admitted {
			srv.nsessions.Add(-1)
		}
	}()
	if pc := findPacketConn(cl.Net.Conn); pc != nil {
		pc.cl.Store(cl)
	}
	s := &session{srv: srv, cl: cl, v5: v5, clientID: clientID}
	s.appendCtx = commitlog.WithSource(srv.ctx, &s.source)
	switch dev, res := srv.reg.Authenticate(clientID, user, pass); {
	case user == "provision" || clientID == "provision":
		if !srv.provisioningEnabled() {
			return h.refuse(cl, v5, "provisioning_disabled", "provisioning_disabled",
				"a provisioning client (user name or client id \"provision\"), and provisioning is off (provisioning.key)", user, clientID)
		}
		s.provision = true
		// The client id, not the remote address: log lines are limited per
		// device name, and a reconnecting client has a new port each time.
		s.device = registry.Device{Name: "provision:" + truncate(clientID, 64)}
		cl.ID = "provision/" + randomHex(12) // a session of its own, never a device's
		// Until its request is answered it holds a pending place under the
		// listener's caps; in any case it is closed after provisionLinger.
		s.startTimer(provisionLinger)
		srv.sessions.Store(cl, s)
		admitted = true
		return nil
	case res == registry.AuthOK:
		s.device = dev
	case srv.cfg.AllowAnonymous && user == "" && len(pass) == 0 && clientID != "":
		d, _, err := srv.reg.Ensure(registry.Device{Name: clientID, Type: "anonymous", Source: "anonymous"})
		if err != nil {
			return h.refuse(cl, v5, "anonymous_device", "anonymous_device",
				"the anonymous device could not be registered: "+err.Error(), user, clientID)
		}
		s.device = d
	default:
		// ThingsBoard's choice of code (MqttTransportHandler
		// onValidateDeviceResponse): bad user name or password when all
		// three are given or exactly one of user name and password is;
		// else client id not valid when there is a client id (its only
		// credential); else not authorized.
		key := "auth_not_authorized"
		switch {
		case user != "" && len(pass) > 0 && clientID != "", (user == "") != (len(pass) == 0):
			key = "auth_bad_credentials"
		case clientID != "":
			key = "auth_client_id"
		}
		return h.refuse(cl, v5, key, "auth", authWhy(res, user, pass, clientID), user, clientID)
	}
	cl.ID = sessionKey(s.device.Name, cl.ID) // cl.ID: the client's id, or the one mochi assigned
	if _, taken := srv.mochi.Clients.Get(cl.ID); taken {
		srv.metrics.Takeovers.Inc()
		srv.logLimited(s.device.Name, "session_takeover",
			"a new connection of the device with the same client id takes over its session; the old connection is closed",
			"client_id", truncate(clientID, 64), "remote", cl.Net.Remote)
	}
	netguard.Authenticated(cl.Net.Conn)
	srv.sessions.Store(cl, s)
	admitted = true
	return nil
}

// admitSession takes a place under MaxConnections (authenticated clients
// over all listeners) for a connecting client, or reports there is none.
func (srv *Server) admitSession() bool {
	for {
		n := srv.nsessions.Load()
		if srv.cfg.MaxConnections > 0 && n >= int64(srv.cfg.MaxConnections) {
			return false
		}
		if srv.nsessions.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// refuse writes a CONNACK with connackCodes[key] (mapped as ThingsBoard
// maps it for MQTT 3.x) and makes mochi drop the connection without its
// own CONNACK. It counts connect_<label> and logs why, in words, limited
// per presented identity (a fingerprint of the user name or client id,
// never the token itself) and reason, not per remote address, which
// changes with every reconnect.
func (h *hook) refuse(cl *mochi.Client, v5 bool, key, label, why, user, clientID string) error {
	code := connackCodes[key]
	h.srv.metrics.Rejected.WithLabelValues("connect_" + label).Inc()
	h.srv.logLimited(identity(user, clientID), "connect_"+key, "connection refused: "+why,
		"client_id", truncate(clientID, 64), "remote", cl.Net.Remote, "code", code.Code)
	if v5 {
		_ = h.srv.mochi.SendConnack(cl, code, false, nil)
		return errRefused
	}
	_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ReasonCode: v3Connack(code)})
	return errRefused
}

// authWhy says in words why credentials were refused.
func authWhy(res registry.AuthResult, user string, pass []byte, clientID string) string {
	switch {
	case user == "" && len(pass) == 0:
		return "no credentials: no access token (user name) was given, and no device has this client id as its MQTT basic credentials"
	case user == "" && len(pass) > 0:
		return "a password without a user name"
	case res == registry.AuthBadPassword:
		return "wrong password for these MQTT basic credentials"
	case len(pass) == 0:
		return "unknown access token"
	default:
		return "unknown user name and password"
	}
}

// OnConnectAuthenticate admits what OnConnect accepted.
func (h *hook) OnConnectAuthenticate(cl *mochi.Client, _ packets.Packet) bool {
	return h.srv.session(cl) != nil || h.srv.isProbeClient(cl)
}

// OnACLCheck allows everything that reached it: publishes are judged in
// OnPublish (which never lets mochi fan them out) and subscriptions in
// OnSubscribe.
func (h *hook) OnACLCheck(*mochi.Client, string, bool) bool { return true }

// OnSessionEstablished makes the session reachable for downlinks.
func (h *hook) OnSessionEstablished(cl *mochi.Client, _ packets.Packet) {
	s := h.srv.session(cl)
	if s == nil || s.provision {
		return
	}
	h.srv.addRoute(s)
}

// OnDisconnect forgets the session; queued acknowledgements still drain.
func (h *hook) OnDisconnect(cl *mochi.Client, err error, _ bool) {
	h.srv.probes.Delete(cl)
	s := h.srv.session(cl)
	if s == nil {
		return
	}
	h.srv.sessions.Delete(cl)
	h.srv.nsessions.Add(-1)
	s.stopTimer()
	h.srv.logger.Debug("mqtt: client disconnected", "device", s.device.Name, "client_id", s.clientID, "reason", err)
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.source.Close() // no longer a producer the log's commit policy waits for
	if s.provision {
		return
	}
	h.srv.removeRoute(s)
}

// OnSubscribe lets through only ThingsBoard's device API filters. A refused
// filter is blanked, which mochi answers as an invalid filter: SUBACK 0x8F
// on MQTT 5 and 0x80 on 3.x, ThingsBoard's codes.
func (h *hook) OnSubscribe(cl *mochi.Client, pk packets.Packet) packets.Packet {
	s := h.srv.session(cl)
	filters := make(packets.Subscriptions, len(pk.Filters))
	copy(filters, pk.Filters)
	for i, f := range filters {
		if s == nil {
			filters[i].Filter = ""
			continue
		}
		kind, ok := tb.CheckSubscription(f.Filter, s.device.Gateway, s.provision)
		if !ok {
			h.srv.metrics.Rejected.WithLabelValues("subscription").Inc()
			h.srv.logLimited(s.device.Name, "subscription", "subscription refused", "filter", f.Filter)
			filters[i].Filter = ""
			continue
		}
		s.noteSubscription(kind, f.Filter, true)
		filters[i].Qos = min(f.Qos, 1) // ThingsBoard grants at most QoS 1
	}
	pk.Filters = filters
	return pk
}

// OnSubscribed tells the OnRPCReady listener about accepted RPC
// subscriptions. mochi calls it after storing the subscriptions, so an RPC
// sent from the listener gets the subscription's QoS.
func (h *hook) OnSubscribed(cl *mochi.Client, pk packets.Packet, codes []byte) {
	s := h.srv.session(cl)
	if s == nil || s.provision {
		return
	}
	for i, f := range pk.Filters {
		if i < len(codes) && codes[i] >= packets.ErrUnspecifiedError.Code {
			continue
		}
		switch kind, ok := tb.CheckSubscription(f.Filter, s.device.Gateway, false); {
		case !ok:
		case kind == tb.SubRPCRequest:
			h.srv.rpcReady(s.device.Name)
		case kind == tb.SubGatewayRPC:
			h.srv.rpcReady(h.srv.childrenOf(s.device.Name)...)
		}
	}
}

// OnUnsubscribe turns the matching downlinks off again.
func (h *hook) OnUnsubscribe(cl *mochi.Client, pk packets.Packet) packets.Packet {
	if s := h.srv.session(cl); s != nil {
		for _, f := range pk.Filters {
			if kind, ok := tb.CheckSubscription(f.Filter, s.device.Gateway, s.provision); ok {
				s.noteSubscription(kind, f.Filter, false)
			}
		}
	}
	return pk
}

func (s *session) noteSubscription(kind tb.SubscriptionKind, filter string, on bool) {
	f := &filter
	if !on {
		f = nil
	}
	switch kind {
	case tb.SubAttributes:
		s.attrFilter.Store(f)
	case tb.SubRPCRequest:
		s.rpcFilter.Store(f)
	case tb.SubGatewayAttributes:
		s.subGwAttrs.Store(on)
	case tb.SubGatewayRPC:
		s.subGwRPC.Store(on)
	}
}

// OnPublish handles every device publish itself and returns ErrRejectPacket
// so mochi neither acknowledges nor fans it out (see the package doc).
func (h *hook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	h.srv.pubMu.RLock()
	defer h.srv.pubMu.RUnlock()
	s := h.srv.session(cl)
	if s == nil || s.isClosing() || h.srv.closing.Load() {
		// Shutting down: not acknowledged, so the device resends it later.
		return pk, packets.ErrRejectPacket
	}
	if pk.FixedHeader.Qos == 2 {
		if s.v5 { // told Maximum QoS 1 in the CONNACK: a protocol error [MQTT-3.3.1-4]
			h.srv.metrics.Rejected.WithLabelValues(reasonQoS2).Inc()
			h.srv.logLimited(s.device.Name, reasonQoS2, "QoS 2 publish after the CONNACK said Maximum QoS 1: disconnected")
			s.enqueue(ackItem{disconnect: true, code: disconnectCodes[reasonQoS2].Code})
			return pk, packets.ErrRejectPacket
		}
		// MQTT 3.x: stored as QoS 1 would be, and acknowledged with the
		// QoS 2 handshake (PUBREC now, mochi answers PUBREL with PUBCOMP),
		// which a 3.1.1 client expects; in flight meanwhile, so a resent
		// PUBLISH is answered by mochi and not stored twice.
		cl.State.Inflight.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: pk.PacketID})
	}
	// Only what the handlers need, passed by pointer: mochi's Packet is
	// 800 bytes and is already copied through several frames of the read
	// loop; every further copy grows each connection's goroutine stack.
	p := pub{topic: pk.TopicName, payload: pk.Payload, qos: pk.FixedHeader.Qos, id: pk.PacketID}
	h.srv.handlePublish(s, &p)
	return pk, packets.ErrRejectPacket
}
