package thingsboard

import (
	"encoding/json"
	"strconv"
	"strings"
)

// Device API control messages: attribute requests and responses, shared
// attribute pushes, RPC, session limits, claiming and provisioning
// (JsonMqttAdaptor, JsonConverter, MqttTransportHandler).

// AttributeRequest is a device's request for attribute values
// (v1/devices/me/attributes/request/{id}):
//
//	{"clientKeys":"attribute1,attribute2","sharedKeys":"shared1,shared2"}
//
// Each field is a comma-separated string; names are trimmed and empty ones
// dropped. Following ThingsBoard 4.x (JsonMqttAdaptor sets addClient /
// addShared when a field is present): a field that is present asks for its
// scope, an empty list meaning every attribute of the scope; a field that
// is absent asks for nothing in its scope, unless both are absent, which
// asks for everything.
type AttributeRequest struct {
	// ClientKeys and SharedKeys list the names asked for. nil means every
	// attribute of the scope (then the All flag is set); an empty non-nil
	// slice means none.
	ClientKeys, SharedKeys []string
	AllClient, AllShared   bool
}

// ParseAttributeRequest parses an attribute request. An empty (or
// all-whitespace) payload asks for everything; ThingsBoard itself refuses
// it, since Gson reads it as JSON null.
func ParseAttributeRequest(payload []byte) (AttributeRequest, error) {
	p := getParser(payload)
	defer putParser(p)
	if p.ws(); p.pos == len(payload) {
		return AttributeRequest{AllClient: true, AllShared: true}, nil
	}
	fs, err := p.readObject()
	if err != nil {
		return AttributeRequest{}, err
	}
	client, hasClient, err := p.keyList(fs, "clientKeys")
	if err != nil {
		return AttributeRequest{}, err
	}
	shared, hasShared, err := p.keyList(fs, "sharedKeys")
	if err != nil {
		return AttributeRequest{}, err
	}
	if !hasClient && !hasShared {
		return AttributeRequest{AllClient: true, AllShared: true}, nil
	}
	r := AttributeRequest{ClientKeys: []string{}, SharedKeys: []string{}}
	if hasClient {
		r.ClientKeys, r.AllClient = client, len(client) == 0
		if r.AllClient {
			r.ClientKeys = nil
		}
	}
	if hasShared {
		r.SharedKeys, r.AllShared = shared, len(shared) == 0
		if r.AllShared {
			r.SharedKeys = nil
		}
	}
	return r, nil
}

// keyList reads a comma-separated name list (toStringSet in JsonMqttAdaptor).
func (p *parser) keyList(fs []field, name string) ([]string, bool, error) {
	f := p.field(fs, name)
	if f == nil {
		return nil, false, nil
	}
	s, err := p.fieldStr(f)
	if err != nil {
		return nil, true, err
	}
	var out []string
	for part := range strings.SplitSeq(s, ",") {
		if part = trimJava(part); part != "" {
			out = append(out, part)
		}
	}
	return dedupe(out), true, nil
}

// trimJava is String.trim: it strips every character up to U+0020.
func trimJava(s string) string {
	for len(s) > 0 && s[0] <= ' ' {
		s = s[1:]
	}
	for len(s) > 0 && s[len(s)-1] <= ' ' {
		s = s[:len(s)-1]
	}
	return s
}

// EncodeAttributeResponse encodes the answer to an attribute request:
// {"client":{..},"shared":{..}}, a section omitted when empty
// (JsonConverter.toJson(GetAttributeResponseMsg)).
func EncodeAttributeResponse(client, shared []KV) []byte {
	b := make([]byte, 0, 64)
	b = append(b, '{')
	if len(client) > 0 {
		b = append(b, `"client":`...)
		b = AppendObject(b, client)
	}
	if len(shared) > 0 {
		if len(client) > 0 {
			b = append(b, ',')
		}
		b = append(b, `"shared":`...)
		b = AppendObject(b, shared)
	}
	return append(b, '}')
}

// EncodeAttributesPush encodes a shared attribute update for
// v1/devices/me/attributes: {"k":v,...,"deleted":["x"]}, "deleted" omitted
// when empty (JsonConverter.toJson(AttributeUpdateNotificationMsg)).
func EncodeAttributesPush(updated []KV, deleted []string) []byte {
	return appendAttributesPush(make([]byte, 0, 64), updated, deleted)
}

func appendAttributesPush(b []byte, updated []KV, deleted []string) []byte {
	b = append(b, '{')
	n := 0
	for _, kv := range updated {
		if len(deleted) > 0 && kv.Key == "deleted" {
			continue // the Java JsonObject would overwrite it with the list
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = appendString(b, kv.Key)
		b = append(b, ':')
		b = kv.Value.AppendJSON(b)
	}
	if len(deleted) > 0 {
		if n > 0 {
			b = append(b, ',')
		}
		b = append(b, `"deleted":[`...)
		for i, k := range deleted {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// RPCRequest is a client-side RPC request
// (v1/devices/me/rpc/request/{id}): {"method":"getTime","params":{}}.
type RPCRequest struct {
	Method string
	// Params is the compact JSON of "params", or null when absent
	// (GSON.toJson(object.get("params"))).
	Params json.RawMessage
}

// ParseRPCRequest parses a client-side RPC request; "method" is required.
// ThingsBoard fails with a NullPointerException there and closes the
// connection; here it is an ErrInvalidPayload error like the others.
// "getSessionLimits" is answered locally with EncodeSessionLimits.
func ParseRPCRequest(payload []byte) (RPCRequest, error) {
	p := getParser(payload)
	defer putParser(p)
	fs, err := p.readObject()
	if err != nil {
		return RPCRequest{}, err
	}
	m, err := p.required(fs, "method")
	if err != nil {
		return RPCRequest{}, err
	}
	r := RPCRequest{Params: json.RawMessage("null")}
	if r.Method, err = p.fieldStr(m); err != nil {
		return RPCRequest{}, err
	}
	if f := p.field(fs, "params"); f != nil {
		if r.Params, err = p.fieldRaw(f); err != nil {
			return RPCRequest{}, err
		}
	}
	return r, nil
}

// SessionLimitsMethod is the client-side RPC method the transport answers
// itself.
const SessionLimitsMethod = "getSessionLimits"

// EncodeRPCRequest encodes a server-side RPC request for
// v1/devices/me/rpc/request/{id}: {"method":..,"params":..}
// (JsonConverter.toJson(ToDeviceRpcRequestMsg, false)). params is written
// compacted; empty params are null, and params that are not valid JSON are
// written as a JSON string.
func EncodeRPCRequest(method string, params json.RawMessage) []byte {
	b := make([]byte, 0, 32+len(method)+len(params))
	return appendRPCRequest(b, method, params)
}

func appendRPCRequest(b []byte, method string, params json.RawMessage) []byte {
	b = append(b, `{"method":`...)
	b = appendString(b, method)
	b = append(b, `,"params":`...)
	b = appendRaw(b, params)
	return append(b, '}')
}

// appendRaw appends raw JSON compacted, null when empty, or as a string
// when it is not valid JSON.
func appendRaw(b []byte, raw []byte) []byte {
	p := getParser(raw)
	defer putParser(p)
	if p.ws(); p.pos == len(raw) {
		return append(b, "null"...)
	}
	if err := p.compact(1); err != nil || p.end() != nil {
		return appendString(b, string(raw))
	}
	return append(b, p.arena...)
}

// EncodeSessionLimits answers the getSessionLimits RPC
// (MqttTransportHandler.onGetSessionLimitsRpc):
//
//	{"maxPayloadSize":65536,"maxInflightMessages":100,
//	 "rateLimits":{"messages":null,"telemetryMessages":null,"telemetryDataPoints":null}}
//
// with "gatewayRateLimits" of the same shape for gateways. Ferry sets no
// rate limits, which ThingsBoard reports as nulls (an unset tenant
// profile); the Python SDK treats a missing limit as unlimited.
func EncodeSessionLimits(maxPayloadSize, maxInflight int, gateway bool) []byte {
	const none = `{"messages":null,"telemetryMessages":null,"telemetryDataPoints":null}`
	b := make([]byte, 0, 200)
	b = append(b, `{"maxPayloadSize":`...)
	b = strconv.AppendInt(b, int64(maxPayloadSize), 10)
	b = append(b, `,"maxInflightMessages":`...)
	b = strconv.AppendInt(b, int64(maxInflight), 10)
	b = append(b, `,"rateLimits":`+none...)
	if gateway {
		b = append(b, `,"gatewayRateLimits":`+none...)
	}
	return append(b, '}')
}

// Claim is a claiming request: {"secretKey":"..","durationMs":60000}.
type Claim struct {
	SecretKey  string // "" when absent
	DurationMs int64  // 0 when absent: the server default applies
}

// ParseClaim parses a claim request (v1/devices/me/claim). Both fields are
// optional and an empty payload is allowed
// (JsonConverter.convertToClaimDeviceProto).
func ParseClaim(payload []byte) (Claim, error) {
	if len(payload) == 0 {
		return Claim{}, nil
	}
	p := getParser(payload)
	defer putParser(p)
	fs, err := p.readObject()
	if err != nil {
		return Claim{}, err
	}
	return p.claim(fs)
}

func (p *parser) claim(fs []field) (Claim, error) {
	var c Claim
	var err error
	if f := p.field(fs, "secretKey"); f != nil {
		if c.SecretKey, err = p.fieldStr(f); err != nil {
			return Claim{}, err
		}
	}
	if f := p.field(fs, "durationMs"); f != nil {
		if c.DurationMs, err = p.fieldLong(f); err != nil {
			return Claim{}, err
		}
	}
	return c, nil
}

// Credentials types of a provisioning request.
const (
	CredentialsAccessToken = "ACCESS_TOKEN"
	CredentialsMQTTBasic   = "MQTT_BASIC"
	CredentialsX509        = "X509_CERTIFICATE"
)

// ProvisionRequest is a device provisioning request on /provision/request
// (JsonConverter.buildProvisionRequestMsg):
//
//	{"deviceName":"DEVICE_NAME","provisionDeviceKey":"u7piawkboq8v32dmcmpp",
//	 "provisionDeviceSecret":"jpmwdn8ptlswmf4m29bw","credentialsType":"ACCESS_TOKEN","token":"..."}
type ProvisionRequest struct {
	DeviceName string // "" when absent: the server generates one
	Key        string // provisionDeviceKey, required
	Secret     string // provisionDeviceSecret, required
	// CredentialsType is ACCESS_TOKEN (the default), MQTT_BASIC or
	// X509_CERTIFICATE, with Token, ClientID/Username/Password or Hash (the
	// PEM certificate). All absent: the server generates an access token.
	CredentialsType                           string
	Token, ClientID, Username, Password, Hash string
	Gateway                                   bool // provision the device as a gateway
}

// ParseProvisionRequest parses a provisioning request. ThingsBoard retries
// a payload that is not JSON as protobuf; here it is an error.
func ParseProvisionRequest(payload []byte) (ProvisionRequest, error) {
	p := getParser(payload)
	defer putParser(p)
	fs, err := p.readObject()
	if err != nil {
		return ProvisionRequest{}, err
	}
	r := ProvisionRequest{CredentialsType: CredentialsAccessToken}
	for _, s := range [...]struct {
		name     string
		dst      *string
		required bool
	}{
		{"deviceName", &r.DeviceName, false},
		{"provisionDeviceKey", &r.Key, true},
		{"provisionDeviceSecret", &r.Secret, true},
		{"credentialsType", &r.CredentialsType, false},
		{"token", &r.Token, false},
		{"clientId", &r.ClientID, false},
		{"username", &r.Username, false},
		{"password", &r.Password, false},
		{"hash", &r.Hash, false},
	} {
		f := p.field(fs, s.name)
		if f == nil {
			if s.required {
				return ProvisionRequest{}, invalid("missing %q", s.name)
			}
			continue
		}
		if *s.dst, err = p.fieldStr(f); err != nil {
			return ProvisionRequest{}, err
		}
	}
	switch r.CredentialsType {
	case CredentialsAccessToken, CredentialsMQTTBasic, CredentialsX509:
	default:
		return ProvisionRequest{}, invalid("unsupported credentialsType %q", r.CredentialsType)
	}
	if f := p.field(fs, "gateway"); f != nil {
		if r.Gateway, err = p.fieldBool(f); err != nil {
			return ProvisionRequest{}, err
		}
	}
	return r, nil
}

// Provisioning response statuses.
const (
	ProvisionSuccess  = "SUCCESS"
	ProvisionNotFound = "NOT_FOUND"
	ProvisionFailure  = "FAILURE"
)

// EncodeProvisionSuccess encodes a successful provisioning response for
// /provision/response, members in the server's order
// (JsonConverter.toJson(ProvisionDeviceResponseMsg)):
//
//	{"credentialsValue":"<token>","credentialsType":"ACCESS_TOKEN","status":"SUCCESS"}
//
// token is the access token, or the certificate for X509_CERTIFICATE; for
// MQTT_BASIC credentialsValue is {"clientId":..,"userName":..,"password":..}.
func EncodeProvisionSuccess(credentialsType, token, clientID, username, password string) []byte {
	b := make([]byte, 0, 128)
	b = append(b, `{"credentialsValue":`...)
	if credentialsType == CredentialsMQTTBasic {
		b = append(b, `{"clientId":`...)
		b = appendString(b, clientID)
		b = append(b, `,"userName":`...)
		b = appendString(b, username)
		b = append(b, `,"password":`...)
		b = appendString(b, password)
		b = append(b, '}')
	} else {
		b = appendString(b, token)
	}
	b = append(b, `,"credentialsType":`...)
	b = appendString(b, credentialsType)
	return append(b, `,"status":"SUCCESS"}`...)
}

// EncodeProvisionFailure encodes a failed provisioning response:
// {"errorMsg":msg,"status":status}, status NOT_FOUND ("Provision data was
// not found!") or FAILURE ("Failed to provision device!").
func EncodeProvisionFailure(status, msg string) []byte {
	b := make([]byte, 0, 64+len(msg))
	b = append(b, `{"errorMsg":`...)
	b = appendString(b, msg)
	b = append(b, `,"status":`...)
	b = appendString(b, status)
	return append(b, '}')
}
