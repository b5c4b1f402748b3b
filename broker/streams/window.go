package streams

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// Windows says how records are grouped in time: tumbling, hopping or
// session, by event time, with a grace period for records out of order.
type Windows struct {
	kind    string // tumbling, hopping, session
	size    int64  // ms; tumbling and hopping
	advance int64  // ms; hopping (= size for tumbling)
	gap     int64  // ms; session
	grace   int64  // ms
}

// Tumbling windows: [k·size, (k+1)·size), aligned to the epoch.
func Tumbling(size, grace time.Duration) Windows {
	return Windows{kind: "tumbling", size: size.Milliseconds(), advance: size.Milliseconds(), grace: grace.Milliseconds()}
}

// Hopping windows of size starting every advance, aligned to the epoch:
// a record is in size/advance of them.
func Hopping(size, advance, grace time.Duration) Windows {
	return Windows{kind: "hopping", size: size.Milliseconds(), advance: advance.Milliseconds(), grace: grace.Milliseconds()}
}

// Running is no window: one aggregate per key over every record since the
// pipeline started (Kafka Streams' groupByKey().aggregate()), emitted on
// every update with ts = the latest record's.
func Running() Windows { return Windows{kind: "running"} }

// Session windows: a key's records less than gap apart; a record that
// bridges two sessions merges them.
func Session(gap, grace time.Duration) Windows {
	return Windows{kind: "session", gap: gap.Milliseconds(), grace: grace.Milliseconds()}
}

func (w Windows) validate() error {
	switch w.kind {
	case "tumbling", "hopping":
		if w.size <= 0 || w.advance <= 0 || w.advance > w.size {
			return fmt.Errorf("%s window: size must be positive and advance within (0, size]", w.kind)
		}
	case "session":
		if w.gap <= 0 {
			return errors.New("session window: the gap must be positive")
		}
	case "running":
	default:
		return errors.New("windows: tumbling, hopping or session")
	}
	if w.grace < 0 {
		return errors.New("windows: grace cannot be negative")
	}
	return nil
}

func (w Windows) String() string {
	return fmt.Sprintf("%s(size=%d,advance=%d,gap=%d,grace=%d)", w.kind, w.size, w.advance, w.gap, w.grace)
}

// starts are the starts of the time windows holding ts, oldest first.
func (w Windows) starts(ts int64) []int64 {
	last := ts - mod(ts, w.advance)
	var out []int64
	for s := last; s > ts-w.size; s -= w.advance {
		out = append(out, s)
	}
	slices.Reverse(out)
	return out
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

// Agg is an aggregate function.
type Agg string

// The aggregate functions. avg, min, max and sum take numbers (other
// values are not counted in them); count counts records having the
// field; first and last are the values with the smallest and largest
// timestamps (the later-read one on a tie).
const (
	Avg   Agg = "avg"
	Min   Agg = "min"
	Max   Agg = "max"
	Sum   Agg = "sum"
	Count Agg = "count"
	First Agg = "first"
	Last  Agg = "last"
)

// Aggs are the known functions.
var Aggs = []Agg{Avg, Min, Max, Sum, Count, First, Last}

// FieldAggs maps a value's name to its functions; the output value of
// field f under function a is named "f_a" (temperature_avg).
type FieldAggs map[string][]Agg

// Emit says when a windowed aggregate is written.
type Emit string

// The emit strategies (Kafka Streams' EmitStrategy).
const (
	// OnWindowClose writes one final result per window once it closes.
	OnWindowClose Emit = "on_window_close"
	// OnUpdate writes the window's aggregate after every record.
	OnUpdate Emit = "on_update"
)

// Aggregate aggregates the stream per key in windows. Its output record
// per window has the key, ts = the window's end (a session's last record),
// the headers of the window's latest record plus ferry.window.start and
// ferry.window.end, and the aggregates as values.
func (s *Stream) Aggregate(w Windows, aggs FieldAggs, emit Emit) *Stream {
	if err := w.validate(); err != nil {
		s.b.fail(err)
	}
	if len(aggs) == 0 {
		s.b.fail(errors.New("Aggregate needs at least one field"))
	}
	for f, fns := range aggs {
		if len(fns) == 0 {
			s.b.fail(fmt.Errorf("aggregate %s: no functions", f))
		}
		for _, a := range fns {
			if !slices.Contains(Aggs, a) {
				s.b.fail(fmt.Errorf("aggregate %s: unknown function %q (avg, min, max, sum, count, first, last)", f, a))
			}
		}
	}
	if emit != OnWindowClose && emit != OnUpdate {
		s.b.fail(fmt.Errorf("emit %q: on_window_close or on_update", emit))
	}
	if w.kind == "running" && emit != OnUpdate {
		s.b.fail(errors.New("a running aggregate has no window to close: emit on_update"))
	}
	s.b.t.late = true
	p := &windowProc{w: w, aggs: aggs, emit: emit, wins: map[string]*keyWindows{}}
	for f := range aggs {
		p.fields = append(p.fields, f)
	}
	slices.Sort(p.fields)
	st := s.add("window", p)
	return st
}

// fieldState accumulates one field in one window.
type fieldState struct {
	N       int64     `json:"n"`            // numeric values
	C       int64     `json:"c"`            // values of any type
	Sum     float64   `json:"s,omitempty"`  //
	Min     float64   `json:"mi,omitempty"` //
	Max     float64   `json:"ma,omitempty"` //
	First   jsonValue `json:"f"`            //
	FirstTs int64     `json:"ft"`           //
	Last    jsonValue `json:"l"`            //
	LastTs  int64     `json:"lt"`           //
	HasVal  bool      `json:"h,omitempty"`  // First and Last are set
}

func (f *fieldState) add(v tb.Value, ts int64) {
	f.C++
	if x, ok := v.Number(); ok {
		if f.N == 0 || x < f.Min {
			f.Min = x
		}
		if f.N == 0 || x > f.Max {
			f.Max = x
		}
		f.N++
		f.Sum += x
	}
	if !f.HasVal || ts < f.FirstTs {
		f.First, f.FirstTs = jsonValue{v}, ts
	}
	if !f.HasVal || ts >= f.LastTs {
		f.Last, f.LastTs = jsonValue{v}, ts
	}
	f.HasVal = true
}

func (f *fieldState) merge(o *fieldState) {
	if o.N > 0 {
		if f.N == 0 || o.Min < f.Min {
			f.Min = o.Min
		}
		if f.N == 0 || o.Max > f.Max {
			f.Max = o.Max
		}
	}
	f.N += o.N
	f.C += o.C
	f.Sum += o.Sum
	if o.HasVal {
		if !f.HasVal || o.FirstTs < f.FirstTs {
			f.First, f.FirstTs = o.First, o.FirstTs
		}
		if !f.HasVal || o.LastTs >= f.LastTs {
			f.Last, f.LastTs = o.Last, o.LastTs
		}
		f.HasVal = true
	}
}

// window is one window's state for one key.
type window struct {
	Start   int64                  `json:"s"`
	End     int64                  `json:"e"` // exclusive; a session's last record
	Fields  map[string]*fieldState `json:"f"`
	Headers headerPairs            `json:"h,omitempty"` // of the latest record
	HdrTs   int64                  `json:"ht"`
}

// keyWindows are a key's open windows, by start.
type keyWindows struct {
	key   []byte
	skey  string // key, as the maps' key
	wins  []*window
	dirty bool // listed in windowProc.dirty
}

type windowProc struct {
	w      Windows
	aggs   FieldAggs
	fields []string
	emit   Emit

	wins      map[string]*keyWindows
	dirty     []string // keys whose windows changed since the last flush (keyWindows.dirty)
	nextClose int64    // the earliest close time of any open window (0: none)
}

func (p *windowProc) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "window(%s,%s", p.w, p.emit)
	for _, f := range p.fields {
		fmt.Fprintf(&b, ",%s=%v", f, p.aggs[f])
	}
	b.WriteString(")")
	return b.String()
}

// closeAt is when window win closes: its end + grace for time windows,
// past its last record + gap + grace for sessions.
func (p *windowProc) closeAt(win *window) int64 {
	if p.w.kind == "running" {
		return math.MaxInt64
	}
	if p.w.kind == "session" {
		return win.End + p.w.gap + p.w.grace + 1
	}
	return win.End + p.w.grace
}

func (p *windowProc) process(c *pctx, n *node, r *Record) error {
	kw := p.wins[string(r.Key)]
	if kw == nil {
		// Copied: r's key and headers point into the batch it was read
		// from, which state must not keep alive.
		kw = &keyWindows{key: bytes.Clone(r.Key), skey: string(r.Key)}
	}
	var touched []*window
	late := false
	if p.w.kind == "running" {
		if len(kw.wins) == 0 {
			kw.wins = []*window{{Start: math.MinInt64, End: math.MaxInt64, Fields: map[string]*fieldState{}}}
		}
		touched = append(touched, kw.wins[0])
	} else if p.w.kind == "session" {
		win := p.session(kw, r.Timestamp, c.streamTime)
		if win == nil {
			late = true
		} else {
			touched = append(touched, win)
		}
	} else {
		for _, start := range p.w.starts(r.Timestamp) {
			end := start + p.w.size
			if end+p.w.grace <= c.streamTime {
				late = true // this window closed already
				continue
			}
			i, found := slices.BinarySearchFunc(kw.wins, start, func(w *window, s int64) int { return cmp.Compare(w.Start, s) })
			if !found {
				kw.wins = slices.Insert(kw.wins, i, &window{Start: start, End: end, Fields: map[string]*fieldState{}})
			}
			touched = append(touched, kw.wins[i])
		}
	}
	if late {
		c.late(r)
	}
	if len(touched) == 0 {
		return nil
	}
	for _, win := range touched {
		for _, f := range p.fields {
			if v, ok := r.Value(f); ok {
				fs := win.Fields[f]
				if fs == nil {
					fs = &fieldState{}
					win.Fields[f] = fs
				}
				fs.add(v, r.Timestamp)
			}
		}
		if win.Headers == nil || r.Timestamp >= win.HdrTs {
			if !sameHeaders(win.Headers, r.Headers) {
				win.Headers = cloneHeaders(r.Headers)
			}
			win.HdrTs = r.Timestamp
		}
		if at := p.closeAt(win); at != math.MaxInt64 && (p.nextClose == 0 || at < p.nextClose) {
			p.nextClose = at
		}
	}
	p.wins[kw.skey] = kw
	p.markDirty(kw)
	if p.emit == OnUpdate {
		for _, win := range touched {
			n.forward(c, p.result(kw.key, win))
		}
	}
	return nil
}

// session puts ts into kw's sessions: a new one, or the one(s) within gap
// of it merged. nil when the session it would open or join has closed.
func (p *windowProc) session(kw *keyWindows, ts, streamTime int64) *window {
	closeTime := streamTime - p.w.gap - p.w.grace
	merged := &window{Start: ts, End: ts, Fields: map[string]*fieldState{}}
	keep := kw.wins[:0:0]
	for _, win := range kw.wins {
		if ts >= win.Start-p.w.gap && ts <= win.End+p.w.gap {
			mergeWindow(merged, win)
			continue
		}
		keep = append(keep, win)
	}
	if merged.End < closeTime {
		return nil // Kafka Streams: a session ending before stream time − gap − grace is late
	}
	i, _ := slices.BinarySearchFunc(keep, merged.Start, func(w *window, s int64) int { return cmp.Compare(w.Start, s) })
	kw.wins = slices.Insert(keep, i, merged)
	return merged
}

func mergeWindow(into, w *window) {
	into.Start = min(into.Start, w.Start)
	into.End = max(into.End, w.End)
	for f, fs := range w.Fields {
		if into.Fields[f] == nil {
			into.Fields[f] = &fieldState{}
		}
		into.Fields[f].merge(fs)
	}
	if into.Headers == nil || w.HdrTs >= into.HdrTs {
		into.Headers, into.HdrTs = w.Headers, w.HdrTs
	}
}

// advance closes the windows stream time has passed: their final results
// go out (on_window_close) and their state goes.
func (p *windowProc) advance(c *pctx, n *node) {
	if p.nextClose == 0 || c.streamTime < p.nextClose {
		return
	}
	p.nextClose = 0
	keys := make([]string, 0, len(p.wins))
	for k := range p.wins {
		keys = append(keys, k)
	}
	slices.Sort(keys) // one order for the outputs, whatever the map's
	for _, k := range keys {
		kw := p.wins[k]
		keep := kw.wins[:0]
		for _, win := range kw.wins {
			at := p.closeAt(win)
			if at <= c.streamTime {
				if p.emit == OnWindowClose {
					n.forward(c, p.result(kw.key, win))
				}
				p.markDirty(kw)
				continue
			}
			if p.nextClose == 0 || at < p.nextClose {
				p.nextClose = at
			}
			keep = append(keep, win)
		}
		kw.wins = keep
		if len(keep) == 0 {
			delete(p.wins, k)
		}
	}
}

// result is a window's output record.
func (p *windowProc) result(key []byte, win *window) *Record {
	r := &Record{Key: key, Timestamp: win.End}
	for _, h := range win.Headers {
		if !strings.HasPrefix(h.Key, "ferry.") {
			r.Headers = append(r.Headers, h)
		}
	}
	if p.w.kind == "running" {
		r.Timestamp = win.HdrTs // the latest record's
	} else {
		r.Headers = append(r.Headers,
			commitlog.Header{Key: "ferry.window.start", Value: strconv.AppendInt(nil, win.Start, 10)},
			commitlog.Header{Key: "ferry.window.end", Value: strconv.AppendInt(nil, win.End, 10)})
	}
	for _, f := range p.fields {
		fs := win.Fields[f]
		if fs == nil {
			continue
		}
		for _, a := range p.aggs[f] {
			name := f + "_" + string(a)
			switch a {
			case Count:
				r.Values = append(r.Values, tb.KV{Key: name, Value: Long(fs.C)})
			case Avg:
				if fs.N > 0 {
					r.Values = append(r.Values, tb.KV{Key: name, Value: Double(fs.Sum / float64(fs.N))})
				}
			case Sum:
				if fs.N > 0 {
					r.Values = append(r.Values, tb.KV{Key: name, Value: Double(fs.Sum)})
				}
			case Min:
				if fs.N > 0 {
					r.Values = append(r.Values, tb.KV{Key: name, Value: Double(fs.Min)})
				}
			case Max:
				if fs.N > 0 {
					r.Values = append(r.Values, tb.KV{Key: name, Value: Double(fs.Max)})
				}
			case First:
				r.Values = append(r.Values, tb.KV{Key: name, Value: fs.First.Value})
			case Last:
				r.Values = append(r.Values, tb.KV{Key: name, Value: fs.Last.Value})
			}
		}
	}
	return r
}

// State: one entry per key, its open windows as JSON.

func (p *windowProc) flush(put func(key string, val []byte)) {
	for _, k := range p.dirty {
		kw := p.wins[k]
		if kw == nil || len(kw.wins) == 0 {
			put(k, nil)
			continue
		}
		if !kw.dirty {
			continue // listed twice (its windows went and came back)
		}
		kw.dirty = false
		b, _ := json.Marshal(kw.wins)
		put(k, b)
	}
	p.dirty = p.dirty[:0]
}

// markDirty lists kw's key for the next flush, once.
func (p *windowProc) markDirty(kw *keyWindows) {
	if !kw.dirty {
		kw.dirty = true
		p.dirty = append(p.dirty, kw.skey)
	}
}

func (p *windowProc) restore(key string, val []byte) error {
	var wins []*window
	if err := json.Unmarshal(val, &wins); err != nil {
		return fmt.Errorf("window state of %q: %w", key, err)
	}
	p.wins[key] = &keyWindows{key: []byte(key), skey: key, wins: wins}
	for _, win := range wins {
		if at := p.closeAt(win); at != math.MaxInt64 && (p.nextClose == 0 || at < p.nextClose) {
			p.nextClose = at
		}
	}
	return nil
}

func sameHeaders(a, b []commitlog.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || !bytes.Equal(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}

func cloneHeaders(hs []commitlog.Header) []commitlog.Header {
	out := make([]commitlog.Header, len(hs))
	for i, h := range hs {
		out[i] = commitlog.Header{Key: h.Key, Value: bytes.Clone(h.Value)}
	}
	return out
}
