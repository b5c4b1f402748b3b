package mqtt

import (
	"encoding/json"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	flog "github.com/ferry-iot/ferry/broker/log"
	"github.com/ferry-iot/ferry/broker/registry"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// handleGateway serves the ThingsBoard gateway API (reference
// thingsboard.md §2) for a session whose device is flagged gateway: the
// devices behind it are created on first mention and their data is keyed
// by their own names, with a header naming the gateway.
func (srv *Server) handleGateway(s *session, pk *pub, t tb.Topic, start time.Time) {
	bad := func(err error) {
		srv.reject(s, pk, reasonInvalidPayload, packets.ErrPayloadFormatInvalid.Code, true, err.Error())
	}
	ok := func() { s.enqueue(ackItem{packetID: pk.id, qos: pk.qos, start: start}) }
	switch t.Kind {
	case tb.TopicGatewayConnect:
		gd, err := tb.ParseGatewayConnect(pk.payload)
		if err != nil {
			bad(err)
			return
		}
		if _, err := srv.child(s, gd.Device, gd.Type); err != nil {
			s.enqueue(ackItem{err: err, packetID: pk.id, qos: pk.qos})
			return
		}
		ok()
	case tb.TopicGatewayDisconnect:
		name, err := tb.ParseGatewayDisconnect(pk.payload)
		if err != nil {
			bad(err)
			return
		}
		srv.mu.Lock()
		if srv.gwChild[name] == s {
			delete(srv.gwChild, name)
		}
		srv.mu.Unlock()
		ok()
	case tb.TopicGatewayTelemetry:
		devs, err := tb.ParseGatewayTelemetry(pk.payload)
		if err != nil {
			bad(err)
			return
		}
		var recs []flog.Record
		for _, de := range devs {
			dev, err := srv.child(s, de.Device, "")
			if err != nil {
				s.enqueue(ackItem{err: err, packetID: pk.id, qos: pk.qos})
				return
			}
			recs = srv.entryRecords(recs, dev, s.device.Name, de.Entries, start.UnixMilli())
		}
		srv.store(s, pk, srv.telemetry, recs, start)
	case tb.TopicGatewayAttributes:
		devs, err := tb.ParseGatewayAttributes(pk.payload)
		if err != nil {
			bad(err)
			return
		}
		var recs []flog.Record
		now := start.UnixMilli()
		for _, da := range devs {
			dev, err := srv.child(s, da.Device, "")
			if err == nil {
				err = srv.setClientAttributes(dev.Name, da.Values, now)
			}
			if err != nil {
				s.enqueue(ackItem{err: err, packetID: pk.id, qos: pk.qos})
				return
			}
			recs = srv.entryRecords(recs, dev, s.device.Name, []tb.Entry{{Ts: now, Values: da.Values}}, now)
		}
		srv.store(s, pk, srv.attributes, recs, start)
	case tb.TopicGatewayAttributesRequest:
		req, err := tb.ParseGatewayAttributeRequest(pk.payload)
		if err != nil {
			bad(err)
			return
		}
		scope := registry.ScopeShared
		if req.Client {
			scope = registry.ScopeClient
		}
		attrs, _ := srv.reg.Attributes(req.Device, scope, req.Keys)
		kvs := attributesToKVs(attrs)
		srv.reply(s, tb.TopicGatewayAttributesResponse,
			tb.EncodeGatewayAttributeResponse(req.ID, req.Device, len(req.Keys) == 1 && len(kvs) == 1, kvs))
		ok()
	case tb.TopicGatewayRPC:
		resp, err := tb.ParseGatewayRPCResponse(pk.payload)
		if err != nil {
			bad(err)
			return
		}
		srv.rpc.resolve(resp.Device, resp.ID, json.RawMessage(append([]byte(nil), resp.Data...)))
		ok()
	case tb.TopicGatewayClaim:
		if _, err := tb.ParseGatewayClaim(pk.payload); err != nil {
			bad(err)
			return
		}
		ok()
	}
}

// child returns the registry entry of a device behind gateway session s,
// creating it on first mention, and routes its downlinks through s.
func (srv *Server) child(s *session, name, typ string) (registry.Device, error) {
	dev, _, err := srv.reg.Ensure(registry.Device{Name: name, Type: typ, Parent: s.device.Name, Source: "gateway"})
	if err != nil {
		return dev, err
	}
	srv.mu.Lock()
	prev := srv.gwChild[name]
	srv.gwChild[name] = s
	srv.mu.Unlock()
	if prev != s && s.subGwRPC.Load() {
		srv.rpcReady(name)
	}
	return dev, nil
}

// childrenOf returns the devices whose downlinks go through gateway session s.
func (srv *Server) childrenOf(s *session) []string {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	var names []string
	for child, gw := range srv.gwChild {
		if gw == s {
			names = append(names, child)
		}
	}
	return names
}

// setClientAttributes stores the latest client attribute values.
func (srv *Server) setClientAttributes(device string, kvs []tb.KV, now int64) error {
	attrs := make([]registry.Attribute, len(kvs))
	for i, kv := range kvs {
		attrs[i] = registry.Attribute{Key: kv.Key, Value: kv.Value.AppendJSON(nil), UpdatedMs: now}
	}
	return srv.reg.SetAttributes(device, registry.ScopeClient, attrs)
}
