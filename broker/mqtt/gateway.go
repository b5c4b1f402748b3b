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

// handleGateway serves the ThingsBoard gateway API
// (docs/thingsboard.md#gateway-api) for a session whose device is flagged gateway: the
// devices behind it are created on first mention and their data is keyed
// by their own names, with a header naming the gateway.
//
// A gateway acts only for the devices it owns: those created through it
// (registry Parent = the gateway). Data for any other existing device (one
// with credentials of its own, one behind another gateway, the gateway
// itself) is refused — counted as foreign_device and logged — while the
// rest of the publish (its own devices' data) is stored. A publish with
// nothing of its own gets MQTT 5 PUBACK 0x87 (not authorized), MQTT 3.1.1
// a plain PUBACK (acknowledged and dropped). ThingsBoard leaves a gateway publish
// it cannot process unacknowledged, but a 3.1.1 client would then hold it
// in flight and resend it after every reconnect, refused forever; the
// refusal is permanent, so it is acknowledged and dropped as ThingsBoard
// does for publishes it cannot route (unknown topics).
//
// Device names and attribute keys the registry cannot hold (empty, more
// than 255 bytes, control characters) are bad input, as invalid JSON is.
func (srv *Server) handleGateway(s *session, pk *pub, t tb.Topic, start time.Time) {
	bad := func(err error) {
		srv.reject(s, pk, reasonInvalidPayload, true, err.Error())
	}
	failed := func(err error) {
		srv.logLimited(s.device.Name, "registry", "gateway device not stored", "err", err)
		s.enqueue(ackItem{err: err, packetID: pk.id, qos: pk.qos})
	}
	ok := func(w *registry.Write) { s.enqueue(ackItem{packetID: pk.id, qos: pk.qos, reg: w, start: start}) }
	switch t.Kind {
	case tb.TopicGatewayConnect:
		gd, err := tb.ParseGatewayConnect(pk.payload)
		if err == nil {
			err = checkChild(gd.Device, gd.Type)
		}
		if err != nil {
			bad(err)
			return
		}
		_, w, err := srv.child(s, gd.Device, gd.Type)
		switch {
		case errors.Is(err, errForeign):
			srv.refuseForeign(s, pk, gd.Device)
		case err != nil:
			failed(err)
		default:
			ok(w)
		}
	case tb.TopicGatewayDisconnect:
		name, err := tb.ParseGatewayDisconnect(pk.payload)
		if err == nil {
			err = checkChild(name, "")
		}
		if err != nil {
			bad(err)
			return
		}
		// Downlinks for the device stop going through this gateway (a
		// gateway routes only devices it owns).
		srv.mu.Lock()
		if srv.gwChild[name] == s.device.Name {
			delete(srv.gwChild, name)
		}
		srv.mu.Unlock()
		ok(nil)
	case tb.TopicGatewayTelemetry:
		devs, err := tb.ParseGatewayTelemetry(pk.payload)
		if err != nil {
			bad(err)
			return
		}
		names := make([]string, len(devs))
		for i, de := range devs {
			names[i] = de.Device
		}
		keep, proceed := srv.gatewayCheck(s, pk, names, nil)
		if !proceed {
			return
		}
		devs, names = keepOwned(devs, keep), keepOwned(names, keep)
		children, last, resolved := srv.children(s, pk, names, failed)
		if !resolved {
			return
		}
		var recs []commitlog.Record
		for i, de := range devs {
			recs = srv.entryRecords(recs, children[i], s.device.Name, de.Entries, start.UnixMilli())
		}
		srv.storeGateway(s, pk, srv.telemetry, recs, last, start)
	case tb.TopicGatewayAttributes:
		devs, err := tb.ParseGatewayAttributes(pk.payload)
		if err != nil {
			bad(err)
			return
		}
		now := start.UnixMilli()
		names := make([]string, len(devs))
		for i, da := range devs {
			names[i] = da.Device
		}
		// Validated and encoded for the registry once, here: the check
		// must tell bad input from a storage failure before anything of
		// the publish is stored.
		attrs := make([]registry.PreparedAttributes, len(devs))
		keep, proceed := srv.gatewayCheck(s, pk, names, func(i int) (err error) {
			if attrs[i], err = srv.reg.PrepareAttributes(clientAttributes(devs[i].Values, now)); err != nil {
				return fmt.Errorf("mqtt: attributes of %q: %w", truncate(names[i], 64), err)
			}
			return nil
		})
		if !proceed {
			return
		}
		devs, names, attrs = keepOwned(devs, keep), keepOwned(names, keep), keepOwned(attrs, keep)
		children, last, resolved := srv.children(s, pk, names, failed)
		if !resolved {
			return
		}
		var recs []commitlog.Record
		for i, da := range devs {
			dev := children[i]
			if attrs[i].Len() == 0 {
				continue
			}
			w, err := srv.reg.SetPreparedAsync(dev.Name, registry.ScopeClient, attrs[i])
			if err != nil {
				failed(err)
				return
			}
			last = registry.Latest(last, w)
			recs = srv.entryRecords(recs, dev, s.device.Name, []tb.Entry{{Ts: now, Values: da.Values}}, now)
		}
		srv.storeGateway(s, pk, srv.attributes, recs, last, start)
	case tb.TopicGatewayAttributesRequest:
		req, err := tb.ParseGatewayAttributeRequest(pk.payload)
		if err == nil {
			err = checkChild(req.Device, "")
		}
		if err != nil {
			bad(err)
			return
		}
		if srv.foreign(s, req.Device) {
			srv.refuseForeign(s, pk, req.Device)
			return
		}
		scope := registry.ScopeShared
		if req.Client {
			scope = registry.ScopeClient
		}
		// Answered after the session's earlier publishes are decided (see
		// the device attribute request). A device not created yet has no
		// attributes: the answer is empty.
		s.enqueue(ackItem{packetID: pk.id, qos: pk.qos, start: start, then: func() {
			attrs, _ := srv.reg.Attributes(req.Device, scope, req.Keys)
			kvs := attributesToKVs(attrs)
			srv.reply(s, tb.TopicGatewayAttributesResponse,
				tb.EncodeGatewayAttributeResponse(req.ID, req.Device, len(req.Keys) == 1 && len(kvs) == 1, kvs))
		}})
	case tb.TopicGatewayRPC:
		resp, err := tb.ParseGatewayRPCResponse(pk.payload)
		if err == nil {
			err = checkChild(resp.Device, "")
		}
		if err != nil {
			bad(err)
			return
		}
		if srv.foreign(s, resp.Device) {
			srv.refuseForeign(s, pk, resp.Device)
			return
		}
		// Only a request for that device written through this gateway
		// resolves.
		srv.rpc.resolve(s.device.Name, resp.Device, resp.ID, json.RawMessage(append([]byte(nil), resp.Data...)))
		ok(nil)
	case tb.TopicGatewayClaim:
		if _, err := tb.ParseGatewayClaim(pk.payload); err != nil {
			bad(err)
			return
		}
		ok(nil) // claiming is a ThingsBoard cloud feature; accepted and ignored
	}
}

// errForeign: a gateway named a device it does not own.
var errForeign = errors.New("mqtt: device is not the gateway's")

// checkChild validates a device name (and type, when given) from a
// gateway publish as the registry will: bad input, not a storage failure.
func checkChild(name, typ string) error {
	err := registry.ValidateName("device", name)
	if err == nil && typ != "" {
		err = registry.ValidateName("type", typ)
	}
	if err != nil {
		return fmt.Errorf("mqtt: gateway device %q: %w", truncate(name, 64), err)
	}
	return nil
}

// gatewayCheck decides a multi-device gateway publish before anything of
// it is stored: every name must be valid, and so must what check (when
// not nil) says of each device's part (its attributes), else it is
// bad input. A named device that exists and is not the gateway's is
// refused alone — counted and logged — and the others' data is kept, so a
// gateway's telemetry is not lost for one foreign name in it (the PUBACK
// then says success: what could be stored was). It returns which devices
// to keep, and false when the publish has been answered already (bad
// input, or no device of its own left).
func (srv *Server) gatewayCheck(s *session, pk *pub, names []string, check func(i int) error) ([]bool, bool) {
	for i, name := range names {
		err := checkChild(name, "")
		if err == nil && check != nil {
			err = check(i)
		}
		if err != nil {
			srv.reject(s, pk, reasonInvalidPayload, true, err.Error())
			return nil, false
		}
	}
	keep := make([]bool, len(names))
	owned := 0
	for i, name := range names {
		if srv.foreign(s, name) {
			srv.noteForeign(s, pk, name)
			continue
		}
		keep[i] = true
		owned++
	}
	if owned == 0 {
		srv.ackForeign(s, pk)
		return nil, false
	}
	return keep, true
}

// keepOwned returns the items of xs whose keep is true.
func keepOwned[T any](xs []T, keep []bool) []T {
	out := xs[:0:0]
	for i, x := range xs {
		if keep[i] {
			out = append(out, x)
		}
	}
	return out
}

// foreign reports whether device exists and is not owned by gateway
// session s.
func (srv *Server) foreign(s *session, device string) bool {
	d, ok := srv.reg.Get(device)
	return ok && d.Parent != s.device.Name
}

// refuseForeign answers a gateway publish naming a device the gateway does
// not own (see handleGateway).
func (srv *Server) refuseForeign(s *session, pk *pub, device string) {
	srv.noteForeign(s, pk, device)
	srv.ackForeign(s, pk)
}

// noteForeign counts and logs one foreign device named in a gateway publish.
func (srv *Server) noteForeign(s *session, pk *pub, device string) {
	srv.metrics.Rejected.WithLabelValues(reasonForeignDevice).Inc()
	srv.logLimited(s.device.Name, reasonForeignDevice, "gateway publish names a device the gateway does not own: its data dropped",
		"topic", pk.topic, "named_device", truncate(device, 64))
}

// ackForeign answers a gateway publish nothing of which was stored because
// it named only devices the gateway does not own.
func (srv *Server) ackForeign(s *session, pk *pub) {
	code := byte(0)
	if s.v5 {
		code = pubackCodes[reasonForeignDevice].Code
	}
	s.enqueue(ackItem{packetID: pk.id, qos: pk.qos, code: code})
}

// storeGateway appends a gateway publish's records; the acknowledgement
// waits for them and for the publish's last registry write.
func (srv *Server) storeGateway(s *session, pk *pub, topic *commitlog.Topic, recs []commitlog.Record, reg *registry.Write, start time.Time) {
	it := ackItem{packetID: pk.id, qos: pk.qos, reg: reg, start: start}
	if len(recs) > 0 {
		it.fut = topic.Append(s.appendCtx, recs)
		srv.metrics.Records.WithLabelValues(topic.Name()).Add(float64(len(recs)))
	}
	s.enqueue(it)
}

// child returns the registry entry of a device behind gateway session s,
// creating it on first mention (the returned Write completes when it is
// durable; nil for an existing device), and routes its downlinks through
// s's gateway device (routes.go). A device the gateway does not own gives errForeign.
func (srv *Server) child(s *session, name, typ string) (registry.Device, *registry.Write, error) {
	dev, created, w, err := srv.reg.EnsureAsync(registry.Device{Name: name, Type: typ, Parent: s.device.Name, Source: registry.SourceGateway})
	if err != nil {
		return dev, nil, err
	}
	if !created && dev.Parent != s.device.Name {
		return dev, nil, errForeign
	}
	srv.mu.Lock()
	prev := srv.gwChild[name]
	srv.gwChild[name] = s.device.Name
	srv.mu.Unlock()
	if prev != s.device.Name && s.subGwRPC.Load() {
		srv.rpcReady(name)
	}
	return dev, w, nil
}

// children resolves, in order, the devices one gateway publish names
// (creating the new ones as the gateway's) and the latest registry write
// that creates them. It reports false when the publish has been answered
// already: refused (a device that is not the gateway's, created by someone
// else since gatewayCheck) or failed.
func (srv *Server) children(s *session, pk *pub, names []string, failed func(error)) ([]registry.Device, *registry.Write, bool) {
	devs := make([]registry.Device, len(names))
	var last *registry.Write
	for i, name := range names {
		dev, w, err := srv.child(s, name, "")
		switch {
		case errors.Is(err, errForeign):
			srv.refuseForeign(s, pk, name)
			return nil, nil, false
		case err != nil:
			failed(err)
			return nil, nil, false
		}
		devs[i], last = dev, registry.Latest(last, w)
	}
	return devs, last, true
}
