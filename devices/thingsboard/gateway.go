package thingsboard

import (
	"encoding/json"
	"strconv"
)

// Gateway API (v1/gateway/*), following AbstractGatewaySessionHandler
// (the 4.x version with one aggregate PUBACK per publish) and
// JsonConverter.convertToGatewayTelemetry.

// DefaultDeviceType is the device type (profile name) used when a
// gateway connects a device without one, or sends data for a device it
// never connected (DataConstants.DEFAULT_DEVICE_TYPE).
const DefaultDeviceType = "default"

// GatewayDevice is a connect request: {"device":"Device A","type":"Sensor A"}.
type GatewayDevice struct {
	Device string
	Type   string // DefaultDeviceType when absent, null or empty
}

// ParseGatewayConnect parses v1/gateway/connect. "device" is required and
// must not be empty.
func ParseGatewayConnect(payload []byte) (GatewayDevice, error) {
	p := getParser(payload)
	defer putParser(p)
	fs, err := p.readObject()
	if err != nil {
		return GatewayDevice{}, err
	}
	d := GatewayDevice{Type: DefaultDeviceType}
	if d.Device, err = p.deviceName(fs); err != nil {
		return GatewayDevice{}, err
	}
	if f := p.field(fs, "type"); f != nil && f.tok != 'n' {
		t, err := p.fieldStr(f)
		if err != nil {
			return GatewayDevice{}, err
		}
		if t != "" {
			d.Type = t
		}
	}
	return d, nil
}

// ParseGatewayDisconnect parses v1/gateway/disconnect: {"device":"Device A"}.
func ParseGatewayDisconnect(payload []byte) (string, error) {
	p := getParser(payload)
	defer putParser(p)
	fs, err := p.readObject()
	if err != nil {
		return "", err
	}
	return p.deviceName(fs)
}

// deviceName reads the required, non-empty "device" member.
func (p *parser) deviceName(fs []field) (string, error) {
	f, err := p.required(fs, "device")
	if err != nil {
		return "", err
	}
	name, err := p.fieldStr(f)
	if err == nil && name == "" {
		err = &PayloadError{Offset: f.ra, Reason: "empty device name"}
	}
	return name, err
}

// DeviceEntries is the telemetry of one device behind a gateway.
type DeviceEntries struct {
	Device  string
	Entries []Entry
}

// ParseGatewayTelemetry parses v1/gateway/telemetry:
//
//	{"Device A":[{"ts":1483228800000,"values":{"temperature":42}}],"Device B":[{"humidity":80}]}
//
// Each device's value must be an array of telemetry objects (either form);
// devices whose value is not an array are skipped, as ThingsBoard does
// with a warning, and if none remain it is an error. A per-item "metadata"
// object ({"connector","receivedTs","publishedTs"}, for latency metrics) is
// validated and stripped. Device order is preserved; a device named twice
// keeps its first position and its last value. Device names must not be
// empty.
func ParseGatewayTelemetry(payload []byte) ([]DeviceEntries, error) {
	p := getParser(payload)
	defer putParser(p)
	err := p.gatewayObject(func(depth int) (bool, error) {
		if p.peek() != '[' {
			return false, p.skip(depth)
		}
		return true, p.telemetry(depth, true)
	}, true)
	if err != nil {
		return nil, err
	}
	kvs := p.materialize()
	out := make([]DeviceEntries, 0, len(p.devs))
	for _, d := range p.devs {
		if !d.skip {
			out = append(out, DeviceEntries{Device: string(p.arena[d.ka:d.ke]), Entries: p.materializeEntries(d.r0, d.r1, kvs)})
		}
	}
	return out, nil
}

// DeviceAttributes is the client attributes of one device behind a gateway.
type DeviceAttributes struct {
	Device string
	Values []KV
}

// ParseGatewayAttributes parses v1/gateway/attributes:
// {"Device A":{"attribute1":"value1","attribute2":42},"Device B":{...}}.
// A device whose value is not an object is skipped (ThingsBoard 4.x logs a
// warning); if none remain it is an error.
func ParseGatewayAttributes(payload []byte) ([]DeviceAttributes, error) {
	p := getParser(payload)
	defer putParser(p)
	err := p.gatewayObject(func(depth int) (bool, error) {
		if p.peek() != '{' {
			return false, p.skip(depth)
		}
		return true, p.kvObject(depth)
	}, false)
	if err != nil {
		return nil, err
	}
	kvs := p.materialize()
	out := make([]DeviceAttributes, 0, len(p.devs))
	for _, d := range p.devs {
		if !d.skip {
			out = append(out, DeviceAttributes{Device: string(p.arena[d.ka:d.ke]), Values: kvs[d.r0:d.r1:d.r1]})
		}
	}
	return out, nil
}

// gatewayObject reads {"device": value, ...} into p.devs. item parses one
// value at p.pos (after whitespace) and reports whether it was used; it
// appends to p.ents when entries is set, to p.kvs otherwise, and the
// device records the range.
func (p *parser) gatewayObject(item func(depth int) (bool, error), entries bool) error {
	p.ws()
	if p.peek() != '{' {
		return p.unexpected("a JSON object")
	}
	empty, err := p.open('{', '}', 1)
	if err != nil {
		return err
	}
	var index map[string]int
	for !empty {
		p.ws()
		ka, ke, err := p.key()
		if err != nil {
			return err
		}
		if ka == ke {
			return p.fail("empty device name")
		}
		p.ws()
		r0 := len(p.kvs)
		if entries {
			r0 = len(p.ents)
		}
		used, err := item(2)
		if err != nil {
			return err
		}
		r1 := len(p.kvs)
		if entries {
			r1 = len(p.ents)
		}
		d := idevice{ka: ka, ke: ke, r0: r0, r1: r1, skip: !used}
		p.addDevice(d, &index)
		more, err := p.next('}')
		if err != nil {
			return err
		}
		empty = !more
	}
	if err := p.end(); err != nil {
		return err
	}
	for _, d := range p.devs {
		if !d.skip {
			return nil
		}
	}
	return invalid("no device with a usable value")
}

// addDevice appends d, or replaces the value of an earlier device of the
// same name (last wins, first position).
func (p *parser) addDevice(d idevice, index *map[string]int) {
	name := p.arena[d.ka:d.ke]
	j := -1
	if *index != nil {
		if i, ok := (*index)[string(name)]; ok {
			j = i
		}
	} else {
		for i, o := range p.devs {
			if string(p.arena[o.ka:o.ke]) == string(name) {
				j = i
				break
			}
		}
	}
	if j >= 0 {
		p.devs[j].r0, p.devs[j].r1, p.devs[j].skip = d.r0, d.r1, d.skip
		return
	}
	p.devs = append(p.devs, d)
	switch {
	case *index != nil:
		(*index)[string(name)] = len(p.devs) - 1
	case len(p.devs) > maxLinearKeys:
		*index = make(map[string]int, 2*len(p.devs))
		for i, o := range p.devs {
			(*index)[string(p.arena[o.ka:o.ke])] = i
		}
	}
}

// GatewayAttributeRequest is a gateway's request for the attributes of a
// device behind it (v1/gateway/attributes/request), as the server code
// reads it: {"id":1,"device":"Device A","client":true,"key":"attribute1"}
// or {"id":1,"device":"Device A","client":false,"keys":["a","b"]}. (The
// current documentation's "client":[..],"shared":[..] form is not what
// the server parses.)
type GatewayAttributeRequest struct {
	ID     int64 // a Java int
	Device string
	Client bool     // true: client scope; false: shared scope
	Keys   []string // duplicates removed; may be empty
}

// ParseGatewayAttributeRequest parses a gateway attribute request. "id",
// "device" and "client" are required, and "key" (a string) or "keys" (an
// array of strings).
func ParseGatewayAttributeRequest(payload []byte) (GatewayAttributeRequest, error) {
	p := getParser(payload)
	defer putParser(p)
	fs, err := p.readObject()
	if err != nil {
		return GatewayAttributeRequest{}, err
	}
	var r GatewayAttributeRequest
	f, err := p.required(fs, "id")
	if err == nil {
		r.ID, err = p.fieldInt(f)
	}
	if err == nil {
		r.Device, err = p.deviceName(fs)
	}
	if err == nil {
		if f, err = p.required(fs, "client"); err == nil {
			r.Client, err = p.fieldBool(f)
		}
	}
	if err != nil {
		return GatewayAttributeRequest{}, err
	}
	if f := p.field(fs, "key"); f != nil {
		k, err := p.fieldStr(f)
		if err != nil {
			return GatewayAttributeRequest{}, err
		}
		r.Keys = []string{k}
		return r, nil
	}
	if f, err = p.required(fs, "keys"); err == nil {
		r.Keys, err = p.stringArray(f)
	}
	if err != nil {
		return GatewayAttributeRequest{}, err
	}
	return r, nil
}

// EncodeGatewayAttributeResponse encodes the answer on
// v1/gateway/attributes/response (JsonConverter.getJsonObjectForGateway):
// {"id":1,"device":"A","value":v} when a single key was requested and
// found, otherwise {"id":1,"device":"A","values":{...}}, and
// {"id":1,"device":"A"} when nothing was found.
func EncodeGatewayAttributeResponse(id int64, device string, single bool, kvs []KV) []byte {
	b := make([]byte, 0, 64)
	b = append(b, `{"id":`...)
	b = strconv.AppendInt(b, id, 10)
	b = append(b, `,"device":`...)
	b = appendString(b, device)
	switch {
	case len(kvs) == 0:
	case single && len(kvs) == 1:
		b = append(b, `,"value":`...)
		b = kvs[0].Value.AppendJSON(b)
	default:
		b = append(b, `,"values":`...)
		b = AppendObject(b, kvs)
	}
	return append(b, '}')
}

// EncodeGatewayAttributesPush encodes a shared attribute update for a
// device behind a gateway, on v1/gateway/attributes:
// {"device":"A","data":{"k":v,...,"deleted":[...]}}.
func EncodeGatewayAttributesPush(device string, updated []KV, deleted []string) []byte {
	b := make([]byte, 0, 64)
	b = append(b, `{"device":`...)
	b = appendString(b, device)
	b = append(b, `,"data":`...)
	b = appendAttributesPush(b, updated, deleted)
	return append(b, '}')
}

// EncodeGatewayRPCRequest encodes a server RPC for a device behind a
// gateway, on v1/gateway/rpc (JsonConverter.toGatewayJson):
// {"device":"A","data":{"id":42,"method":"toggle_gpio","params":{"pin":1}}}.
// params is handled as in EncodeRPCRequest.
func EncodeGatewayRPCRequest(device string, id int64, method string, params json.RawMessage) []byte {
	b := make([]byte, 0, 64+len(params))
	b = append(b, `{"device":`...)
	b = appendString(b, device)
	b = append(b, `,"data":{"id":`...)
	b = strconv.AppendInt(b, id, 10)
	b = append(b, `,"method":`...)
	b = appendString(b, method)
	b = append(b, `,"params":`...)
	b = appendRaw(b, params)
	return append(b, '}', '}')
}

// GatewayRPCResponse is a gateway's answer to an RPC for a device behind
// it: {"device":"A","id":42,"data":{"success":true}}.
type GatewayRPCResponse struct {
	Device string
	ID     int64           // a Java int
	Data   json.RawMessage // compact JSON of "data" (a string stays quoted)
}

// ParseGatewayRPCResponse parses v1/gateway/rpc; "device", "id" and
// "data" are required.
func ParseGatewayRPCResponse(payload []byte) (GatewayRPCResponse, error) {
	p := getParser(payload)
	defer putParser(p)
	fs, err := p.readObject()
	if err != nil {
		return GatewayRPCResponse{}, err
	}
	var r GatewayRPCResponse
	if r.Device, err = p.deviceName(fs); err != nil {
		return GatewayRPCResponse{}, err
	}
	f, err := p.required(fs, "id")
	if err == nil {
		r.ID, err = p.fieldInt(f)
	}
	if err == nil {
		if f, err = p.required(fs, "data"); err == nil {
			r.Data, err = p.fieldRaw(f)
		}
	}
	if err != nil {
		return GatewayRPCResponse{}, err
	}
	return r, nil
}

// ParseGatewayClaim parses v1/gateway/claim:
// {"Device A":{"secretKey":"value_A","durationMs":60000},"Device B":{...}}.
// A device whose value is not an object is skipped; if none remain it is
// an error.
func ParseGatewayClaim(payload []byte) (map[string]Claim, error) {
	p := getParser(payload)
	defer putParser(p)
	p.ws()
	if p.peek() != '{' {
		return nil, p.unexpected("a JSON object")
	}
	devs, err := p.fields(1)
	if err != nil {
		return nil, err
	}
	if err := p.end(); err != nil {
		return nil, err
	}
	out := make(map[string]Claim, len(devs))
	for i := range devs {
		d := &devs[i]
		if d.ka == d.ke {
			return nil, &PayloadError{Offset: d.ra, Reason: "empty device name"}
		}
		if d.tok != '{' {
			continue
		}
		p.pos = d.ra
		fs, err := p.fields(2)
		if err != nil {
			return nil, err
		}
		c, err := p.claim(fs)
		if err != nil {
			return nil, err
		}
		out[p.fieldName(d)] = c
	}
	if len(out) == 0 {
		return nil, invalid("no device with a usable value")
	}
	return out, nil
}
