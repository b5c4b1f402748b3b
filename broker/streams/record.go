package streams

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/ferry-iot/ferry/broker/commitlog"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// Record is one record as a pipeline sees it: the key, the event time,
// the headers and the parsed values, with where it was read from.
type Record struct {
	Key       []byte
	Timestamp int64 // milliseconds since the epoch
	Headers   []commitlog.Header
	Values    []tb.KV

	// Provenance: the input record this one derives from.
	Topic     string
	Partition int32
	Offset    int64
	raw       []byte // the input record's value, for the late and dead-letter topics

	joined  []tb.KV // the row a join found, for expressions
	pending []byte  // the value, not parsed yet (parse)
}

// Header returns the value of header key, "" when absent.
func (r *Record) Header(key string) string { return string(headerOf(r.Headers, key)) }

// headerValue returns the value of header key in hs.
func headerValue(hs []commitlog.Header, key string) ([]byte, bool) {
	for i := range hs {
		if hs[i].Key == key {
			return hs[i].Value, true
		}
	}
	return nil, false
}

// headerOf is headerValue's value alone (nil when absent).
func headerOf(hs []commitlog.Header, key string) []byte {
	v, _ := headerValue(hs, key)
	return v
}

// Value returns the value named key.
func (r *Record) Value(key string) (tb.Value, bool) {
	for i := range r.Values {
		if r.Values[i].Key == key {
			return r.Values[i].Value, true
		}
	}
	return tb.Value{}, false
}

// Number returns the value named key as a float64 when it is a number.
func (r *Record) Number(key string) (float64, bool) {
	v, ok := r.Value(key)
	if !ok {
		return 0, false
	}
	return v.Number()
}

// SetValue sets (or adds) the value named key.
func (r *Record) SetValue(key string, v tb.Value) {
	for i := range r.Values {
		if r.Values[i].Key == key {
			r.Values[i].Value = v
			return
		}
	}
	r.Values = append(r.Values, tb.KV{Key: key, Value: v})
}

// clone copies r deeply enough for a step to change its values and
// headers without touching the original.
func (r *Record) clone() *Record {
	c := *r
	c.Values = append([]tb.KV(nil), r.Values...)
	c.Headers = append([]commitlog.Header(nil), r.Headers...)
	return &c
}

// decode fills r from a log record; its value is parsed by parse, when a
// step needs it. The task decodes every record into the same Record:
// steps that keep anything of one copy it (windows, tables), and the
// functions a Go pipeline passes to Filter and SelectKey must not keep r.
func decode(r *Record, topic string, partition int32, lr *commitlog.Record) *Record {
	*r = Record{Key: lr.Key, Timestamp: lr.Timestamp, Headers: lr.Headers,
		Topic: topic, Partition: partition, Offset: lr.Offset, raw: lr.Value, pending: lr.Value}
	return r
}

// parse parses the value {"ts":..,"values":{..}} (or any shape ThingsBoard
// telemetry takes; the entries' values are merged), once.
func (r *Record) parse() error {
	if r.pending == nil {
		return nil
	}
	v := r.pending
	r.pending = nil
	entries, err := tb.ParseTelemetry(v)
	if err != nil {
		return fmt.Errorf("value: %w", err)
	}
	if len(entries) == 1 {
		r.Values = entries[0].Values
	} else {
		for _, e := range entries {
			for _, kv := range e.Values {
				r.SetValue(kv.Key, kv.Value)
			}
		}
	}
	return nil
}

// encode is r as a log record in ThingsBoard's shape.
func (r *Record) encode() commitlog.Record {
	return commitlog.Record{Key: r.Key, Timestamp: r.Timestamp, Headers: r.Headers,
		Value: tb.AppendRecordValue(nil, r.Timestamp, r.Values)}
}

// provenanceHeaders names where r came from, for the dead-letter and
// late topics.
func (r *Record) provenanceHeaders() []commitlog.Header {
	return []commitlog.Header{
		{Key: "ferry.source.topic", Value: []byte(r.Topic)},
		{Key: "ferry.source.partition", Value: strconv.AppendInt(nil, int64(r.Partition), 10)},
		{Key: "ferry.source.offset", Value: strconv.AppendInt(nil, r.Offset, 10)},
	}
}

// Double is a tb.Value holding f.
func Double(f float64) tb.Value { return tb.Value{Kind: tb.KindDouble, Double: f} }

// Long is a tb.Value holding n.
func Long(n int64) tb.Value { return tb.Value{Kind: tb.KindLong, Long: n} }

// String is a tb.Value holding s.
func String(s string) tb.Value { return tb.Value{Kind: tb.KindString, Str: s} }

var (
	jsonUnmarshal = json.Unmarshal
	jsonMarshal   = json.Marshal
)
