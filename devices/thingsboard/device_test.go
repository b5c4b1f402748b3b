package thingsboard

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

func TestParseAttributeRequest(t *testing.T) {
	all := AttributeRequest{AllClient: true, AllShared: true}
	tests := []struct {
		payload string
		want    AttributeRequest
		wantErr bool
	}{
		{``, all, false},
		{" \n", all, false},
		{`{}`, all, false},
		{`{"other":1}`, all, false},
		{`{"clientKeys":"attribute1,attribute2","sharedKeys":"shared1,shared2"}`,
			AttributeRequest{ClientKeys: []string{"attribute1", "attribute2"}, SharedKeys: []string{"shared1", "shared2"}}, false},
		{`{"clientKeys":" a , ,b,a,\t"}`, AttributeRequest{ClientKeys: []string{"a", "b"}, SharedKeys: []string{}}, false},
		{`{"sharedKeys":"s"}`, AttributeRequest{ClientKeys: []string{}, SharedKeys: []string{"s"}}, false},
		{`{"sharedKeys":""}`, AttributeRequest{ClientKeys: []string{}, AllShared: true}, false},
		{`{"clientKeys":" , "}`, AttributeRequest{AllClient: true, SharedKeys: []string{}}, false},
		{`{"clientKeys":"","sharedKeys":""}`, all, false},
		{`{"clientKeys":12}`, AttributeRequest{ClientKeys: []string{"12"}, SharedKeys: []string{}}, false},
		{`{"clientKeys":null}`, AttributeRequest{}, true},
		{`{"clientKeys":["a"]}`, AttributeRequest{}, true},
		{`[]`, AttributeRequest{}, true},
		{`"a"`, AttributeRequest{}, true},
		{`{"clientKeys":"a"} x`, AttributeRequest{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.payload, func(t *testing.T) {
			got, err := ParseAttributeRequest([]byte(tt.payload))
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

func TestEncodeAttributeResponse(t *testing.T) {
	c := []KV{{"a", Value{Kind: KindString, Str: "v"}}}
	s := []KV{{"b", Value{Kind: KindLong, Long: 2}}, {"c", Value{Kind: KindJSON, JSON: []byte(`[1]`)}}}
	tests := []struct {
		client, shared []KV
		want           string
	}{
		{c, s, `{"client":{"a":"v"},"shared":{"b":2,"c":[1]}}`},
		{c, nil, `{"client":{"a":"v"}}`},
		{nil, s, `{"shared":{"b":2,"c":[1]}}`},
		{nil, nil, `{}`},
	}
	for _, tt := range tests {
		if got := string(EncodeAttributeResponse(tt.client, tt.shared)); got != tt.want {
			t.Errorf("got %s, want %s", got, tt.want)
		}
	}
}

func TestEncodeAttributesPush(t *testing.T) {
	kv := []KV{{"key1", Value{Kind: KindString, Str: "value1"}}, {"deleted", Value{Kind: KindBool}}}
	tests := []struct {
		updated []KV
		deleted []string
		want    string
	}{
		{kv[:1], nil, `{"key1":"value1"}`},
		{kv[:1], []string{"k1", "k\"2"}, `{"key1":"value1","deleted":["k1","k\"2"]}`},
		{nil, []string{"k1"}, `{"deleted":["k1"]}`},
		{kv, []string{"k1"}, `{"key1":"value1","deleted":["k1"]}`},
		{kv, nil, `{"key1":"value1","deleted":false}`},
		{nil, nil, `{}`},
	}
	for _, tt := range tests {
		if got := string(EncodeAttributesPush(tt.updated, tt.deleted)); got != tt.want {
			t.Errorf("got %s, want %s", got, tt.want)
		}
	}
}

func TestParseRPCRequest(t *testing.T) {
	tests := []struct {
		payload string
		want    RPCRequest
		wantErr bool
	}{
		{`{"method":"getTime","params":{}}`, RPCRequest{"getTime", json.RawMessage(`{}`)}, false},
		{`{"method":"getSessionLimits","params":{ "timeout" : 5000 }}`, RPCRequest{"getSessionLimits", json.RawMessage(`{"timeout":5000}`)}, false},
		{`{"method":"m"}`, RPCRequest{"m", json.RawMessage(`null`)}, false},
		{`{"method":"m","params":"x"}`, RPCRequest{"m", json.RawMessage(`"x"`)}, false},
		{`{"method":"m","params":null}`, RPCRequest{"m", json.RawMessage(`null`)}, false},
		{`{"method":7,"params":[1, 2]}`, RPCRequest{"7", json.RawMessage(`[1,2]`)}, false},
		{`{"params":{}}`, RPCRequest{}, true},
		{`{"method":null}`, RPCRequest{}, true},
		{`{"method":{}}`, RPCRequest{}, true},
		{`{"method":"m","params":[1,}`, RPCRequest{}, true},
		{``, RPCRequest{}, true},
		{`[]`, RPCRequest{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.payload, func(t *testing.T) {
			got, err := ParseRPCRequest([]byte(tt.payload))
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidPayload) {
					t.Fatalf("got %+v, %v; want an error", got, err)
				}
				return
			}
			if err != nil || got.Method != tt.want.Method || string(got.Params) != string(tt.want.Params) {
				t.Fatalf("got %+v (%s), %v; want %+v (%s)", got, got.Params, err, tt.want, tt.want.Params)
			}
		})
	}
}

func TestEncodeRPCRequest(t *testing.T) {
	tests := []struct {
		method string
		params string
		want   string
	}{
		{"setGpio", `{"pin": 1, "value": true}`, `{"method":"setGpio","params":{"pin":1,"value":true}}`},
		{"m", ``, `{"method":"m","params":null}`},
		{"m", ` `, `{"method":"m","params":null}`},
		{"m", `42`, `{"method":"m","params":42}`},
		{"m", `not json`, `{"method":"m","params":"not json"}`},
		{"m", `{} {}`, `{"method":"m","params":"{} {}"}`},
	}
	for _, tt := range tests {
		got := EncodeRPCRequest(tt.method, json.RawMessage(tt.params))
		if string(got) != tt.want || !json.Valid(got) {
			t.Errorf("EncodeRPCRequest(%q, %q) = %s, want %s", tt.method, tt.params, got, tt.want)
		}
	}
}

func TestEncodeSessionLimits(t *testing.T) {
	const none = `{"messages":null,"telemetryMessages":null,"telemetryDataPoints":null}`
	if got := string(EncodeSessionLimits(65536, 100, false)); got != `{"maxPayloadSize":65536,"maxInflightMessages":100,"rateLimits":`+none+`}` {
		t.Errorf("device: %s", got)
	}
	if got := string(EncodeSessionLimits(65536, 100, true)); got != `{"maxPayloadSize":65536,"maxInflightMessages":100,"rateLimits":`+none+`,"gatewayRateLimits":`+none+`}` {
		t.Errorf("gateway: %s", got)
	}
}

func TestParseClaim(t *testing.T) {
	tests := []struct {
		payload string
		want    Claim
		wantErr bool
	}{
		{``, Claim{}, false},
		{`{}`, Claim{}, false},
		{`{"secretKey":"value","durationMs":60000}`, Claim{"value", 60000}, false},
		{`{"durationMs":"60000"}`, Claim{"", 60000}, false},
		{`{"secretKey":123}`, Claim{"123", 0}, false},
		{`{"durationMs":1.5}`, Claim{}, true},
		{`{"durationMs":"x"}`, Claim{}, true},
		{`{"secretKey":null}`, Claim{}, true},
		{` `, Claim{}, true},
		{`[]`, Claim{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.payload, func(t *testing.T) {
			got, err := ParseClaim([]byte(tt.payload))
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidPayload) {
					t.Fatalf("got %+v, %v; want an error", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestParseProvisionRequest(t *testing.T) {
	tests := []struct {
		payload string
		want    ProvisionRequest
		wantErr bool
	}{
		{`{"deviceName":"DEVICE_NAME","provisionDeviceKey":"u7piawkboq8v32dmcmpp","provisionDeviceSecret":"jpmwdn8ptlswmf4m29bw","credentialsType":"ACCESS_TOKEN","token":"DEVICE_ACCESS_TOKEN"}`,
			ProvisionRequest{DeviceName: "DEVICE_NAME", Key: "u7piawkboq8v32dmcmpp", Secret: "jpmwdn8ptlswmf4m29bw", CredentialsType: "ACCESS_TOKEN", Token: "DEVICE_ACCESS_TOKEN"}, false},
		{`{"provisionDeviceKey":"k","provisionDeviceSecret":"s"}`,
			ProvisionRequest{Key: "k", Secret: "s", CredentialsType: "ACCESS_TOKEN"}, false},
		{`{"provisionDeviceKey":"k","provisionDeviceSecret":"s","credentialsType":"MQTT_BASIC","clientId":"c","username":"u","password":"p","gateway":true}`,
			ProvisionRequest{Key: "k", Secret: "s", CredentialsType: "MQTT_BASIC", ClientID: "c", Username: "u", Password: "p", Gateway: true}, false},
		{`{"provisionDeviceKey":"k","provisionDeviceSecret":"s","credentialsType":"X509_CERTIFICATE","hash":"-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----"}`,
			ProvisionRequest{Key: "k", Secret: "s", CredentialsType: "X509_CERTIFICATE", Hash: "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----"}, false},
		{`{"provisionDeviceKey":"k","provisionDeviceSecret":"s","gateway":"TRUE"}`,
			ProvisionRequest{Key: "k", Secret: "s", CredentialsType: "ACCESS_TOKEN", Gateway: true}, false},
		{`{"provisionDeviceKey":"k","provisionDeviceSecret":"s","gateway":1}`,
			ProvisionRequest{Key: "k", Secret: "s", CredentialsType: "ACCESS_TOKEN"}, false},
		{`{"provisionDeviceKey":"k"}`, ProvisionRequest{}, true},
		{`{"provisionDeviceSecret":"s"}`, ProvisionRequest{}, true},
		{`{"provisionDeviceKey":null,"provisionDeviceSecret":"s"}`, ProvisionRequest{}, true},
		{`{"provisionDeviceKey":"k","provisionDeviceSecret":"s","credentialsType":"access_token"}`, ProvisionRequest{}, true},
		{`{"provisionDeviceKey":"k","provisionDeviceSecret":"s","credentialsType":null}`, ProvisionRequest{}, true},
		{`{"provisionDeviceKey":"k","provisionDeviceSecret":"s","gateway":null}`, ProvisionRequest{}, true},
		{`{"provisionDeviceKey":"k","provisionDeviceSecret":"s","token":{}}`, ProvisionRequest{}, true},
		{`provision`, ProvisionRequest{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.payload, func(t *testing.T) {
			got, err := ParseProvisionRequest([]byte(tt.payload))
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidPayload) {
					t.Fatalf("got %+v, %v; want an error", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestEncodeProvision(t *testing.T) {
	tests := []struct{ got, want string }{
		{string(EncodeProvisionSuccess("ACCESS_TOKEN", "tok", "", "", "")),
			`{"credentialsValue":"tok","credentialsType":"ACCESS_TOKEN","status":"SUCCESS"}`},
		{string(EncodeProvisionSuccess("MQTT_BASIC", "", "c", "u", "p")),
			`{"credentialsValue":{"clientId":"c","userName":"u","password":"p"},"credentialsType":"MQTT_BASIC","status":"SUCCESS"}`},
		{string(EncodeProvisionSuccess("X509_CERTIFICATE", "-----BEGIN\nX", "", "", "")),
			`{"credentialsValue":"-----BEGIN\nX","credentialsType":"X509_CERTIFICATE","status":"SUCCESS"}`},
		{string(EncodeProvisionFailure(ProvisionNotFound, "Provision data was not found!")),
			`{"errorMsg":"Provision data was not found!","status":"NOT_FOUND"}`},
		{string(EncodeProvisionFailure(ProvisionFailure, "Failed to provision device!")),
			`{"errorMsg":"Failed to provision device!","status":"FAILURE"}`},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %s, want %s", tt.got, tt.want)
		}
	}
}
