package mqtt

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-iot/ferry/broker/registry"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// rpcTable holds server-side RPCs waiting for the device's answer. A
// request is keyed by the device it was written through (the device
// itself, or the gateway it is behind) as well as the device and id, so
// only that device can answer it: another device, or a gateway naming the
// device, or naming the id of a request that went elsewhere, resolves
// nothing. Any connection of that device may answer, as in ThingsBoard,
// where the device's actor matches the id: a shell-script device receives
// with mosquitto_sub and answers with mosquitto_pub.
type rpcTable struct {
	seq     atomic.Int64
	mu      sync.Mutex
	pending map[rpcKey]chan json.RawMessage // guarded by mu
}

type rpcKey struct {
	via    string // the device whose session the request was written to
	device string // the device the request is for
	id     int64
}

func (t *rpcTable) init() { t.pending = map[rpcKey]chan json.RawMessage{} }

// add registers a request to device written through device via. Ids are
// a ThingsBoard request id: a positive Java int.
func (t *rpcTable) add(via, device string) (int64, chan json.RawMessage) {
	id := (t.seq.Add(1)-1)%math.MaxInt32 + 1
	ch := make(chan json.RawMessage, 1)
	t.mu.Lock()
	t.pending[rpcKey{via, device, id}] = ch
	t.mu.Unlock()
	return id, ch
}

func (t *rpcTable) remove(via, device string, id int64) {
	t.mu.Lock()
	delete(t.pending, rpcKey{via, device, id})
	t.mu.Unlock()
}

// resolve delivers an answer that device via gave for device; answers
// nobody waits for from it (late, or forged ids) are dropped.
func (t *rpcTable) resolve(via, device string, id int64, resp json.RawMessage) bool {
	k := rpcKey{via, device, id}
	t.mu.Lock()
	ch, ok := t.pending[k]
	delete(t.pending, k)
	t.mu.Unlock()
	if ok {
		ch <- resp
	}
	return ok
}

func (t *rpcTable) failAll(error) {
	t.mu.Lock()
	for k, ch := range t.pending {
		close(ch)
		delete(t.pending, k)
	}
	t.mu.Unlock()
}

// RPCRequest is a server-side RPC to a device.
type RPCRequest struct {
	Device  string
	Method  string
	Params  json.RawMessage // nil is sent as null
	Timeout time.Duration   // how long to wait for the answer
	OneWay  bool            // do not wait for an answer
}

// RPC sends a server-side RPC to a device — to each of its connections
// subscribed to RPC requests, or, when it has none of its own, through the
// gateway it is behind — and returns the first answer. A device that is
// not connected, or not subscribed to RPC requests, fails at once.
func (srv *Server) RPC(ctx context.Context, req RPCRequest) (json.RawMessage, error) {
	if _, ok := srv.reg.Get(req.Device); !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownDevice, req.Device)
	}
	direct, gwName, gws := srv.routesTo(req.Device)
	var via string
	var sends []func(id int64) error
	switch {
	case len(direct) > 0:
		via = req.Device
		payload := tb.EncodeRPCRequest(req.Method, req.Params)
		for _, s := range direct {
			if filter := s.rpcFilter.Load(); filter != nil {
				sends = append(sends, func(id int64) error { return s.publish(tb.DownlinkTopic(*filter, id), payload) })
			}
		}
		if len(sends) == 0 {
			return nil, fmt.Errorf("%w: %s has no subscription to v1/devices/me/rpc/request/+", ErrNotSubscribed, req.Device)
		}
	case len(gws) > 0:
		via = gwName
		for _, gw := range gws {
			if gw.subGwRPC.Load() {
				sends = append(sends, func(id int64) error {
					return gw.publish(tb.TopicGatewayRPCDown, tb.EncodeGatewayRPCRequest(req.Device, id, req.Method, req.Params))
				})
			}
		}
		if len(sends) == 0 {
			return nil, fmt.Errorf("%w: gateway %s has no subscription to v1/gateway/rpc", ErrNotSubscribed, gwName)
		}
	default:
		return nil, fmt.Errorf("%w: %s", ErrDeviceOffline, req.Device)
	}
	id, ch := srv.rpc.add(via, req.Device)
	defer srv.rpc.remove(via, req.Device, id)
	var sent int
	var sendErr error
	for _, send := range sends {
		if err := send(id); err != nil {
			sendErr = err
			continue
		}
		sent++
	}
	if sent == 0 {
		return nil, fmt.Errorf("%w: %s: %v", ErrDeviceOffline, req.Device, sendErr)
	}
	srv.metrics.RPCs.Inc()
	if req.OneWay {
		return nil, nil
	}
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case resp, ok := <-ch:
		if !ok {
			return nil, ErrShuttingDown
		}
		return resp, nil
	case <-t.C:
		return nil, fmt.Errorf("%w after %v: %s did not answer %s", ErrRPCTimeout, timeout, req.Device, req.Method)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// OnRPCReady registers fn to be called with a device's name each time the
// device may have become reachable for server-side RPC: when its own
// session subscribes to RPC requests, when its gateway subscribes to
// v1/gateway/rpc (once per device already behind it), and when a
// subscribed gateway starts speaking for it. It is a hint for retrying
// queued RPCs at once rather than on a timer: the device may be gone again
// when RPC is called, and no call is made when a device goes away. fn runs
// on the connection's read loop, so it must return quickly and must not
// call RPC itself. A later call replaces fn; nil removes it.
func (srv *Server) OnRPCReady(fn func(device string)) {
	if fn == nil {
		srv.onRPCReady.Store(nil)
		return
	}
	srv.onRPCReady.Store(&fn)
}

func (srv *Server) rpcReady(devices ...string) {
	if fn := srv.onRPCReady.Load(); fn != nil {
		for _, d := range devices {
			(*fn)(d)
		}
	}
}

// PushSharedAttributes stores shared attributes and pushes them to each of
// the device's connections subscribed to attribute updates (or, when it
// has none of its own, through its gateway's). It reports whether the push
// was delivered to any.
func (srv *Server) PushSharedAttributes(device string, updated []tb.KV, deleted []string) (bool, error) {
	now := time.Now().UnixMilli()
	if len(updated) > 0 {
		attrs := make([]registry.Attribute, len(updated))
		for i, kv := range updated {
			attrs[i] = registry.Attribute{Key: kv.Key, Value: kv.Value.AppendJSON(nil), UpdatedMs: now}
		}
		if err := srv.reg.SetAttributes(device, registry.ScopeShared, attrs); err != nil {
			return false, err
		}
	}
	if len(deleted) > 0 {
		if err := srv.reg.DeleteAttributes(device, registry.ScopeShared, deleted); err != nil {
			return false, err
		}
	}
	direct, _, gws := srv.routesTo(device)
	delivered := false
	if len(direct) > 0 {
		payload := tb.EncodeAttributesPush(updated, deleted)
		for _, s := range direct {
			if f := s.attrFilter.Load(); f != nil && s.publish(tb.DownlinkTopic(*f, 0), payload) == nil {
				delivered = true
			}
		}
		return delivered, nil
	}
	for _, gw := range gws {
		if gw.subGwAttrs.Load() && gw.publish(tb.TopicGatewayAttributesPush, tb.EncodeGatewayAttributesPush(device, updated, deleted)) == nil {
			delivered = true
		}
	}
	return delivered, nil
}
