// Package thingsboard is the codec of ThingsBoard's MQTT device API and
// gateway API: it classifies the topics devices publish and subscribe to,
// parses their JSON payloads with ThingsBoard's typing rules, and encodes
// what the server sends back. Devices built for ThingsBoard can therefore
// talk to Ferry unchanged. The package is pure: no I/O, no goroutines, no
// state beyond a pool of scratch buffers.
//
// It follows the ThingsBoard server at 4.4.0-SNAPSHOT (thingsboard/thingsboard
// master at dfe65d5, July 2026), as summarised with its sources in
// docs/thingsboard.md; the Java class each function mirrors is named in
// its comment.
//
// # Files
//
//	topics.go     publish topics (ParseTopic), reply topics, subscription filters
//	telemetry.go  telemetry and client attributes (ParseTelemetry, ParseAttributes)
//	number.go     ThingsBoard's typing of numbers and numeric strings
//	value.go      Value, KV, Entry and their JSON output (AppendRecordValue)
//	device.go     attribute requests, RPC, session limits, claim, provisioning
//	gateway.go    the v1/gateway/* API
//	scan.go       the JSON scanner all parsers share (pooled; strings, numbers, skip)
//	compact.go    canonical compact JSON of nested values, duplicate keys resolved
//	members.go    parsed values and object members, the duplicate-key rule
//	fields.go     member lookup with Gson's getAsString/getAsLong/... semantics
//	errors.go     ErrInvalidPayload and PayloadError
//
// # Values
//
// A value is typed as ThingsBoard types it (JsonConverter.parseProtoValues
// with JSON_TYPE_CAST_ENABLED=true, the default): true/false → BOOLEAN;
// a number → LONG when integral (not written with a '.' unless it also has
// an exponent) and within int64, STRING in plain notation when integral
// but larger, DOUBLE otherwise, STRING when it has more than 16 fractional
// digits; a string that looks like a number (optional '-', digits, at most
// one '.') is typed the same way; an object or array → JSON, kept as
// compact text; null → skipped. See number.go for the exact rules and the
// few departures.
//
// Output is canonical: AppendRecordValue and AppendJSON write compact,
// valid JSON (invalid UTF-8 replaced by U+FFFD) that parses back to the
// same values, so the log and the registry can store JSON text.
//
// # JSON dialect
//
// ThingsBoard reads payloads with Gson in lenient mode. This package reads
// RFC 8259 JSON and does not copy the lenient extensions (comments, single
// quotes, unquoted names and strings, NaN, ';' and '=>' separators), with
// two exceptions copied on purpose: raw control characters inside strings
// are accepted, and invalid UTF-8 is replaced by U+FFFD (the Java transport
// decodes the payload that way before parsing). Trailing data after the
// value is an error, as in ThingsBoard. A duplicate key keeps its first
// position and takes the last value, as Gson's and Jackson's tree models
// do. Nesting deeper than 64 levels is refused (ThingsBoard overflows its
// stack). Keys of telemetry and attributes, and device names, must not be
// empty.
//
// Every parse error wraps ErrInvalidPayload and is a *PayloadError; the
// broker answers it as ThingsBoard does: PUBACK 0x99 on MQTT 5 (or when the
// device profile asks for acks on validation errors), disconnect on MQTT 3.
package thingsboard
