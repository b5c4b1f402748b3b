package thingsboard

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// renderDevices renders gateway telemetry as "Device: record record; ...".
func renderDevices(ds []DeviceEntries) string {
	var parts []string
	for _, d := range ds {
		s := d.Device + ":"
		for _, e := range d.Entries {
			s += " " + string(AppendRecordValue(nil, e.Ts, e.Values))
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

func TestParseGatewayTelemetry(t *testing.T) {
	const meta = `"metadata":{"connector":"MQTT","receivedTs":1,"publishedTs":"2"}`
	tests := []struct {
		name, payload, want string // want "error" for an error
	}{
		{"doc_example", `{"Device A":[{"ts":1483228800000,"values":{"temperature":42}},{"ts":1483228800001,"values":{"temperature":43}}],"Device B":[{"humidity":80}]}`,
			`Device A: {"ts":1483228800000,"values":{"temperature":42}} {"ts":1483228800001,"values":{"temperature":43}}; Device B: {"ts":0,"values":{"humidity":80}}`},
		{"metadata_stripped", `{"A":[{"ts":5,"values":{"t":1.0},` + meta + `},{"x":1,` + meta + `}]}`,
			`A: {"ts":5,"values":{"t":1.0}} {"ts":0,"values":{"x":1}}`},
		{"metadata_only", `{"A":[{` + meta + `}]}`, `A: {"ts":0,"values":{}}`},
		{"non_array_skipped", `{"A":{"t":1},"B":[{"t":2}],"C":5}`, `B: {"ts":0,"values":{"t":2}}`},
		{"empty_array_kept", `{"A":[]}`, `A:`},
		{"duplicate_device", `{"A":[{"t":1}],"B":[{"t":2}],"A":[{"t":3}]}`, `A: {"ts":0,"values":{"t":3}}; B: {"ts":0,"values":{"t":2}}`},
		{"duplicate_device_to_non_array", `{"A":[{"t":1}],"B":[{"t":2}],"A":null}`, `B: {"ts":0,"values":{"t":2}}`},
		{"typing", `{"A":[{"s":"42","d":"4.2","j":{"k":[1]}}]}`, `A: {"ts":0,"values":{"s":42,"d":4.2,"j":{"k":[1]}}}`},
		{"none_usable", `{"A":{"t":1}}`, "error"},
		{"empty_object", `{}`, "error"},
		{"root_array", `[{"A":[]}]`, "error"},
		{"item_not_object", `{"A":[1]}`, "error"},
		{"bad_entry", `{"A":[{"ts":"x","values":{}}]}`, "error"},
		{"bad_metadata_type", `{"A":[{"t":1,"metadata":[]}]}`, "error"},
		{"metadata_missing_field", `{"A":[{"t":1,"metadata":{"connector":"c","receivedTs":1}}]}`, "error"},
		{"metadata_null_field", `{"A":[{"t":1,"metadata":{"connector":null,"receivedTs":1,"publishedTs":2}}]}`, "error"},
		{"metadata_bad_ts", `{"A":[{"t":1,"metadata":{"connector":"c","receivedTs":"x","publishedTs":2}}]}`, "error"},
		{"empty_device_name", `{"":[{"t":1}]}`, "error"},
		{"invalid_skipped_value", `{"A":[{"t":1}],"B":{"x":}}`, "error"},
		{"trailing", `{"A":[{"t":1}]}}`, "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseGatewayTelemetry([]byte(tt.payload))
			if tt.want == "error" {
				if !errors.Is(err, ErrInvalidPayload) {
					t.Fatalf("got %s, %v; want an error", renderDevices(got), err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r := renderDevices(got); r != tt.want {
				t.Fatalf("got  %s\nwant %s", r, tt.want)
			}
			for _, d := range got {
				checkReparse(t, d.Entries)
			}
		})
	}
}

func TestParseGatewayAttributes(t *testing.T) {
	tests := []struct {
		name, payload, want string
	}{
		{"doc_example", `{"Device A":{"attribute1":"value1","attribute2":42},"Device B":{"attribute1":"value1","attribute2":42}}`,
			`Device A {"attribute1":"value1","attribute2":42}; Device B {"attribute1":"value1","attribute2":42}`},
		{"non_object_skipped", `{"A":[1],"B":{"x":true},"C":"s"}`, `B {"x":true}`},
		{"empty_values", `{"A":{}}`, `A {}`},
		{"duplicates", `{"A":{"x":1},"A":{"y":2,"y":3}}`, `A {"y":3}`},
		{"none_usable", `{"A":1}`, "error"},
		{"empty_key", `{"A":{"":1}}`, "error"},
		{"root_array", `[]`, "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseGatewayAttributes([]byte(tt.payload))
			if tt.want == "error" {
				if !errors.Is(err, ErrInvalidPayload) {
					t.Fatalf("got %+v, %v; want an error", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var parts []string
			for _, d := range got {
				parts = append(parts, d.Device+" "+string(AppendObject(nil, d.Values)))
			}
			if r := strings.Join(parts, "; "); r != tt.want {
				t.Fatalf("got  %s\nwant %s", r, tt.want)
			}
		})
	}
}

func TestParseGatewayConnectDisconnect(t *testing.T) {
	tests := []struct {
		payload string
		want    GatewayDevice
		wantErr bool
	}{
		{`{"device":"Device A","type":"Sensor A"}`, GatewayDevice{"Device A", "Sensor A"}, false},
		{`{"device":"Device A"}`, GatewayDevice{"Device A", "default"}, false},
		{`{"device":"Device A","type":null}`, GatewayDevice{"Device A", "default"}, false},
		{`{"device":"Device A","type":""}`, GatewayDevice{"Device A", "default"}, false},
		{`{"device":42}`, GatewayDevice{"42", "default"}, false},
		{`{"device":""}`, GatewayDevice{}, true},
		{`{"type":"x"}`, GatewayDevice{}, true},
		{`{"device":{}}`, GatewayDevice{}, true},
		{`{"device":"A","type":[]}`, GatewayDevice{}, true},
		{`"A"`, GatewayDevice{}, true},
	}
	for _, tt := range tests {
		got, err := ParseGatewayConnect([]byte(tt.payload))
		if tt.wantErr {
			if !errors.Is(err, ErrInvalidPayload) {
				t.Errorf("connect %s: got %+v, %v; want an error", tt.payload, got, err)
			}
		} else if err != nil || got != tt.want {
			t.Errorf("connect %s: got %+v, %v; want %+v", tt.payload, got, err, tt.want)
		}
		name, err := ParseGatewayDisconnect([]byte(tt.payload))
		if tt.wantErr && tt.payload != `{"device":"A","type":[]}` {
			if !errors.Is(err, ErrInvalidPayload) {
				t.Errorf("disconnect %s: got %q, %v; want an error", tt.payload, name, err)
			}
		} else if !tt.wantErr && (err != nil || name != tt.want.Device) {
			t.Errorf("disconnect %s: got %q, %v; want %q", tt.payload, name, err, tt.want.Device)
		}
	}
}

func TestParseGatewayAttributeRequest(t *testing.T) {
	tests := []struct {
		payload string
		want    GatewayAttributeRequest
		wantErr bool
	}{
		{`{"id":1,"device":"Device A","client":true,"key":"attribute1"}`, GatewayAttributeRequest{1, "Device A", true, []string{"attribute1"}}, false},
		{`{"keys":["a","b","a"],"device":"D","client":false,"id":2}`, GatewayAttributeRequest{2, "D", false, []string{"a", "b"}}, false},
		{`{"id":"3","device":"D","client":"true","keys":[]}`, GatewayAttributeRequest{3, "D", true, []string{}}, false},
		{`{"id":3,"device":"D","client":true,"key":"k","keys":["x"]}`, GatewayAttributeRequest{3, "D", true, []string{"k"}}, false},
		{`{"id":3,"device":"D","client":true,"keys":[1,true]}`, GatewayAttributeRequest{3, "D", true, []string{"1", "true"}}, false},
		{`{"id":3,"device":"D","client":true}`, GatewayAttributeRequest{}, true},
		{`{"id":3,"device":"D","key":"k"}`, GatewayAttributeRequest{}, true},
		{`{"device":"D","client":true,"key":"k"}`, GatewayAttributeRequest{}, true},
		{`{"id":2147483648,"device":"D","client":true,"key":"k"}`, GatewayAttributeRequest{}, true},
		{`{"id":1.5,"device":"D","client":true,"key":"k"}`, GatewayAttributeRequest{}, true},
		{`{"id":1,"client":true,"key":"k"}`, GatewayAttributeRequest{}, true},
		{`{"id":1,"device":"D","client":[],"key":"k"}`, GatewayAttributeRequest{}, true},
		{`{"id":1,"device":"D","client":true,"keys":"k"}`, GatewayAttributeRequest{}, true},
		{`{"id":1,"device":"D","client":true,"keys":[null]}`, GatewayAttributeRequest{}, true},
		{`{"id":1,"device":"D","client":true,"key":null}`, GatewayAttributeRequest{}, true},
		{`{"id":1,"device":"Device A","client":["a"],"shared":["b"]}`, GatewayAttributeRequest{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.payload, func(t *testing.T) {
			got, err := ParseGatewayAttributeRequest([]byte(tt.payload))
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidPayload) {
					t.Fatalf("got %+v, %v; want an error", got, err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %#v, %v; want %#v", got, err, tt.want)
			}
		})
	}
}

func TestGatewayEncoders(t *testing.T) {
	one := []KV{{"attribute1", Value{Kind: KindString, Str: "value1"}}}
	two := append(one[:1:1], KV{"b", Value{Kind: KindDouble, Double: 2.5}})
	tests := []struct{ got, want string }{
		{string(EncodeGatewayAttributeResponse(1, "Device A", true, one)), `{"id":1,"device":"Device A","value":"value1"}`},
		{string(EncodeGatewayAttributeResponse(1, "Device A", false, one)), `{"id":1,"device":"Device A","values":{"attribute1":"value1"}}`},
		{string(EncodeGatewayAttributeResponse(2, "A", true, two)), `{"id":2,"device":"A","values":{"attribute1":"value1","b":2.5}}`},
		{string(EncodeGatewayAttributeResponse(3, "A", true, nil)), `{"id":3,"device":"A"}`},
		{string(EncodeGatewayAttributesPush("Device A", one, []string{"x"})), `{"device":"Device A","data":{"attribute1":"value1","deleted":["x"]}}`},
		{string(EncodeGatewayAttributesPush("A", nil, nil)), `{"device":"A","data":{}}`},
		{string(EncodeGatewayRPCRequest("Device A", 42, "toggle_gpio", json.RawMessage(`{"pin": 1}`))), `{"device":"Device A","data":{"id":42,"method":"toggle_gpio","params":{"pin":1}}}`},
		{string(EncodeGatewayRPCRequest("A", 1, "m", nil)), `{"device":"A","data":{"id":1,"method":"m","params":null}}`},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got  %s\nwant %s", tt.got, tt.want)
		}
		if !json.Valid([]byte(tt.got)) {
			t.Errorf("invalid JSON %s", tt.got)
		}
	}
}

func TestParseGatewayRPCResponse(t *testing.T) {
	tests := []struct {
		payload string
		want    GatewayRPCResponse
		wantErr bool
	}{
		{`{"device":"Device A","id":42,"data":{"success": true}}`, GatewayRPCResponse{"Device A", 42, json.RawMessage(`{"success":true}`)}, false},
		{`{"device":"A","id":"7","data":"ok"}`, GatewayRPCResponse{"A", 7, json.RawMessage(`"ok"`)}, false},
		{`{"device":"A","id":7,"data":null}`, GatewayRPCResponse{"A", 7, json.RawMessage(`null`)}, false},
		{`{"device":"A","id":7}`, GatewayRPCResponse{}, true},
		{`{"device":"A","data":1}`, GatewayRPCResponse{}, true},
		{`{"id":7,"data":1}`, GatewayRPCResponse{}, true},
		{`{"device":"A","id":7.5,"data":1}`, GatewayRPCResponse{}, true},
	}
	for _, tt := range tests {
		got, err := ParseGatewayRPCResponse([]byte(tt.payload))
		if tt.wantErr {
			if !errors.Is(err, ErrInvalidPayload) {
				t.Errorf("%s: got %+v, %v; want an error", tt.payload, got, err)
			}
			continue
		}
		if err != nil || got.Device != tt.want.Device || got.ID != tt.want.ID || string(got.Data) != string(tt.want.Data) {
			t.Errorf("%s: got %+v (%s), %v; want %+v", tt.payload, got, got.Data, err, tt.want)
		}
	}
}

func TestParseGatewayClaim(t *testing.T) {
	tests := []struct {
		payload string
		want    map[string]Claim
		wantErr bool
	}{
		{`{"Device A":{"secretKey":"value_A","durationMs":60000},"Device B":{"secretKey":"value_B","durationMs":60000}}`,
			map[string]Claim{"Device A": {"value_A", 60000}, "Device B": {"value_B", 60000}}, false},
		{`{"A":{},"B":"skip","C":[1]}`, map[string]Claim{"A": {}}, false},
		{`{"A":{"secretKey":"1"},"A":{"secretKey":"2"}}`, map[string]Claim{"A": {"2", 0}}, false},
		{`{"A":"x"}`, nil, true},
		{`{}`, nil, true},
		{`{"":{}}`, nil, true},
		{`{"A":{"durationMs":"x"}}`, nil, true},
		{`[]`, nil, true},
	}
	for _, tt := range tests {
		got, err := ParseGatewayClaim([]byte(tt.payload))
		if tt.wantErr {
			if !errors.Is(err, ErrInvalidPayload) {
				t.Errorf("%s: got %+v, %v; want an error", tt.payload, got, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %+v, %v; want %+v", tt.payload, got, err, tt.want)
		}
	}
}
