package mqtt

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/registry"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// pub is one device publish, as the handlers see it.
type pub struct {
	topic   string
	payload []byte
	qos     byte
	id      uint16
}

// handlePublish dispatches one device publish (called from OnPublish, in
// the client's read loop). It never waits for the disk.
func (srv *Server) handlePublish(s *session, pk *pub) {
	start := time.Now()
	if len(pk.payload) > srv.cfg.MaxPayload {
		srv.reject(s, pk, reasonOversize, true,
			fmt.Sprintf("payload of %d bytes exceeds mqtt.max_payload %d", len(pk.payload), srv.cfg.MaxPayload))
		return
	}
	t, err := tb.ParseTopic(pk.topic)
	if err != nil {
		srv.reject(s, pk, reasonInvalidPayload, true, err.Error())
		return
	}
	srv.metrics.Messages.WithLabelValues(t.Kind.String()).Inc()
	if s.provision {
		if t.Kind != tb.TopicProvisionRequest {
			// ThingsBoard: PUBACK TOPIC_NAME_INVALID, then DISCONNECT.
			srv.reject(s, pk, reasonNotAllowed, false, "provisioning session")
			s.enqueue(ackItem{disconnect: true, code: disconnectCodes[reasonNotAllowed].Code})
			return
		}
		srv.handleProvision(s, pk)
		return
	}
	if t.Kind.IsGateway() && !s.device.Gateway {
		// ThingsBoard logs and does not acknowledge gateway publishes of
		// devices that are not gateways; MQTT 5 clients get 0x87.
		srv.metrics.Rejected.WithLabelValues(reasonNotGateway).Inc()
		srv.logLimited(s.device.Name, reasonNotGateway, "gateway API used by a device that is not a gateway", "topic", pk.topic)
		if s.v5 {
			s.enqueue(ackItem{packetID: pk.id, qos: pk.qos, code: pubackCodes[reasonNotGateway].Code})
		}
		return
	}
	ok := func() { s.enqueue(ackItem{packetID: pk.id, qos: pk.qos, start: start}) }
	switch t.Kind {
	case tb.TopicTelemetry:
		entries, err := tb.ParseTelemetry(pk.payload)
		if err != nil {
			srv.reject(s, pk, reasonInvalidPayload, true, err.Error())
			return
		}
		recs := srv.entryRecords(nil, s.device, "", entries, start.UnixMilli())
		srv.store(s, pk, srv.telemetry, recs, start)
	case tb.TopicAttributes:
		kvs, err := tb.ParseAttributes(pk.payload)
		if err != nil {
			srv.reject(s, pk, reasonInvalidPayload, true, err.Error())
			return
		}
		srv.storeAttributes(s, pk, kvs, start)
	case tb.TopicAttributesRequest:
		req, err := tb.ParseAttributeRequest(pk.payload)
		if err != nil {
			srv.reject(s, pk, reasonInvalidPayload, true, err.Error())
			return
		}
		// Answered on the acker, after the session's earlier publishes are
		// decided, so the response shows the attributes they set.
		topic := tb.ResponseTopic(t)
		s.enqueue(ackItem{packetID: pk.id, qos: pk.qos, start: start, then: func() {
			client, shared := srv.lookupAttributes(s.device.Name, req)
			srv.reply(s, topic, tb.EncodeAttributeResponse(client, shared))
		}})
	case tb.TopicRPCResponse:
		// Only a request written to this device (not through a gateway) resolves.
		srv.rpc.resolve(s.device.Name, s.device.Name, t.RequestID, json.RawMessage(append([]byte(nil), pk.payload...)))
		ok()
	case tb.TopicRPCRequest:
		req, err := tb.ParseRPCRequest(pk.payload)
		if err != nil {
			srv.reject(s, pk, reasonInvalidPayload, true, err.Error())
			return
		}
		if req.Method != "getSessionLimits" {
			if c := srv.crpc.Load(); c != nil {
				c.forward(s, pk, t, req, start)
				return
			}
		}
		srv.reply(s, tb.ResponseTopic(t), srv.clientRPC(s, req))
		ok()
	case tb.TopicClaim:
		if _, err := tb.ParseClaim(pk.payload); err != nil {
			srv.reject(s, pk, reasonInvalidPayload, true, err.Error())
			return
		}
		ok() // device claiming is a ThingsBoard cloud feature; accepted and ignored
	case tb.TopicGatewayConnect, tb.TopicGatewayDisconnect, tb.TopicGatewayTelemetry, tb.TopicGatewayAttributes,
		tb.TopicGatewayAttributesRequest, tb.TopicGatewayRPC, tb.TopicGatewayClaim:
		srv.handleGateway(s, pk, t, start)
	default:
		// ThingsBoard acknowledges and drops publishes to unknown topics
		// (MQTT 5 with TOPIC_NAME_INVALID) and keeps the connection.
		srv.metrics.Rejected.WithLabelValues(reasonUnknownTopic).Inc()
		srv.logLimited(s.device.Name, reasonUnknownTopic, "publish to an unknown topic dropped", "topic", pk.topic)
		code := byte(0)
		if s.v5 {
			code = pubackCodes[reasonUnknownTopic].Code
		}
		s.enqueue(ackItem{packetID: pk.id, qos: pk.qos, code: code})
	}
}

// reject counts and (rate-limited) logs bad input and answers it:
// MQTT 5 gets a PUBACK with pubackCodes[reason]; MQTT 3.x is closed when
// disconnectV3 (after the acknowledgements already queued), else acked.
func (srv *Server) reject(s *session, pk *pub, reason string, disconnectV3 bool, detail string) {
	srv.metrics.Rejected.WithLabelValues(reason).Inc()
	srv.logLimited(s.device.Name, reason, "publish refused", "topic", pk.topic, "detail", detail)
	code := pubackCodes[reason].Code
	switch {
	case s.v5:
		s.enqueue(ackItem{packetID: pk.id, qos: pk.qos, code: code})
	case disconnectV3:
		s.enqueue(ackItem{disconnect: true, code: code})
	default:
		s.enqueue(ackItem{packetID: pk.id, qos: pk.qos})
	}
}

// store appends records and queues the acknowledgement on their future.
func (srv *Server) store(s *session, pk *pub, topic *commitlog.Topic, recs []commitlog.Record, start time.Time) {
	if len(recs) == 0 {
		s.enqueue(ackItem{packetID: pk.id, qos: pk.qos, start: start})
		return
	}
	fut := topic.Append(s.appendCtx, recs)
	srv.metrics.Records.WithLabelValues(topic.Name()).Add(float64(len(recs)))
	s.enqueue(ackItem{packetID: pk.id, qos: pk.qos, fut: fut, start: start})
}

// entryRecords appends one record per entry to recs: key = device name,
// value = {"ts":..,"values":{..}}, timestamp = ts (arrival time when the
// device gave none), headers naming the device, its type and the gateway.
func (srv *Server) entryRecords(recs []commitlog.Record, dev registry.Device, gateway string, entries []tb.Entry, arrival int64) []commitlog.Record {
	headers := RecordHeaders(dev, gateway)
	key := []byte(dev.Name)
	for _, e := range entries {
		if len(e.Values) == 0 {
			continue
		}
		ts := e.Ts
		if ts == 0 {
			ts = arrival
		}
		recs = append(recs, commitlog.Record{Key: key, Value: tb.AppendRecordValue(nil, ts, e.Values), Timestamp: ts, Headers: headers})
	}
	return recs
}

// RecordHeaders are the headers of a device's records: its name, its
// type ("default" when it has none) and the gateway it came through, if
// any. Device adapters use them too, so a record does not tell how its
// device was connected.
func RecordHeaders(dev registry.Device, gateway string) []commitlog.Header {
	typ := dev.Type
	if typ == "" {
		typ = "default"
	}
	h := []commitlog.Header{{Key: "device", Value: []byte(dev.Name)}, {Key: "device_type", Value: []byte(typ)}}
	if gateway != "" {
		h = append(h, commitlog.Header{Key: "gateway", Value: []byte(gateway)})
	}
	return h
}

// storeAttributes records a device's client attributes: the registry keeps
// the latest values (for attribute requests) and the log the history. The
// registry write is queued, not waited for here: the acknowledgement waits
// for both, so pipelined attribute publishes share the registry's syncs
// as they share the log's. Attributes the registry refuses (a key longer
// than 255 bytes, a control character) are bad input, answered before
// anything is stored.
func (srv *Server) storeAttributes(s *session, pk *pub, kvs []tb.KV, start time.Time) {
	if len(kvs) == 0 {
		s.enqueue(ackItem{packetID: pk.id, qos: pk.qos})
		return
	}
	now := start.UnixMilli()
	w, err := srv.reg.SetAttributesAsync(s.device.Name, registry.ScopeClient, clientAttributes(kvs, now))
	switch {
	case errors.Is(err, registry.ErrInvalid):
		srv.reject(s, pk, reasonInvalidPayload, true, err.Error())
		return
	case err != nil: // the device was deleted while connected
		srv.logLimited(s.device.Name, "attributes", "client attributes not stored", "err", err)
		s.enqueue(ackItem{err: err, packetID: pk.id, qos: pk.qos})
		return
	}
	recs := srv.entryRecords(nil, s.device, "", []tb.Entry{{Ts: now, Values: kvs}}, now)
	fut := srv.attributes.Append(s.appendCtx, recs)
	srv.metrics.Records.WithLabelValues(srv.attributes.Name()).Add(float64(len(recs)))
	s.enqueue(ackItem{packetID: pk.id, qos: pk.qos, fut: fut, reg: w, start: start})
}

// clientAttributes converts parsed attributes for the registry.
func clientAttributes(kvs []tb.KV, now int64) []registry.Attribute {
	attrs := make([]registry.Attribute, len(kvs))
	for i, kv := range kvs {
		attrs[i] = registry.Attribute{Key: kv.Key, Value: kv.Value.AppendJSON(nil), UpdatedMs: now}
	}
	return attrs
}

// lookupAttributes answers a device attribute request from the registry.
func (srv *Server) lookupAttributes(device string, req tb.AttributeRequest) (client, shared []tb.KV) {
	get := func(scope registry.Scope, keys []string, all bool) []tb.KV {
		if !all && len(keys) == 0 {
			return nil
		}
		if all {
			keys = nil
		}
		attrs, err := srv.reg.Attributes(device, scope, keys)
		if err != nil {
			return nil
		}
		return attributesToKVs(attrs)
	}
	return get(registry.ScopeClient, req.ClientKeys, req.AllClient), get(registry.ScopeShared, req.SharedKeys, req.AllShared)
}

func attributesToKVs(attrs []registry.Attribute) []tb.KV {
	kvs := make([]tb.KV, 0, len(attrs))
	for _, a := range attrs {
		if v, ok, err := tb.ParseValue(a.Value); err == nil && ok {
			kvs = append(kvs, tb.KV{Key: a.Key, Value: v})
		}
	}
	return kvs
}

// reply publishes a response to the requesting session; a failed write
// (the device went away) is counted, not fatal.
func (srv *Server) reply(s *session, topic string, payload []byte) {
	if err := s.publish(topic, payload); err != nil {
		srv.logLimited(s.device.Name, "reply", "reply not delivered", "topic", topic, "err", err)
	}
}

// clientRPC answers a device's client-side RPC locally: getSessionLimits,
// as ThingsBoard's transport does; any other method, when forwarding to a
// backend is off (clientrpc.go), gets an error reply.
func (srv *Server) clientRPC(s *session, req tb.RPCRequest) []byte {
	if req.Method == "getSessionLimits" {
		return tb.EncodeSessionLimits(srv.cfg.MaxPayload, 1024, s.device.Gateway)
	}
	srv.metrics.Rejected.WithLabelValues(reasonUnsupported).Inc()
	srv.logLimited(s.device.Name, reasonUnsupported, "client-side RPC method not handled", "method", req.Method)
	b, _ := json.Marshal(map[string]string{"error": fmt.Sprintf("method %q is not handled by this gateway (client-side RPC forwarding, rpc.client_requests, is off)", req.Method)})
	return b
}
