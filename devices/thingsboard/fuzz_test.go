package thingsboard

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// Fuzz targets for every decoder. The invariants: no panic; every error
// wraps ErrInvalidPayload as a *PayloadError; anything accepted re-encodes
// to valid JSON that parses back to equal values; and the scanner never
// accepts what a strict JSON validator rejects, except for the two
// leniencies it copies from ThingsBoard (raw control characters and
// invalid UTF-8 inside strings).

// addGoldenSeeds adds every payload of the telemetry golden cases.
func addGoldenSeeds(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join("testdata", "telemetry", "*", "payload.json"))
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
}

// checkErr asserts the error contract.
func checkErr(t *testing.T, err error) {
	t.Helper()
	var pe *PayloadError
	if !errors.Is(err, ErrInvalidPayload) || !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not a *PayloadError wrapping ErrInvalidPayload", err, err)
	}
}

// lenientOnly reports whether data holds bytes that only the lenient
// string rules accept (raw control characters or invalid UTF-8), so a
// strict validator may disagree with an accepting parse.
func lenientOnly(data []byte) bool {
	if !utf8.Valid(data) {
		return true
	}
	for _, c := range data {
		if c < 0x20 && c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return true
		}
	}
	// Tabs, newlines and carriage returns are whitespace outside strings
	// but raw control characters inside them.
	return bytes.ContainsAny(data, "\t\n\r")
}

// checkStrict asserts that an accepted payload is JSON by the book.
func checkStrict(t *testing.T, data []byte) {
	t.Helper()
	if !json.Valid(data) && !lenientOnly(data) {
		t.Fatalf("accepted invalid JSON %q", data)
	}
}

// checkKVs asserts the shape of parsed key/values.
func checkKVs(t *testing.T, kvs []KV) {
	t.Helper()
	for _, kv := range kvs {
		if kv.Key == "" || !utf8.ValidString(kv.Key) {
			t.Fatalf("bad key %q", kv.Key)
		}
		switch v := kv.Value; v.Kind {
		case KindBool, KindLong, KindDouble:
		case KindString:
			if !utf8.ValidString(v.Str) {
				t.Fatalf("string value %q is not UTF-8", v.Str)
			}
		case KindJSON:
			if !json.Valid(v.JSON) || (v.JSON[0] != '{' && v.JSON[0] != '[') {
				t.Fatalf("JSON value %q is not a JSON object or array", v.JSON)
			}
		default:
			t.Fatalf("bad kind %v", v.Kind)
		}
	}
}

func FuzzParseTelemetry(f *testing.F) {
	addGoldenSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := ParseTelemetry(data)
		if err != nil {
			checkErr(t, err)
			return
		}
		checkStrict(t, data)
		for _, e := range entries {
			checkKVs(t, e.Values)
		}
		checkReparse(t, entries)
	})
}

func FuzzParseGatewayTelemetry(f *testing.F) {
	for _, s := range []string{
		`{"Device A":[{"ts":1483228800000,"values":{"temperature":42}}],"Device B":[{"humidity":80}]}`,
		`{"A":[{"ts":5,"values":{"t":1.0},"metadata":{"connector":"MQTT","receivedTs":1,"publishedTs":2}}]}`,
		`{"A":{"t":1},"B":[{"t":"2"}],"C":5,"A":[]}`,
		`{"A":[{"j":{"k":[1,{"z":null}]},"s":"x\u00e9","n":null,"b":true,"big":1e30}]}`,
		`{"":[]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		devices, err := ParseGatewayTelemetry(data)
		if err != nil {
			checkErr(t, err)
			return
		}
		checkStrict(t, data)
		if len(devices) == 0 {
			t.Fatal("accepted a payload without devices")
		}
		// Re-encode as a gateway payload and parse it again.
		out := []byte{'{'}
		seen := map[string]bool{}
		for i, d := range devices {
			if d.Device == "" || seen[d.Device] {
				t.Fatalf("empty or repeated device name %q", d.Device)
			}
			seen[d.Device] = true
			if i > 0 {
				out = append(out, ',')
			}
			out = appendString(out, d.Device)
			out = append(out, ':', '[')
			for j, e := range d.Entries {
				checkKVs(t, e.Values)
				if j > 0 {
					out = append(out, ',')
				}
				out = AppendRecordValue(out, e.Ts, e.Values)
			}
			out = append(out, ']')
		}
		out = append(out, '}')
		if !json.Valid(out) {
			t.Fatalf("re-encoded payload is not valid JSON: %s", out)
		}
		again, err := ParseGatewayTelemetry(out)
		if err != nil {
			t.Fatalf("re-encoded payload %s: %v", out, err)
		}
		if len(again) != len(devices) {
			t.Fatalf("re-encoded payload has %d devices, want %d", len(again), len(devices))
		}
		for i := range devices {
			a, b := again[i], devices[i]
			if a.Device != b.Device || len(a.Entries) != len(b.Entries) {
				t.Fatalf("device %d: got %q with %d entries, want %q with %d", i, a.Device, len(a.Entries), b.Device, len(b.Entries))
			}
			for j := range a.Entries {
				if !entriesEqual(a.Entries[j], b.Entries[j]) {
					t.Fatalf("device %q entry %d: got %+v, want %+v", a.Device, j, a.Entries[j], b.Entries[j])
				}
			}
		}
	})
}

// encodeAttributeRequest writes a request that parses to r.
func encodeAttributeRequest(r AttributeRequest) []byte {
	var parts []string
	section := func(name string, keys []string, all, other bool) {
		switch {
		case all && other:
			// Both scopes wanted entirely: {} says it.
		case all:
			parts = append(parts, `"`+name+`":""`)
		case len(keys) > 0:
			parts = append(parts, `"`+name+`":`+string(appendString(nil, strings.Join(keys, ","))))
		}
	}
	section("clientKeys", r.ClientKeys, r.AllClient, r.AllShared)
	section("sharedKeys", r.SharedKeys, r.AllShared, r.AllClient)
	if len(parts) == 0 && !(r.AllClient && r.AllShared) {
		// Neither scope: ask for one impossible key list, which cannot
		// be expressed; the parser never produces this state.
		return nil
	}
	return []byte("{" + strings.Join(parts, ",") + "}")
}

func FuzzParseAttributeRequest(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `{"clientKeys":"attribute1,attribute2","sharedKeys":"shared1,shared2"}`,
		`{"clientKeys":" a , ,b,a,\t"}`, `{"sharedKeys":""}`, `{"clientKeys":12,"x":[1]}`,
		`{"clientKeys":null}`, `{"sharedKeys":"\u00e9,\u0000x"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseAttributeRequest(data)
		if err != nil {
			checkErr(t, err)
			return
		}
		if len(bytes.TrimLeft(data, " \t\r\n")) > 0 {
			checkStrict(t, data)
		}
		for _, scope := range []struct {
			keys []string
			all  bool
		}{{r.ClientKeys, r.AllClient}, {r.SharedKeys, r.AllShared}} {
			if scope.all != (scope.keys == nil) {
				t.Fatalf("All flag and nil keys disagree: %#v", r)
			}
			seen := map[string]bool{}
			for _, k := range scope.keys {
				if k == "" || k != trimJava(k) || strings.Contains(k, ",") || seen[k] {
					t.Fatalf("bad key %q in %#v", k, r)
				}
				seen[k] = true
			}
		}
		enc := encodeAttributeRequest(r)
		if enc == nil {
			t.Fatalf("parsed to a request asking for nothing: %#v", r)
		}
		again, err := ParseAttributeRequest(enc)
		if err != nil {
			t.Fatalf("re-encoded %s: %v", enc, err)
		}
		if !attrRequestEqual(again, r) {
			t.Fatalf("re-encoded %s parses to %#v, want %#v", enc, again, r)
		}
	})
}

func attrRequestEqual(a, b AttributeRequest) bool {
	eq := func(x, y []string) bool {
		if (x == nil) != (y == nil) || len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	return a.AllClient == b.AllClient && a.AllShared == b.AllShared && eq(a.ClientKeys, b.ClientKeys) && eq(a.SharedKeys, b.SharedKeys)
}

func FuzzParseProvisionRequest(f *testing.F) {
	for _, s := range []string{
		`{"deviceName":"DEVICE_NAME","provisionDeviceKey":"u7piawkboq8v32dmcmpp","provisionDeviceSecret":"jpmwdn8ptlswmf4m29bw","credentialsType":"ACCESS_TOKEN","token":"DEVICE_ACCESS_TOKEN"}`,
		`{"provisionDeviceKey":"k","provisionDeviceSecret":"s","credentialsType":"MQTT_BASIC","clientId":"c","username":"u","password":"p","gateway":true}`,
		`{"provisionDeviceKey":"k","provisionDeviceSecret":"s","credentialsType":"X509_CERTIFICATE","hash":"-----BEGIN\n"}`,
		`{"provisionDeviceKey":1,"provisionDeviceSecret":true,"gateway":"TRUE"}`,
		`{"provisionDeviceKey":"k"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseProvisionRequest(data)
		if err != nil {
			checkErr(t, err)
			return
		}
		checkStrict(t, data)
		switch r.CredentialsType {
		case CredentialsAccessToken, CredentialsMQTTBasic, CredentialsX509:
		default:
			t.Fatalf("bad credentials type %q", r.CredentialsType)
		}
		enc, err := json.Marshal(map[string]any{
			"deviceName": r.DeviceName, "provisionDeviceKey": r.Key, "provisionDeviceSecret": r.Secret,
			"credentialsType": r.CredentialsType, "token": r.Token, "clientId": r.ClientID,
			"username": r.Username, "password": r.Password, "hash": r.Hash, "gateway": r.Gateway,
		})
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseProvisionRequest(enc)
		if err != nil || again != r {
			t.Fatalf("re-encoded %s parses to %+v, %v; want %+v", enc, again, err, r)
		}
	})
}

func FuzzParseValue(f *testing.F) {
	for _, s := range []string{`42`, `42.0`, `"42"`, `4.2e1`, `1e400`, `123456789012345678901`, `"\u0664"`,
		`{"a":[1,{"a":2,"a":3}]}`, `"-.5"`, `0.00000000000000001`, `true`, `null`, `"x"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, ok, err := ParseValue(data)
		if err != nil {
			checkErr(t, err)
			return
		}
		checkStrict(t, data)
		if !ok {
			return
		}
		checkKVs(t, []KV{{Key: "k", Value: v}})
		out := v.AppendJSON(nil)
		if !json.Valid(out) {
			t.Fatalf("AppendJSON of %q = %q is not valid JSON", data, out)
		}
		again, ok, err := ParseValue(out)
		if err != nil || !ok || !again.Equal(v) {
			t.Fatalf("%q → %s → %+v, %v, %v; want %+v", data, out, again, ok, err, v)
		}
	})
}

func FuzzParseTopic(f *testing.F) {
	for _, s := range []string{"v1/devices/me/telemetry", "v2/a/req/j/5", "v1/devices/me/rpc/request/-7", "v2/r/res/p/1", "v1/gateway/rpc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		top, err := ParseTopic(topic)
		if err != nil {
			checkErr(t, err)
			return
		}
		if top.Kind > TopicGatewayClaim || (top.JSON && !top.Short) {
			t.Fatalf("bad topic %+v", top)
		}
		resp := ResponseTopic(top)
		want := map[TopicKind]SubscriptionKind{TopicAttributesRequest: SubAttributesResponse, TopicRPCRequest: SubRPCResponse}[top.Kind]
		if (resp == "") != (want == SubUnknown) {
			t.Fatalf("response topic %q for %+v", resp, top)
		}
		// The reply must be what a subscription of the same family
		// receives.
		if resp != "" {
			i := strings.LastIndexByte(resp, '/')
			filter := resp[:i+1] + "+"
			k, ok := CheckSubscription(filter, false, false)
			if !ok || k != want || DownlinkTopic(filter, top.RequestID) != resp {
				t.Fatalf("response topic %q of %q does not match subscription %q (%v, %v)", resp, topic, filter, k, ok)
			}
		}
	})
}

// refCompact is a reference for compact: it decodes with encoding/json's
// token stream into an ordered tree where a repeated key keeps its first
// position and its last value (Gson's JsonObject), then writes it back
// with the package's string escaping and numbers as written.
func refCompact(data []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var out []byte
	var walk func() ([]byte, error)
	walk = func() ([]byte, error) {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		switch tok := tok.(type) {
		case json.Delim:
			if tok == '[' {
				b := []byte{'['}
				for i := 0; dec.More(); i++ {
					if i > 0 {
						b = append(b, ',')
					}
					v, err := walk()
					if err != nil {
						return nil, err
					}
					b = append(b, v...)
				}
				_, err := dec.Token()
				return append(b, ']'), err
			}
			var keys []string
			vals := map[string][]byte{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				v, err := walk()
				if err != nil {
					return nil, err
				}
				key := k.(string)
				if _, ok := vals[key]; !ok {
					keys = append(keys, key)
				}
				vals[key] = v
			}
			b := []byte{'{'}
			for i, k := range keys {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendString(b, k)
				b = append(b, ':')
				b = append(b, vals[k]...)
			}
			_, err := dec.Token()
			return append(b, '}'), err
		case string:
			return appendString(nil, tok), nil
		case json.Number:
			return []byte(tok.String()), nil
		case bool:
			return []byte(strconv.FormatBool(tok)), nil
		default:
			return []byte("null"), nil
		}
	}
	out, err := walk()
	return out, err
}

func FuzzCompact(f *testing.F) {
	for _, s := range []string{
		`{"k":1,"m":2,"k":{"z":1,"z":[2,3]},"n":3}`,
		`[{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"a":"long value","q":{}}]`,
		`{"\u0061":1,"a":2,"\ud83d\ude00":"\ud800x\u2028","x":[1.50,-0,1e400,"\u0000"]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, ok, err := ParseValue(data)
		if err != nil || !ok || v.Kind != KindJSON {
			return
		}
		want, err := refCompact(data)
		if err != nil && lenientOnly(data) {
			return // raw control characters in a string
		}
		if err != nil {
			t.Fatalf("accepted %q, encoding/json says %v", data, err)
		}
		if !bytes.Equal(v.JSON, want) {
			t.Fatalf("compact(%q) = %s, want %s", data, v.JSON, want)
		}
	})
}
