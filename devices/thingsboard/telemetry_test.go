package thingsboard

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the expected.json files of golden tests")

// recordValues renders entries as the broker will append them: one
// AppendRecordValue per entry, in a JSON array, one per line.
func recordValues(entries []Entry) []byte {
	b := []byte("[")
	for i, e := range entries {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '\n')
		b = AppendRecordValue(b, e.Ts, e.Values)
	}
	if len(entries) > 0 {
		b = append(b, '\n')
	}
	return append(b, "]\n"...)
}

// errorGolden is the expected.json of an error case: the reason must be
// contained in the error message.
type errorGolden struct {
	Error string `json:"error"`
}

// runGolden runs parse on every testdata/<dir>/<case>/payload.json and
// compares with expected.json, which is either the rendered output or
// {"error":"<reason>"}.
func runGolden(t *testing.T, dir string, parse func([]byte) ([]byte, error)) {
	t.Helper()
	cases, err := filepath.Glob(filepath.Join("testdata", dir, "*", "payload.json"))
	if err != nil || len(cases) == 0 {
		t.Fatalf("no golden cases in testdata/%s: %v", dir, err)
	}
	for _, path := range cases {
		caseDir := filepath.Dir(path)
		t.Run(filepath.Base(caseDir), func(t *testing.T) {
			payload, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			got, perr := parse(payload)
			if perr != nil {
				if !errors.Is(perr, ErrInvalidPayload) {
					t.Fatalf("error %v does not wrap ErrInvalidPayload", perr)
				}
				var pe *PayloadError
				if !errors.As(perr, &pe) {
					t.Fatalf("error %v is not a *PayloadError", perr)
				}
				got, _ = json.Marshal(errorGolden{Error: pe.Reason})
				got = append(got, '\n')
			}
			expPath := filepath.Join(caseDir, "expected.json")
			if *update {
				if err := os.WriteFile(expPath, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(expPath)
			if err != nil {
				t.Fatal(err)
			}
			var eg errorGolden
			if json.Unmarshal(want, &eg) == nil && eg.Error != "" {
				if perr == nil {
					t.Fatalf("parsed, want error %q; got\n%s", eg.Error, got)
				}
				if !strings.Contains(perr.Error(), eg.Error) {
					t.Fatalf("error %q, want it to contain %q", perr, eg.Error)
				}
				return
			}
			if perr != nil {
				t.Fatalf("unexpected error %v", perr)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("got\n%s\nwant\n%s", got, want)
			}
		})
	}
}

func TestTelemetryGolden(t *testing.T) {
	runGolden(t, "telemetry", func(payload []byte) ([]byte, error) {
		entries, err := ParseTelemetry(payload)
		if err != nil {
			return nil, err
		}
		out := recordValues(entries)
		checkReparse(t, entries)
		return out, nil
	})
}

// checkReparse asserts the canonical-output invariant: every record value
// is valid JSON and parses back to the same entry.
func checkReparse(t testing.TB, entries []Entry) {
	t.Helper()
	for _, e := range entries {
		rec := AppendRecordValue(nil, e.Ts, e.Values)
		if !json.Valid(rec) {
			t.Fatalf("record value is not valid JSON: %q", rec)
		}
		again, err := ParseTelemetry(rec)
		if err != nil {
			t.Fatalf("record value %s does not parse: %v", rec, err)
		}
		if len(again) != 1 || !entriesEqual(again[0], e) {
			t.Fatalf("record value %s parsed back to %+v, want %+v", rec, again, e)
		}
	}
}

func entriesEqual(a, b Entry) bool {
	return a.Ts == b.Ts && kvsEqual(a.Values, b.Values)
}

func kvsEqual(a, b []KV) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || !a[i].Value.Equal(b[i].Value) {
			return false
		}
	}
	return true
}

func TestParseAttributes(t *testing.T) {
	tests := []struct {
		name, payload string
		want          string // AppendObject of the result, or "error"
	}{
		{"object", `{"attribute1":"value1","attribute2":true,"a3":{"nested":1},"n":null,"x":1.50}`,
			`{"attribute1":"value1","attribute2":true,"a3":{"nested":1},"x":1.5}`},
		{"empty", `{}`, `{}`},
		{"duplicates", `{"a":1,"b":2,"a":3}`, `{"a":3,"b":2}`},
		{"typed_strings", `{"a":"7","b":"7.0","c":"x"}`, `{"a":7,"b":7.0,"c":"x"}`},
		{"array_root", `[{"a":1}]`, "error"},
		{"ts_form_is_plain", `{"ts":1,"values":{"a":1}}`, `{"ts":1,"values":{"a":1}}`},
		{"empty_payload", ``, "error"},
		{"empty_key", `{"":1}`, "error"},
		{"trailing", `{"a":1}]`, "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kvs, err := ParseAttributes([]byte(tt.payload))
			if tt.want == "error" {
				if !errors.Is(err, ErrInvalidPayload) {
					t.Fatalf("got %v, %v; want an ErrInvalidPayload error", kvs, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := string(AppendObject(nil, kvs)); got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
		})
	}
}

// TestParseTelemetryArena checks that returned values do not alias the
// pooled buffers: a second parse must not change the first result.
func TestParseTelemetryArena(t *testing.T) {
	first, err := ParseTelemetry([]byte(`{"key":"value","j":{"a":[1,2]}}`))
	if err != nil {
		t.Fatal(err)
	}
	before := string(recordValues(first))
	for range 10 {
		if _, err := ParseTelemetry([]byte(`{"other":"zzzzzz","j":{"b":[3,4,5,6]}}`)); err != nil {
			t.Fatal(err)
		}
	}
	if after := string(recordValues(first)); after != before {
		t.Fatalf("first result changed from %s to %s", before, after)
	}
	// Appending to a returned JSON value must not clobber its neighbour.
	j := first[0].Values[1].Value.JSON
	_ = append(j, "garbage"...)
	if after := string(recordValues(first)); after != before {
		t.Fatalf("append to JSON value changed the result: %s", after)
	}
}

// TestConcurrentParse runs parsers in parallel so the race detector can
// check the parser pool; each goroutine is waited for.
func TestConcurrentParse(t *testing.T) {
	payloads := [][]byte{
		[]byte(`{"a":1,"s":"x","j":{"k":[1,2]}}`),
		[]byte(`[{"ts":5,"values":{"b":"7.5"}},{"c":true}]`),
		[]byte(`{"bad":}`),
	}
	want := make([]string, len(payloads))
	for i, p := range payloads {
		e, err := ParseTelemetry(p)
		want[i] = string(recordValues(e)) + fmt.Sprint(err)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				k := (g + i) % len(payloads)
				e, err := ParseTelemetry(payloads[k])
				if got := string(recordValues(e)) + fmt.Sprint(err); got != want[k] {
					errs <- got
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for got := range errs {
		t.Errorf("concurrent parse gave %s", got)
	}
}
