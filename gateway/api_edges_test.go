package main

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
)

// TestAPIEdges: the HTTP API's answers at its edges — out-of-range query
// values, device names it cannot manage, a device created without
// credentials, wrong methods and unknown paths, deleting attributes that
// do not exist, and the names of topic counters.
func TestAPIEdges(t *testing.T) {
	d := startDaemon(t, "", "")
	var e struct {
		Error string `json:"error"`
	}
	for _, q := range []string{"partition=4294967296", "partition=-1", "partition=x"} {
		if code := d.api("GET", "/api/v1/topics/telemetry/records?"+q, nil, &e); code != http.StatusBadRequest || e.Error == "" {
			t.Fatalf("records?%s: %d %q", q, code, e.Error)
		}
	}
	for _, name := range []string{"   ", " padded", "a/b", ""} {
		if code := d.api("POST", "/api/v1/devices", map[string]string{"name": name, "token": "t-" + name}, &e); code != http.StatusBadRequest || !strings.Contains(e.Error, "name") {
			t.Fatalf("device name %q: %d %q", name, code, e.Error)
		}
	}

	// No credentials: a generated token, returned once, that works.
	var created struct {
		Name  string `json:"name"`
		Token string `json:"token"`
	}
	if code := d.api("POST", "/api/v1/devices", map[string]string{"name": "fresh sensor"}, &created); code != http.StatusCreated || len(created.Token) != 40 {
		t.Fatalf("create without credentials: %d %+v", code, created)
	}
	c := connectDevice(t, d, created.Token)
	publish(t, c, "v1/devices/me/telemetry", `{"t":1}`)
	var got map[string]any
	d.api("GET", "/api/v1/devices/fresh%20sensor", nil, &got)
	if _, shown := got["token"]; shown || got["credentials_type"] != "access_token" || got["connected"] != true {
		t.Fatalf("GET device: %v", got)
	}

	// Methods and paths.
	for _, m := range []struct{ method, path, allow string }{
		{"POST", "/healthz", "GET, HEAD"},
		{"PUT", "/api/v1/topics", "GET, HEAD"},
		{"PATCH", "/api/v1/devices/boiler-1", "GET, PUT, DELETE, HEAD"},
	} {
		req, _ := http.NewRequest(m.method, "http://"+d.HTTPAddr().String()+m.path, nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != m.allow || json.Unmarshal(raw, &e) != nil || e.Error == "" {
			t.Fatalf("%s %s: %d Allow %q %s", m.method, m.path, resp.StatusCode, resp.Header.Get("Allow"), raw)
		}
	}
	if code := d.api("GET", "/api/v1/nothing", nil, &e); code != http.StatusNotFound || !strings.Contains(e.Error, "openapi.json") {
		t.Fatalf("unknown path: %d %q", code, e.Error)
	}

	// Deleting shared attributes reports only those that existed.
	d.api("POST", "/api/v1/devices/boiler-1/attributes/shared", map[string]int{"a": 1, "b": 2}, nil)
	var del struct {
		Deleted []string `json:"deleted"`
	}
	if code := d.api("DELETE", "/api/v1/devices/boiler-1/attributes/shared?keys=a,zzz", nil, &del); code != http.StatusOK || !slices.Equal(del.Deleted, []string{"a"}) {
		t.Fatalf("delete a,zzz: %d %+v", code, del)
	}

	// Topic counters are snake_case like everything else.
	var topic struct {
		Stats map[string]any `json:"stats"`
	}
	d.api("GET", "/api/v1/topics/telemetry", nil, &topic)
	if _, ok := topic.Stats["dropped_records"]; !ok {
		t.Fatalf("stats %v", topic.Stats)
	}
	for k := range topic.Stats {
		if strings.ToLower(k) != k {
			t.Fatalf("stats key %q is not snake_case", k)
		}
	}
}

// TestOpenAPIMatchesRoutes: /api/v1/openapi.json describes exactly the
// routes the daemon serves — every method and path, no more, no less —
// and says which need the token.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	d := startDaemon(t, "", "")
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if code := d.apiAuth("GET", "/api/v1/openapi.json", nil, &doc, ""); code != http.StatusOK || !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi.json: %d %q", code, doc.OpenAPI)
	}
	var documented, served []string
	for path, ops := range doc.Paths {
		for method, raw := range ops {
			if method == "parameters" {
				continue
			}
			var op struct {
				Security []map[string][]string `json:"security"`
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			documented = append(documented, strings.ToUpper(method)+" "+path)
			secured := len(op.Security) > 0
			for _, rt := range d.apiRoutes() {
				if rt.method == strings.ToUpper(method) && rt.path == path && secured != (rt.access != open) {
					t.Errorf("%s %s: documented security %v, served access %d", method, path, secured, rt.access)
				}
			}
		}
	}
	for _, rt := range d.apiRoutes() {
		served = append(served, rt.method+" "+rt.path)
	}
	sort.Strings(documented)
	sort.Strings(served)
	if !slices.Equal(documented, served) {
		t.Fatalf("documented routes:\n  %s\nserved routes:\n  %s", strings.Join(documented, "\n  "), strings.Join(served, "\n  "))
	}
}
