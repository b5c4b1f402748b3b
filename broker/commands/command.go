package commands

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

// Header keys the dispatcher sets on response records. Request headers
// with these keys are not copied.
const (
	HeaderDevice           = "ferry.device"
	HeaderStatus           = "ferry.status"
	HeaderRequestTopic     = "ferry.request.topic"
	HeaderRequestPartition = "ferry.request.partition"
	HeaderRequestOffset    = "ferry.request.offset"
)

// Response statuses.
const (
	StatusOK      = "ok"      // the device answered (or a one-way command was sent)
	StatusTimeout = "timeout" // delivered, no answer within the timeout
	StatusExpired = "expired" // the device was not reachable before the command expired
	StatusError   = "error"   // invalid command, unknown device, or delivery failed
)

// Reasons that come with StatusError.
const (
	ReasonInvalid       = "invalid"        // the record is not a command
	ReasonUnknownDevice = "unknown_device" // no such device
	ReasonFailed        = "failed"         // the Sender failed otherwise
	ReasonTooLarge      = "response_too_large"
)

// Response is the value of a response record (JSON).
type Response struct {
	Device           string          `json:"device"`
	Method           string          `json:"method,omitempty"`
	RequestTopic     string          `json:"request_topic"`
	RequestPartition int32           `json:"request_partition"`
	RequestOffset    int64           `json:"request_offset"`
	Status           string          `json:"status"`
	Reason           string          `json:"reason,omitempty"`
	Error            string          `json:"error,omitempty"`
	Response         json.RawMessage `json:"response,omitempty"` // the device's answer, when Status is ok
}

// spec is what a command record asks for.
type spec struct {
	method    string
	params    json.RawMessage // nil: absent
	timeout   time.Duration   // 0: Config.Timeout
	expiresAt time.Time       // zero: record timestamp + Config.Expiry
	oneWay    bool
}

// command is one admitted record: a command to deliver, or a record that
// was decided when read (invalid, expired) and only needs its response.
type command struct {
	part     *partState
	offset   int64
	key      []byte
	headers  []commitlog.Header
	spec     spec
	deadline time.Time // deliver before this, or answer "expired"
	result   result    // the decision, for records decided when read
}

// result is a command's outcome.
type result struct {
	status   string
	reason   string
	err      string
	response json.RawMessage
}

// maxTimeoutMs caps a command's "timeout" (a day): larger values are more
// likely mistakes (seconds × 1000 twice) than intent.
const maxTimeoutMs = 24 * 60 * 60 * 1000

// parseCommand checks a record's key and value: key = device name, value =
// a JSON object with a non-empty string "method" and optional "params"
// (any JSON), "timeout" (ms, > 0), "expirationTime" (epoch ms) and
// "oneway" (bool). Other fields are ignored, as ThingsBoard's persistent
// RPC fields ("persistent", "retries", "additionalInfo") are.
func parseCommand(key, value []byte, maxBytes int) (spec, *InvalidError) {
	var s spec
	invalid := func(reason, format string, args ...any) (spec, *InvalidError) {
		return s, &InvalidError{Reason: reason, Problem: fmt.Sprintf(format, args...)}
	}
	if len(key) == 0 {
		return invalid("no_key", "record has no key (the key is the device name)")
	}
	if !utf8.Valid(key) {
		return invalid("no_key", "key is not UTF-8")
	}
	if len(value) > maxBytes {
		return invalid("too_large", "value of %d bytes exceeds %d", len(value), maxBytes)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(value, &fields); err != nil || fields == nil {
		return invalid("not_object", "value is not a JSON object")
	}
	raw, ok := fields["method"]
	if !ok || json.Unmarshal(raw, &s.method) != nil || s.method == "" {
		return invalid("bad_method", `"method" must be a non-empty string`)
	}
	if p, ok := fields["params"]; ok {
		s.params = p
	}
	if raw, ok := fields["timeout"]; ok && !isNull(raw) {
		var ms float64
		if json.Unmarshal(raw, &ms) != nil || ms < 1 || ms > maxTimeoutMs {
			return invalid("bad_field", `"timeout" must be a number of milliseconds in 1..%d`, maxTimeoutMs)
		}
		s.timeout = time.Duration(ms * float64(time.Millisecond))
	}
	if raw, ok := fields["expirationTime"]; ok && !isNull(raw) {
		var ms float64
		if json.Unmarshal(raw, &ms) != nil || ms < 0 || ms > math.MaxInt64/1e6 {
			return invalid("bad_field", `"expirationTime" must be epoch milliseconds`)
		}
		if ms > 0 { // 0 is "not set", as in ThingsBoard
			s.expiresAt = time.UnixMilli(int64(ms))
		}
	}
	if raw, ok := fields["oneway"]; ok && !isNull(raw) {
		if json.Unmarshal(raw, &s.oneWay) != nil {
			return invalid("bad_field", `"oneway" must be true or false`)
		}
	}
	return s, nil
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

// responseRecord builds the response record of c: key = the request's key
// (the device), value = Response as JSON, timestamp = now, headers = ours
// then the request's (all of them, unprefixed, except ours), so a
// correlation id the producer set comes back under its own name.
func responseRecord(topic string, c *command, r result, now time.Time) commitlog.Record {
	v := Response{
		Device: string(c.key), Method: c.spec.method,
		RequestTopic: topic, RequestPartition: c.part.id, RequestOffset: c.offset,
		Status: r.status, Reason: r.reason, Error: r.err, Response: jsonOrString(r.response),
	}
	value, err := json.Marshal(v)
	if err != nil { // unreachable: every field is valid JSON
		v.Response = nil
		value, _ = json.Marshal(v)
	}
	hs := make([]commitlog.Header, 0, 5+len(c.headers))
	hs = append(hs,
		commitlog.Header{Key: HeaderDevice, Value: c.key},
		commitlog.Header{Key: HeaderStatus, Value: []byte(r.status)},
		commitlog.Header{Key: HeaderRequestTopic, Value: []byte(topic)},
		commitlog.Header{Key: HeaderRequestPartition, Value: strconv.AppendInt(nil, int64(c.part.id), 10)},
		commitlog.Header{Key: HeaderRequestOffset, Value: strconv.AppendInt(nil, c.offset, 10)},
	)
	for _, h := range c.headers {
		switch h.Key {
		case HeaderDevice, HeaderStatus, HeaderRequestTopic, HeaderRequestPartition, HeaderRequestOffset:
			continue
		}
		hs = append(hs, h)
	}
	return commitlog.Record{Timestamp: now.UnixMilli(), Key: c.key, Value: value, Headers: hs}
}

// jsonOrString returns b when it is JSON, else b as a JSON string: a
// device's answer is passed on as it is, but a device that answers with
// something that is not JSON must not break the response record.
func jsonOrString(b json.RawMessage) json.RawMessage {
	if len(b) == 0 || json.Valid(b) {
		return b
	}
	s, _ := json.Marshal(string(b))
	return s
}
