package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-iot/ferry/broker/mqtt"
	"github.com/ferry-iot/ferry/broker/registry"
	"github.com/ferry-iot/ferry/devices/adapter"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// deviceJSON is a device as the API shows it (never its secrets).
type deviceJSON struct {
	Name       string    `json:"name"`
	Type       string    `json:"type,omitempty"`
	Gateway    bool      `json:"gateway"`
	Credential string    `json:"credentials_type,omitempty"`
	ClientID   string    `json:"client_id,omitempty"`
	Username   string    `json:"username,omitempty"`
	Parent     string    `json:"gateway_device,omitempty"`
	Source     string    `json:"source,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	Connected  bool      `json:"connected"` // any MQTT connection of its own, or through its gateway; an adapter device: its last poll succeeded
	// Adapter is an adapter device's bus, last poll outcome and counters.
	Adapter *adapter.DeviceStatus `json:"adapter,omitempty"`
	Token   string                `json:"token,omitempty"` // a generated access token, in the answer that created it only
}

func (d *Daemon) toDeviceJSON(dev registry.Device) deviceJSON {
	out := deviceJSON{Name: dev.Name, Type: dev.Type, Gateway: dev.Gateway, Credential: string(dev.Credential),
		ClientID: dev.ClientID, Username: dev.Username, Parent: dev.Parent, Source: dev.Source, CreatedAt: dev.CreatedAt,
		Connected: d.mqtt.Online(dev.Name)}
	if st, ok := d.adapters.Status(dev.Name); ok {
		out.Adapter = &st
		out.Connected = out.Connected || d.adapters.Online(dev.Name)
	}
	return out
}

// deviceRequest is the body of POST /api/v1/devices and PUT /api/v1/devices/{name}.
type deviceRequest struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Gateway  bool   `json:"gateway"`
	Token    string `json:"token"`
	ClientID string `json:"client_id"`
	Username string `json:"username"`
	Password string `json:"password"`
}

// decodeBody reads a JSON body strictly (unknown fields are errors), at most 1 MiB.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body: %v", err)
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, "invalid JSON body: trailing data after the object")
		return false
	}
	return true
}

func (d *Daemon) listDevices(w http.ResponseWriter, _ *http.Request) {
	out := []deviceJSON{}
	for _, dev := range d.reg.List() {
		out = append(out, d.toDeviceJSON(dev))
	}
	writeJSON(w, http.StatusOK, map[string]any{"devices": out})
}

func (d *Daemon) createDevice(w http.ResponseWriter, r *http.Request) {
	var req deviceRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if _, exists := d.reg.Get(req.Name); exists {
		writeError(w, http.StatusConflict, "device %q exists (use PUT /api/v1/devices/%s to replace it)", req.Name, req.Name)
		return
	}
	d.saveDevice(w, req, http.StatusCreated)
}

func (d *Daemon) putDevice(w http.ResponseWriter, r *http.Request) {
	var req deviceRequest
	if !decodeBody(w, r, &req) {
		return
	}
	name := r.PathValue("name")
	if req.Name != "" && req.Name != name {
		writeError(w, http.StatusBadRequest, "body names device %q, path names %q", req.Name, name)
		return
	}
	req.Name = name
	if d.refuseConfigured(w, name, "change") {
		return
	}
	d.saveDevice(w, req, http.StatusOK)
}

// refuseConfigured answers 409 for a device the configuration lists: the
// configuration is its source of truth (it is written from there at every
// start), so an API change would be undone at the next restart.
func (d *Daemon) refuseConfigured(w http.ResponseWriter, name, verb string) bool {
	for i, dc := range d.cfg.Devices {
		if dc.Name == name {
			writeError(w, http.StatusConflict, "device %q is set in the configuration (devices[%d]): %s it there, it is written from there at every start", name, i, verb)
			return true
		}
	}
	return false
}

func (d *Daemon) saveDevice(w http.ResponseWriter, req deviceRequest, code int) {
	if err := checkDeviceName(req.Name); err != nil {
		writeError(w, http.StatusBadRequest, "name: %v", err)
		return
	}
	dev := registry.Device{Name: req.Name, Type: req.Type, Gateway: req.Gateway, Source: registry.SourceAPI}
	creds := registry.Credentials{Token: req.Token, ClientID: req.ClientID, Username: req.Username, Password: req.Password}
	generated := ""
	if creds == (registry.Credentials{}) {
		// No credentials: an access token is generated and returned in
		// this answer only (the registry keeps its hash).
		generated = newDeviceToken()
		creds.Token = generated
	}
	switch err := d.reg.Put(dev, creds); {
	case errors.Is(err, registry.ErrCredentialsTaken):
		writeError(w, http.StatusConflict, "%v", err)
	case errors.Is(err, registry.ErrInvalid):
		writeError(w, http.StatusBadRequest, "%v", err)
	case err != nil:
		writeError(w, http.StatusInternalServerError, "%v", err)
	default:
		saved, _ := d.reg.Get(req.Name)
		out := d.toDeviceJSON(saved)
		out.Token = generated
		writeJSON(w, code, out)
	}
}

// checkDeviceName refuses device names the API and the configuration
// cannot manage: blank ones, ones with leading or trailing spaces (they
// look like another device's), and ones with '/' (they cannot be named in
// a URL path). Devices a gateway creates follow the registry's own rules.
func checkDeviceName(name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return fmt.Errorf("%q is blank", name)
	case strings.TrimSpace(name) != name:
		return fmt.Errorf("%q starts or ends with white space", name)
	case strings.Contains(name, "/"):
		return fmt.Errorf("%q contains '/'", name)
	}
	return nil
}

// newDeviceToken generates an access token: 20 random bytes, as 40 hex
// characters.
func newDeviceToken() string {
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (d *Daemon) device(w http.ResponseWriter, r *http.Request) (registry.Device, bool) {
	dev, ok := d.reg.Get(r.PathValue("name"))
	if !ok {
		writeError(w, http.StatusNotFound, "no device %q", r.PathValue("name"))
	}
	return dev, ok
}

func (d *Daemon) getDevice(w http.ResponseWriter, r *http.Request) {
	if dev, ok := d.device(w, r); ok {
		writeJSON(w, http.StatusOK, d.toDeviceJSON(dev))
	}
}

func (d *Daemon) deleteDevice(w http.ResponseWriter, r *http.Request) {
	dev, ok := d.device(w, r)
	if !ok || d.refuseConfigured(w, dev.Name, "remove") {
		return
	}
	if err := d.reg.Delete(dev.Name); err != nil {
		writeError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (d *Daemon) getAttributes(w http.ResponseWriter, r *http.Request) {
	dev, ok := d.device(w, r)
	if !ok {
		return
	}
	out := map[string]map[string]json.RawMessage{}
	for scope, name := range map[registry.Scope]string{registry.ScopeClient: "client", registry.ScopeShared: "shared"} {
		attrs, err := d.reg.Attributes(dev.Name, scope, nil)
		if err != nil {
			writeError(w, http.StatusInternalServerError, "%v", err)
			return
		}
		m := map[string]json.RawMessage{}
		for _, a := range attrs {
			m[a.Key] = a.Value
		}
		out[name] = m
	}
	writeJSON(w, http.StatusOK, out)
}

// setShared stores shared attributes from a JSON object (ThingsBoard value
// typing) and pushes them to the device when it is subscribed.
func (d *Daemon) setShared(w http.ResponseWriter, r *http.Request) {
	dev, ok := d.device(w, r)
	if !ok {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, "body: %v", err)
		return
	}
	kvs, err := tb.ParseAttributes(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "body must be a JSON object of attributes: %v", err)
		return
	}
	delivered, err := d.mqtt.PushSharedAttributes(dev.Name, kvs, nil)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	if d.adapters.Has(dev.Name) {
		// An adapter device: the attribute_updates entries write them.
		written, err := d.adapters.SharedAttributes(r.Context(), dev.Name, kvs)
		if err != nil {
			writeError(w, adapterHTTPStatus(err), "stored, but not written to the device: %v", err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"updated": len(kvs), "pushed": len(written) > 0, "written": written})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"updated": len(kvs), "pushed": delivered})
}

func (d *Daemon) deleteShared(w http.ResponseWriter, r *http.Request) {
	dev, ok := d.device(w, r)
	if !ok {
		return
	}
	var keys []string
	for _, k := range strings.Split(r.URL.Query().Get("keys"), ",") {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		writeError(w, http.StatusBadRequest, "query parameter keys: name at least one attribute (keys=a,b)")
		return
	}
	// Only keys that exist are deleted, pushed as deleted and reported.
	existing, err := d.reg.Attributes(dev.Name, registry.ScopeShared, keys)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	deleted := []string{}
	for _, a := range existing {
		deleted = append(deleted, a.Key)
	}
	delivered := false
	if len(deleted) > 0 {
		if delivered, err = d.mqtt.PushSharedAttributes(dev.Name, nil, deleted); err != nil {
			writeError(w, http.StatusInternalServerError, "%v", err)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"deleted": deleted, "pushed": delivered})
}

// rpcRequest is the body of POST /api/v1/devices/{name}/rpc.
type rpcRequest struct {
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
	Timeout string          `json:"timeout"` // Go duration, e.g. "5s"; default rpc.timeout
	OneWay  bool            `json:"oneway"`
}

// answerClientRPC answers a device's pending client-side RPC request
// (POST /api/v1/devices/{name}/rpc/client/{id}, body: the answer, any JSON).
func (d *Daemon) answerClientRPC(w http.ResponseWriter, r *http.Request) {
	dev, ok := d.device(w, r)
	if !ok {
		return
	}
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 32)
	if err != nil || id < 0 {
		writeError(w, http.StatusBadRequest, "request id %q is not a ThingsBoard request id (0..2147483647)", r.PathValue("id"))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, "body: %v", err)
		return
	}
	if !json.Valid(body) {
		writeError(w, http.StatusBadRequest, "body must be the answer, as JSON")
		return
	}
	switch err := d.mqtt.AnswerClientRPC(dev.Name, id, body); {
	case errors.Is(err, mqtt.ErrNoPendingRPC):
		writeError(w, http.StatusNotFound, "%v", err)
	case err != nil:
		writeError(w, http.StatusConflict, "%v", err)
	default:
		writeJSON(w, http.StatusOK, map[string]any{"delivered": true})
	}
}

// rpc sends a server-side RPC and returns the device's answer.
func (d *Daemon) rpc(w http.ResponseWriter, r *http.Request) {
	dev, ok := d.device(w, r)
	if !ok {
		return
	}
	var req rpcRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if req.Method == "" {
		writeError(w, http.StatusBadRequest, "method is required")
		return
	}
	timeout := d.cfg.RPC.Timeout
	if req.Timeout != "" {
		t, err := time.ParseDuration(req.Timeout)
		if err != nil || t <= 0 || t > d.cfg.RPC.Timeout {
			writeError(w, http.StatusBadRequest, "timeout: %q must be a duration in (0, %v]", req.Timeout, d.cfg.RPC.Timeout)
			return
		}
		timeout = t
	}
	if d.adapters.Has(dev.Name) {
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		// The bus runs the call either way; one-way only leaves the answer out.
		resp, err := d.adapters.RPC(ctx, dev.Name, req.Method, req.Params)
		switch {
		case err != nil:
			writeError(w, adapterHTTPStatus(err), "%v", err)
		case req.OneWay:
			writeJSON(w, http.StatusAccepted, map[string]any{"delivered": true})
		default:
			writeJSON(w, http.StatusOK, map[string]any{"response": json.RawMessage(resp)})
		}
		return
	}
	resp, err := d.mqtt.RPC(r.Context(), mqtt.RPCRequest{Device: dev.Name, Method: req.Method, Params: req.Params,
		Timeout: timeout, OneWay: req.OneWay})
	switch {
	case errors.Is(err, mqtt.ErrRPCTimeout):
		writeError(w, http.StatusGatewayTimeout, "%v", err)
	case errors.Is(err, mqtt.ErrDeviceOffline), errors.Is(err, mqtt.ErrNotSubscribed):
		writeError(w, http.StatusConflict, "%v", err)
	case errors.Is(err, mqtt.ErrUnknownDevice):
		writeError(w, http.StatusNotFound, "%v", err)
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "%v", err)
	case req.OneWay:
		writeJSON(w, http.StatusAccepted, map[string]any{"delivered": true})
	default:
		body := json.RawMessage(resp)
		if !json.Valid(resp) { // devices may answer with plain text
			body, _ = json.Marshal(string(resp))
		}
		writeJSON(w, http.StatusOK, map[string]any{"response": body})
	}
}

// adapterHTTPStatus is the HTTP status of an adapter device's RPC or
// write error: 400 for a bad request (unknown method, params that do not
// fit), 502 when the device answered with an error (a Modbus exception),
// 504 when it did not answer, 503 when its line is down.
func adapterHTTPStatus(err error) int {
	switch {
	case errors.Is(err, adapter.ErrNotSupported):
		return http.StatusBadRequest
	case errors.Is(err, adapter.ErrClosed):
		return http.StatusServiceUnavailable
	}
	switch adapter.KindOf(err) {
	case adapter.KindRequest:
		return http.StatusBadRequest
	case adapter.KindTimeout:
		return http.StatusGatewayTimeout
	case adapter.KindConnection:
		return http.StatusServiceUnavailable
	}
	return http.StatusBadGateway
}
