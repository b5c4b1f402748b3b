package main

import (
	"crypto/subtle"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/pprof"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/netguard"
)

// access says who may call a route.
type access int

const (
	open  access = iota // anyone (health, metrics, the API's description)
	read                // the token, unless http.allow_anonymous_reads
	admin               // the token
)

// route is one endpoint of the HTTP API. Every route is described in
// openapi.json (served at /api/v1/openapi.json); a test checks the two
// list the same endpoints.
type route struct {
	method, path string // path in net/http's pattern syntax
	name         string // the route label of ferry_http_requests_total
	access       access
	handler      http.Handler
}

// apiRoutes is the HTTP API. Errors are JSON: {"error": "..."}; a known
// path asked with another method gets 405 with Allow, an unknown one 404.
// Routes that are not open need "Authorization: Bearer <token>"
// (http.admin_token, or the token generated into <data_dir>/admin-token).
//
// Devices the configuration lists (devices: in the file or FERRY_DEVICES)
// are the configuration's: written from it at every start, so PUT and
// DELETE of one answer 409 Conflict naming its devices[i] entry (their
// attributes and RPC are open to the API as for any device). Devices
// created through the API, by provisioning or by a gateway, and those the
// configuration no longer lists, are managed here and survive restarts.
func (d *Daemon) apiRoutes() []route {
	h := func(f http.HandlerFunc) http.Handler { return f }
	return []route{
		{"GET", "/healthz", "healthz", open, h(d.healthz)},
		{"GET", "/metrics", "metrics", open, promhttp.HandlerFor(d.metrics, promhttp.HandlerOpts{})},
		{"GET", "/api/v1/openapi.json", "openapi", open, h(serveOpenAPI)},
		{"GET", "/api/v1/topics", "topics", read, h(d.listTopics)},
		{"GET", "/api/v1/topics/{topic}", "topic", read, h(d.getTopic)},
		{"GET", "/api/v1/topics/{topic}/records", "records", read, h(d.getRecords)},
		{"GET", "/api/v1/bridges", "bridges", read, h(d.listBridges)},
		{"GET", "/api/v1/streams", "streams", read, h(d.listStreams)},
		{"POST", "/api/v1/bridges/{name}/resend", "bridge_resend", admin, h(d.resendBridge)},
		{"GET", "/api/v1/groups", "groups", read, h(d.listGroups)},
		{"GET", "/api/v1/groups/{group}", "group", read, h(d.getGroup)},
		{"GET", "/api/v1/devices", "devices", admin, h(d.listDevices)},
		{"POST", "/api/v1/devices", "devices", admin, h(d.createDevice)},
		{"GET", "/api/v1/devices/{name}", "device", admin, h(d.getDevice)},
		{"PUT", "/api/v1/devices/{name}", "device", admin, h(d.putDevice)},
		{"DELETE", "/api/v1/devices/{name}", "device", admin, h(d.deleteDevice)},
		{"GET", "/api/v1/devices/{name}/attributes", "attributes", admin, h(d.getAttributes)},
		{"POST", "/api/v1/devices/{name}/attributes/shared", "attributes", admin, h(d.setShared)},
		{"DELETE", "/api/v1/devices/{name}/attributes/shared", "attributes", admin, h(d.deleteShared)},
		{"POST", "/api/v1/devices/{name}/rpc", "rpc", admin, h(d.rpc)},
		{"POST", "/api/v1/devices/{name}/rpc/client/{id}", "rpc_client", admin, h(d.answerClientRPC)},
		// Go's profiler, for the engineer chasing memory or CPU on a device.
		{"GET", "/debug/pprof/", "pprof", admin, h(pprof.Index)},
		{"GET", "/debug/pprof/profile", "pprof", admin, h(pprof.Profile)},
		{"GET", "/debug/pprof/trace", "pprof", admin, h(pprof.Trace)},
	}
}

// routes builds the HTTP API's handler from apiRoutes.
func (d *Daemon) routes() http.Handler {
	mux := http.NewServeMux()
	allow := map[string][]string{}
	var paths []string
	for _, rt := range d.apiRoutes() {
		h := rt.handler
		if rt.access != open {
			h = d.authorize(rt.access == admin, h.ServeHTTP)
		}
		mux.Handle(rt.method+" "+rt.path, d.instrument(rt.name, h))
		if allow[rt.path] == nil {
			paths = append(paths, rt.path)
		}
		allow[rt.path] = append(allow[rt.path], rt.method)
	}
	// The same path with any other method: 405, saying which are allowed
	// (not below a subtree route such as /debug/pprof/, which net/http
	// would see as an ambiguous pattern: those answer 404).
	for _, path := range paths {
		if slices.ContainsFunc(paths, func(sub string) bool {
			return sub != path && strings.HasSuffix(sub, "/") && strings.HasPrefix(path, sub)
		}) {
			continue
		}
		methods := allow[path]
		if slices.Contains(methods, "GET") {
			methods = append(methods, "HEAD")
		}
		list := strings.Join(methods, ", ")
		mux.Handle(path, d.instrument("method_not_allowed", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", list)
			writeError(w, http.StatusMethodNotAllowed, "%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, list)
		})))
	}
	mux.Handle("/", d.instrument("unknown", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: %s %s (the API is described at /api/v1/openapi.json)", r.Method, r.URL.Path)
	})))
	return mux
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

func (d *Daemon) instrument(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A whole request's headers arrived: the connection no longer
		// counts as pending under http.max_connections.
		netguard.AuthenticatedContext(r.Context())
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(rec, r)
		d.api.requests.WithLabelValues(route, strconv.Itoa(rec.code)).Inc()
	})
}

func (d *Daemon) authorize(adminOnly bool, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !adminOnly && d.cfg.HTTP.AllowAnonymousReads {
			h(w, r)
			return
		}
		if !bearerMatches(r.Header.Get("Authorization"), d.token) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ferry"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token (Authorization: Bearer <token>; the token is http.admin_token, or the one in <data_dir>/%s)", adminTokenFile)
			return
		}
		h(w, r)
	})
}

// bearerMatches reports whether an Authorization header carries token
// with the Bearer scheme, whose name is case-insensitive (RFC 9110
// §11.1), compared in constant time.
func bearerMatches(header, token string) bool {
	scheme, got, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(token)) == 1
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, map[string]string{"error": fmt.Sprintf(format, args...)})
}

func (d *Daemon) healthz(w http.ResponseWriter, _ *http.Request) {
	var failed []string
	for _, t := range d.log.Topics() {
		for _, p := range t.Partitions() {
			if err := p.Err(); err != nil {
				failed = append(failed, fmt.Sprintf("%s/%d: %v", t.Name(), p.ID(), err))
			}
		}
	}
	listeners := d.listenerStatus()
	var down []string
	for _, l := range listeners {
		if !l.Accepting {
			down = append(down, fmt.Sprintf("%s on %s: not accepting since %s: %s", l.Name, l.Addr, l.Since.Format(time.RFC3339), l.Error))
		}
	}
	st := d.log.Stats()
	body := map[string]any{
		"status": "ok", "node_id": d.cfg.NodeID, "devices_connected": d.mqtt.OnlineDevices() + d.adapters.OnlineCount(),
		"connections": d.mqtt.Connected(), "disk_low": st.DiskLow, "disk_full": st.DiskFull, "listeners": listeners,
	}
	storage, wearWarning := d.wear.status()
	body["storage"] = storage
	warnings := append(d.logWarnings(), d.adapterWarnings()...)
	if wearWarning != "" {
		warnings = append(warnings, wearWarning)
	}
	if len(warnings) > 0 {
		body["warnings"] = warnings
	}
	if st.DiskFull {
		failed = append(failed, "the disk is full: appends are refused until space returns")
	}
	if len(failed) > 0 || len(down) > 0 {
		body["status"] = "degraded"
		if len(failed) > 0 {
			body["failed_partitions"] = failed
		}
		if len(down) > 0 {
			body["listeners_down"] = down
		}
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	writeJSON(w, http.StatusOK, body)
}

// logWarnings lists what the log repaired, passed over or left alone
// since start (commitlog.Repair: damage by exact offsets, cut tails,
// rebuilt indexes and settings, gaps, stray and leftover files), newest
// last, one line each.
func (d *Daemon) logWarnings() []string {
	var out []string
	if w := stateWarning(d.state, d.stateMsg); w != "" {
		out = append(out, w)
	}
	for _, r := range d.log.Repairs() {
		where := ""
		if r.Topic != "" {
			where = r.Topic
			if r.Partition >= 0 {
				where += "/" + strconv.Itoa(int(r.Partition))
			}
			where += ": "
		}
		out = append(out, fmt.Sprintf("%s %s%s (%s)", r.At.UTC().Format(time.RFC3339), where, r.Detail, r.Kind))
	}
	return out
}

// listenerStatus is every network listener's state.
func (d *Daemon) listenerStatus() []netguard.Status {
	out := d.mqtt.ListenerStatus()
	if d.kafka != nil {
		out = append(out, d.kafka.Status())
	}
	return append(out, d.httpLn.Status())
}

type partitionJSON struct {
	Partition   int32 `json:"partition"`
	StartOffset int64 `json:"start_offset"`
	EndOffset   int64 `json:"end_offset"`
	Bytes       int64 `json:"bytes"`
	Segments    int   `json:"segments"`
}

type topicJSON struct {
	Name       string                `json:"name"`
	Config     commitlog.TopicConfig `json:"config"`
	Partitions []partitionJSON       `json:"partitions"`
	Stats      commitlog.TopicStats  `json:"stats"`
}

func describeTopic(t *commitlog.Topic) topicJSON {
	tj := topicJSON{Name: t.Name(), Stats: t.Stats(), Config: t.Config()}
	for _, p := range t.Partitions() {
		tj.Partitions = append(tj.Partitions, partitionJSON{Partition: p.ID(), StartOffset: p.StartOffset(),
			EndOffset: p.HighWatermark(), Bytes: p.Size(), Segments: p.Segments()})
	}
	return tj
}

func (d *Daemon) listTopics(w http.ResponseWriter, _ *http.Request) {
	out := []topicJSON{}
	for _, t := range d.log.Topics() {
		out = append(out, describeTopic(t))
	}
	writeJSON(w, http.StatusOK, map[string]any{"topics": out})
}

func (d *Daemon) topic(w http.ResponseWriter, r *http.Request) *commitlog.Topic {
	t, err := d.log.Topic(r.PathValue("topic"))
	if err != nil {
		writeError(w, http.StatusNotFound, "no topic %q", r.PathValue("topic"))
		return nil
	}
	return t
}

func (d *Daemon) getTopic(w http.ResponseWriter, r *http.Request) {
	if t := d.topic(w, r); t != nil {
		writeJSON(w, http.StatusOK, describeTopic(t))
	}
}

// recordJSON is one decoded record. Keys and values that are UTF-8 are
// strings, and values that are JSON are embedded as JSON; anything else is
// base64 with an *_encoding field saying so.
type recordJSON struct {
	Partition     int32             `json:"partition"`
	Offset        int64             `json:"offset"`
	Timestamp     int64             `json:"timestamp"`
	Key           *string           `json:"key"`
	KeyEncoding   string            `json:"key_encoding,omitempty"`
	Value         json.RawMessage   `json:"value"`
	ValueEncoding string            `json:"value_encoding,omitempty"`
	Headers       map[string]string `json:"headers,omitempty"`
}

func textOrBase64(b []byte) (string, string) {
	if utf8.Valid(b) {
		return string(b), ""
	}
	return base64.StdEncoding.EncodeToString(b), "base64"
}

func (d *Daemon) getRecords(w http.ResponseWriter, r *http.Request) {
	t := d.topic(w, r)
	if t == nil {
		return
	}
	q := r.URL.Query()
	intParam := func(name string, def int64) (int64, bool) {
		s := q.Get(name)
		if s == "" {
			return def, true
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, "query parameter %s: %q is not an integer", name, s)
			return 0, false
		}
		return v, true
	}
	part, ok := intParam("partition", 0)
	if !ok {
		return
	}
	if part < 0 || part > math.MaxInt32 {
		writeError(w, http.StatusBadRequest, "query parameter partition: %d is outside 0..%d", part, math.MaxInt32)
		return
	}
	p, err := t.Partition(int32(part))
	if err != nil {
		writeError(w, http.StatusNotFound, "topic %s has no partition %d", t.Name(), part)
		return
	}
	offset, ok := intParam("offset", p.StartOffset())
	if !ok {
		return
	}
	limit, ok := intParam("limit", 100)
	if !ok {
		return
	}
	if limit < 1 || limit > 10000 {
		writeError(w, http.StatusBadRequest, "query parameter limit: %d is outside 1..10000", limit)
		return
	}
	out := []recordJSON{}
	next := offset
	hwm := p.HighWatermark()
	for int64(len(out)) < limit {
		recs, n, h, err := p.ReadRecords(next, 256<<10)
		hwm = h
		if errors.Is(err, commitlog.ErrOffsetOutOfRange) {
			writeError(w, http.StatusRequestedRangeNotSatisfiable, "offset %d is outside %d..%d", next, p.StartOffset(), hwm)
			return
		}
		if err != nil {
			writeError(w, http.StatusInternalServerError, "read: %v", err)
			return
		}
		for _, rec := range recs {
			if int64(len(out)) == limit {
				n = rec.Offset
				break
			}
			out = append(out, toRecordJSON(p.ID(), rec))
		}
		if n == next || n >= hwm {
			next = n
			break
		}
		next = n
	}
	writeJSON(w, http.StatusOK, map[string]any{"records": out, "next_offset": next, "high_watermark": hwm})
}

func toRecordJSON(part int32, rec commitlog.Record) recordJSON {
	rj := recordJSON{Partition: part, Offset: rec.Offset, Timestamp: rec.Timestamp}
	if rec.Key != nil {
		k, enc := textOrBase64(rec.Key)
		rj.Key, rj.KeyEncoding = &k, enc
	}
	switch {
	case rec.Value == nil:
		rj.Value = json.RawMessage("null")
	case json.Valid(rec.Value):
		rj.Value = json.RawMessage(rec.Value)
	default:
		v, enc := textOrBase64(rec.Value)
		b, _ := json.Marshal(v)
		rj.Value, rj.ValueEncoding = b, enc
		if enc == "" {
			rj.ValueEncoding = "text"
		}
	}
	if len(rec.Headers) > 0 {
		rj.Headers = make(map[string]string, len(rec.Headers))
		for _, h := range rec.Headers {
			rj.Headers[h.Key], _ = textOrBase64(h.Value)
		}
	}
	return rj
}

//go:embed openapi.json
var openAPI []byte

// serveOpenAPI serves the API's description (openapi.json).
func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPI)
}
