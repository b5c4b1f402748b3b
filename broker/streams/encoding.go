package streams

// Compact JSON for what the changelog holds: values as their JSON text
// (not tb.Value's struct), headers as [key, value] string pairs, output
// values as JSON when they are JSON (every ThingsBoard-shaped output),
// base64 only otherwise. Every commit writes these, so their size is the
// pipeline's write amplification.

import (
	"encoding/json"
	"fmt"

	"github.com/ferry-iot/ferry/broker/commitlog"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// jsonValue is a tb.Value stored as its JSON text.
type jsonValue struct{ tb.Value }

func (v jsonValue) MarshalJSON() ([]byte, error) { return v.AppendJSON(nil), nil }

func (v *jsonValue) UnmarshalJSON(b []byte) error {
	val, ok, err := tb.ParseValue(b)
	if err != nil {
		return err
	}
	if ok {
		v.Value = val
	}
	return nil
}

// headerPairs are headers stored as [key, value] pairs.
type headerPairs []commitlog.Header

func (h headerPairs) MarshalJSON() ([]byte, error) {
	pairs := make([][2]string, len(h))
	for i, x := range h {
		pairs[i] = [2]string{x.Key, string(x.Value)}
	}
	return json.Marshal(pairs)
}

func (h *headerPairs) UnmarshalJSON(b []byte) error {
	var pairs [][2]string
	if err := json.Unmarshal(b, &pairs); err != nil {
		return err
	}
	*h = make(headerPairs, len(pairs))
	for i, p := range pairs {
		(*h)[i] = commitlog.Header{Key: p[0], Value: []byte(p[1])}
	}
	return nil
}

// outputWire is an output in a commit marker.
type outputWire struct {
	Topic     string          `json:"t"`
	Partition int32           `json:"p"`
	Key       *string         `json:"k,omitempty"`
	JSON      json.RawMessage `json:"j,omitempty"` // the value, when it is JSON
	Bytes     []byte          `json:"b,omitempty"` // the value otherwise
	Null      bool            `json:"n,omitempty"` // a nil value
	Timestamp int64           `json:"ts"`
	Headers   headerPairs     `json:"h,omitempty"`
}

func (o output) MarshalJSON() ([]byte, error) {
	w := outputWire{Topic: o.Topic, Partition: o.Partition, Timestamp: o.Timestamp, Headers: o.Headers}
	if o.Key != nil {
		k := string(o.Key)
		w.Key = &k
	}
	switch {
	case o.Value == nil:
		w.Null = true
	case json.Valid(o.Value):
		w.JSON = o.Value
	default:
		w.Bytes = o.Value
	}
	return json.Marshal(w)
}

func (o *output) UnmarshalJSON(b []byte) error {
	var w outputWire
	if err := json.Unmarshal(b, &w); err != nil {
		return fmt.Errorf("commit output: %w", err)
	}
	*o = output{Topic: w.Topic, Partition: w.Partition, Timestamp: w.Timestamp, Headers: w.Headers}
	if w.Key != nil {
		o.Key = []byte(*w.Key)
	}
	switch {
	case w.Null:
	case w.JSON != nil:
		o.Value = []byte(w.JSON)
	default:
		o.Value = w.Bytes
		if o.Value == nil {
			o.Value = []byte{}
		}
	}
	return nil
}
