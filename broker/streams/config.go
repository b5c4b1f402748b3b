package streams

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ferry-iot/ferry/configs"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// Config is one pipeline in the daemon's configuration (streams: [...]).
// Its steps run in this order: from → join → where → set → key → window
// and aggregate, or alert → to.
type Config struct {
	Name string   `mapstructure:"name"`
	From []string `mapstructure:"from"`
	// Join joins each record with a table read from another topic (the
	// device's latest attributes): expressions see its row as attributes.
	Join *JoinConfig `mapstructure:"join"`
	// Where keeps the records for which it is true.
	Where string `mapstructure:"where"`
	// Set computes values: name → expression.
	Set map[string]string `mapstructure:"set"`
	// Key re-keys each record (the output is partitioned by the new key).
	Key string `mapstructure:"key"`
	// Window groups the aggregate in time; without one, the aggregate
	// runs per key over everything read (emitted on every update).
	Window    *WindowConfig       `mapstructure:"window"`
	Aggregate map[string][]string `mapstructure:"aggregate"`
	Emit      string              `mapstructure:"emit"` // on_window_close (default) or on_update
	Alert     *AlertConfig        `mapstructure:"alert"`
	To        string              `mapstructure:"to"`
	// Start is where a new pipeline starts reading: earliest (default:
	// whatever the log still holds) or latest.
	Start string `mapstructure:"start"`
	// CommitInterval is how often state is committed when no output is
	// waiting (default 5s).
	CommitInterval time.Duration `mapstructure:"commit_interval"`
}

// JoinConfig is a stream-table join.
type JoinConfig struct {
	Table  string `mapstructure:"table"`  // the topic read as a table (attributes)
	Prefix string `mapstructure:"prefix"` // when set, the row's fields are added to the values under it
	Inner  bool   `mapstructure:"inner"`  // drop records whose key has no row
}

// WindowConfig is a window: exactly one of tumbling, hopping (with
// advance) or session (the inactivity gap), and a grace period.
type WindowConfig struct {
	Tumbling time.Duration `mapstructure:"tumbling"`
	Hopping  time.Duration `mapstructure:"hopping"`
	Advance  time.Duration `mapstructure:"advance"`
	Session  time.Duration `mapstructure:"session"`
	Grace    time.Duration `mapstructure:"grace"`
}

// AlertConfig raises an alert when When holds and clears it when Clear
// does (default: when When no longer holds).
type AlertConfig struct {
	Name  string `mapstructure:"name"` // default: the pipeline's name
	When  string `mapstructure:"when"`
	Clear string `mapstructure:"clear"`
}

// Compile checks c and builds its topology. Problems name their key
// relative to the pipeline's entry (where, alert.when, window.tumbling);
// an expression's problem says where in the expression it is.
func Compile(c Config) (*Topology, error) {
	var p configs.Problems
	if err := checkName(c.Name); err != nil {
		p.Add("name", "%v", err)
	}
	if len(c.From) == 0 {
		p.Add("from", "is required: the topics to read ([telemetry])")
	}
	for i, f := range c.From {
		if strings.TrimSpace(f) == "" {
			p.Add(fmt.Sprintf("from[%d]", i), "is empty")
		}
	}
	if c.To == "" {
		p.Add("to", "is required: the topic to write")
	}
	if slices.Contains(c.From, c.To) && c.To != "" {
		p.Add("to", "%q is also in from: a pipeline must not read its own output", c.To)
	}
	switch c.Start {
	case "", "earliest", "latest":
	default:
		p.Add("start", "%q is not earliest or latest", c.Start)
	}
	if c.CommitInterval < 0 {
		p.Add("commit_interval", "cannot be negative")
	}
	bexpr := func(key, src string) *Expr {
		e, err := CompileBool(src)
		if err != nil {
			p.Add(key, "%v", err)
		}
		return e
	}
	aexpr := func(key, src string) *Expr {
		e, err := CompileAny(src)
		if err != nil {
			p.Add(key, "%v", err)
		}
		return e
	}

	b := New(c.Name)
	s := b.Stream(c.From...)
	if j := c.Join; j != nil {
		if j.Table == "" {
			p.Add("join.table", "is required (attributes)")
		} else {
			table := b.Table(j.Table)
			prefix, inner := j.Prefix, j.Inner
			s = s.Join(table, func(r *Record, row []tb.KV) (*Record, error) {
				if row == nil && inner {
					return nil, nil
				}
				r.joined = row
				if prefix != "" {
					return JoinValues(prefix, inner)(r, row)
				}
				return r, nil
			})
		}
	}
	if c.Where != "" {
		if e := bexpr("where", c.Where); e != nil {
			s = s.add("filter", &filterProc{pred: e.Bool, lazy: !e.readsValues()})
		}
	}
	if len(c.Set) > 0 {
		names := make([]string, 0, len(c.Set))
		for n := range c.Set {
			names = append(names, n)
		}
		slices.Sort(names)
		exprs := make([]*Expr, len(names))
		for i, n := range names {
			exprs[i] = aexpr("set."+n, c.Set[n])
		}
		s = s.Map(func(r *Record) (*Record, error) {
			for i, e := range exprs {
				x, ok, err := e.run(r)
				if err != nil {
					return nil, err
				}
				if !ok {
					continue
				}
				v, err := valueOf(x)
				if err != nil {
					return nil, fmt.Errorf("set.%s: %w", names[i], err)
				}
				r.SetValue(names[i], v)
			}
			return r, nil
		})
	}
	if c.Key != "" {
		if e := aexpr("key", c.Key); e != nil {
			s = s.SelectKey(func(r *Record) ([]byte, error) {
				x, ok, err := e.run(r)
				if err != nil {
					return nil, err
				}
				if !ok || x == nil {
					return nil, errors.New("key: the record lacks a value the expression reads")
				}
				return fmt.Append(nil, x), nil
			})
		}
	}

	switch {
	case c.Alert != nil && (c.Window != nil || len(c.Aggregate) > 0):
		p.Add("alert", "cannot be combined with window and aggregate in one pipeline (make two)")
	case c.Alert != nil:
		name := c.Alert.Name
		if name == "" {
			name = c.Name
		}
		if c.Alert.When == "" {
			p.Add("alert.when", "is required")
		}
		raise := bexpr("alert.when", c.Alert.When)
		var clear func(*Record) (bool, error)
		if c.Alert.Clear != "" {
			if e := bexpr("alert.clear", c.Alert.Clear); e != nil {
				clear = e.Bool
			}
		}
		if raise != nil {
			s = s.Alert(name, raise.Bool, clear)
		}
	case c.Window != nil || len(c.Aggregate) > 0:
		w, ok := Running(), true
		if c.Window != nil {
			w, ok = windowOf(c.Window, &p)
		}
		if len(c.Aggregate) == 0 {
			p.Add("aggregate", "is required with window: field → functions ({temperature: [avg, max]})")
		}
		aggs := FieldAggs{}
		for f, fns := range c.Aggregate {
			if len(fns) == 0 {
				p.Add("aggregate."+f, "lists no functions (avg, min, max, sum, count, first, last)")
			}
			for i, fn := range fns {
				if !slices.Contains(Aggs, Agg(fn)) {
					p.Add(fmt.Sprintf("aggregate.%s[%d]", f, i), "%q is not avg, min, max, sum, count, first or last", fn)
				}
				aggs[f] = append(aggs[f], Agg(fn))
			}
		}
		emit := Emit(c.Emit)
		switch {
		case emit == "" && c.Window == nil:
			emit = OnUpdate
		case emit == "":
			emit = OnWindowClose
		case emit != OnWindowClose && emit != OnUpdate:
			p.Add("emit", "%q is not on_window_close or on_update", c.Emit)
		case emit == OnWindowClose && c.Window == nil:
			p.Add("emit", "on_window_close needs a window; an aggregate without one is emitted on_update")
		}
		if ok {
			s = s.Aggregate(w, aggs, emit)
		}
	default:
		if c.Emit != "" {
			p.Add("emit", "applies only with window and aggregate")
		}
	}
	if c.To != "" {
		s.To(c.To)
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	return b.Build()
}

func windowOf(c *WindowConfig, p *configs.Problems) (Windows, bool) {
	set := 0
	for _, d := range []time.Duration{c.Tumbling, c.Hopping, c.Session} {
		if d != 0 {
			set++
		}
	}
	if set != 1 {
		p.Add("window", "needs exactly one of tumbling, hopping or session")
		return Windows{}, false
	}
	if c.Grace < 0 {
		p.Add("window.grace", "cannot be negative")
		return Windows{}, false
	}
	switch {
	case c.Tumbling < 0 || c.Hopping < 0 || c.Session < 0:
		p.Add("window", "sizes must be positive")
	case c.Tumbling > 0:
		if c.Advance != 0 {
			p.Add("window.advance", "applies only to hopping windows")
			return Windows{}, false
		}
		return Tumbling(c.Tumbling, c.Grace), c.Tumbling >= time.Millisecond
	case c.Hopping > 0:
		if c.Advance <= 0 || c.Advance > c.Hopping {
			p.Add("window.advance", "is required with hopping and at most its size (hopping: 1m, advance: 10s)")
			return Windows{}, false
		}
		return Hopping(c.Hopping, c.Advance, c.Grace), true
	case c.Session > 0:
		if c.Advance != 0 {
			p.Add("window.advance", "applies only to hopping windows")
			return Windows{}, false
		}
		return Session(c.Session, c.Grace), true
	}
	return Windows{}, false
}

// TaskOptions are the Options c asks for.
func (c Config) TaskOptions() Options {
	return Options{CommitInterval: c.CommitInterval, StartLatest: c.Start == "latest"}
}
