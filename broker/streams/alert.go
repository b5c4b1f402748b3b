package streams

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ferry-iot/ferry/broker/commitlog"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// Alert raises an alert for a key when raise accepts a record and clears
// it when clear accepts a later one: one event per transition
// (hysteresis), not one per record. An event has the key, the record's
// timestamp and headers, and values alert = name, state = "raised" or
// "cleared", plus the values of the record that caused it. A nil clear
// clears when raise no longer holds.
func (s *Stream) Alert(name string, raise, clear func(*Record) (bool, error)) *Stream {
	if raise == nil {
		s.b.fail(errors.New("Alert needs a raise condition"))
	}
	return s.add("alert", &alertProc{name: name, raise: raise, clear: clear,
		raised: map[string]bool{}, dirty: map[string]bool{}})
}

type alertProc struct {
	name         string
	raise, clear func(*Record) (bool, error)
	raised       map[string]bool
	dirty        map[string]bool
}

func (p *alertProc) describe() string { return fmt.Sprintf("alert(%s,%t)", p.name, p.clear != nil) }

func (p *alertProc) process(c *pctx, n *node, r *Record) error {
	key := string(r.Key)
	var state string
	if !p.raised[key] {
		up, err := p.raise(r)
		if err != nil {
			return err
		}
		if up {
			state = "raised"
		}
	} else {
		var down bool
		var err error
		if p.clear != nil {
			down, err = p.clear(r)
		} else {
			var up bool
			up, err = p.raise(r)
			down = !up
		}
		if err != nil {
			return err
		}
		if down {
			state = "cleared"
		}
	}
	if state == "" {
		return nil
	}
	if state == "raised" {
		p.raised[key] = true
	} else {
		delete(p.raised, key)
	}
	p.dirty[key] = true
	ev := &Record{Key: r.Key, Timestamp: r.Timestamp,
		Headers: append(append([]commitlog.Header(nil), r.Headers...), commitlog.Header{Key: "ferry.alert", Value: []byte(p.name)}),
		Values:  append([]tb.KV{{Key: "alert", Value: String(p.name)}, {Key: "state", Value: String(state)}}, r.Values...)}
	n.forward(c, ev)
	return nil
}

func (p *alertProc) flush(put func(key string, val []byte)) {
	for k := range p.dirty {
		if p.raised[k] {
			put(k, []byte("1"))
		} else {
			put(k, nil)
		}
	}
	clear(p.dirty)
}

func (p *alertProc) restore(key string, val []byte) error {
	if string(val) == "1" {
		p.raised[key] = true
	}
	return nil
}

// A Table is the latest value of each field per key, read from a topic
// (ThingsBoard attributes: each record updates the fields it carries).
// Tables are read with the streams, by timestamp order across inputs, and
// kept in the pipeline's changelog like any state.
type Table struct {
	id    string
	topic string
	rows  map[string]*row
	dirty map[string]bool
}

type row struct {
	Values []tb.KV
}

// The row as a JSON object of its values.
func (rw *row) MarshalJSON() ([]byte, error) { return tb.AppendObject(nil, rw.Values), nil }

func (rw *row) UnmarshalJSON(b []byte) error {
	kvs, err := tb.ParseAttributes(b)
	rw.Values = kvs
	return err
}

func (t *Table) update(r *Record) {
	key := string(r.Key)
	t.dirty[key] = true
	if r.Values == nil { // a tombstone
		delete(t.rows, key)
		return
	}
	rw := t.rows[key]
	if rw == nil {
		rw = &row{}
		t.rows[key] = rw
	}
	for _, kv := range r.Values {
		found := false
		for i := range rw.Values {
			if rw.Values[i].Key == kv.Key {
				rw.Values[i].Value, found = kv.Value, true
				break
			}
		}
		if !found {
			rw.Values = append(rw.Values, kv)
		}
	}
}

// Lookup returns the table's row for key.
func (t *Table) Lookup(key []byte) []tb.KV {
	if rw := t.rows[string(key)]; rw != nil {
		return rw.Values
	}
	return nil
}

func (t *Table) flush(put func(key string, val []byte)) {
	for k := range t.dirty {
		rw := t.rows[k]
		if rw == nil {
			put(k, nil)
			continue
		}
		b, _ := json.Marshal(rw)
		put(k, b)
	}
	clear(t.dirty)
}

func (t *Table) restore(key string, val []byte) error {
	var rw row
	if err := json.Unmarshal(val, &rw); err != nil {
		return fmt.Errorf("table row %q: %w", key, err)
	}
	t.rows[key] = &rw
	return nil
}

// Join joins each record with the table's row for its key (a
// stream-table join: the row as of the record's processing). fn builds
// the output from the record (a copy) and the row, which is nil when the
// table has no row for the key; a nil output drops the record (an inner
// join). JoinValues is the usual fn.
func (s *Stream) Join(t *Table, fn func(r *Record, row []tb.KV) (*Record, error)) *Stream {
	if t == nil || fn == nil {
		s.b.fail(errors.New("Join needs a table and a function"))
	}
	return s.add("join", &joinProc{t: t, fn: fn})
}

// JoinValues is a join function: the record with the row's fields added
// under prefix (a field of the record's own wins), or dropped when the
// table has no row for its key and inner is set.
func JoinValues(prefix string, inner bool) func(*Record, []tb.KV) (*Record, error) {
	return func(r *Record, row []tb.KV) (*Record, error) {
		if row == nil && inner {
			return nil, nil
		}
		for _, kv := range row {
			if _, ok := r.Value(prefix + kv.Key); !ok {
				r.Values = append(r.Values, tb.KV{Key: prefix + kv.Key, Value: kv.Value})
			}
		}
		return r, nil
	}
}

type joinProc struct {
	t  *Table
	fn func(*Record, []tb.KV) (*Record, error)
}

func (p *joinProc) describe() string { return "join(" + p.t.topic + ")" }

func (p *joinProc) process(c *pctx, n *node, r *Record) error {
	out, err := p.fn(r.clone(), p.t.Lookup(r.Key))
	if err != nil {
		return err
	}
	if out != nil {
		n.forward(c, out)
	}
	return nil
}
