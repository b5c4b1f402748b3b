package adapter

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-iot/ferry/configs"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// Report strategies: which of a poll's values go into its record.
const (
	// OnReceived sends every value read, at every poll.
	OnReceived = "on_received"
	// OnChange sends a value when it moved past the deadband from the
	// value last sent (any change when the deadband is zero).
	OnChange = "on_change"
	// Period sends a value read at least Period after it was last sent.
	Period = "period"
	// OnChangeOrPeriod sends a value that changed, or was not sent for
	// Period.
	OnChangeOrPeriod = "on_change_or_period"
)

// Report is a device's report strategy (the source.report setting).
type Report struct {
	Strategy string        `mapstructure:"strategy"`
	Period   time.Duration `mapstructure:"period"`
	// Deadband is an absolute change ("0.5") or a share of the last sent
	// value ("2%"); numbers only (other values send on any change).
	Deadband string `mapstructure:"deadband"`
}

// Validate checks r, naming keys relative to the report section.
func (r Report) Validate() error {
	var p configs.Problems
	switch r.Strategy {
	case "", OnReceived, OnChange, Period, OnChangeOrPeriod:
	default:
		p.Add("strategy", "%q is not on_received, on_change, period or on_change_or_period", r.Strategy)
	}
	needsPeriod := r.Strategy == Period || r.Strategy == OnChangeOrPeriod
	switch {
	case r.Period < 0:
		p.Add("period", "%v is negative", r.Period)
	case needsPeriod && r.Period == 0:
		p.Add("period", "is required with strategy %s", r.Strategy)
	case !needsPeriod && r.Period != 0:
		p.Add("period", "has no effect with strategy %s (use period or on_change_or_period)", r.strategy())
	}
	if _, _, err := parseDeadband(r.Deadband); err != nil {
		p.Add("deadband", "%v", err)
	} else if r.Deadband != "" && r.Strategy != OnChange && r.Strategy != OnChangeOrPeriod {
		p.Add("deadband", "has no effect with strategy %s (use on_change or on_change_or_period)", r.strategy())
	}
	return p.Err()
}

func (r Report) strategy() string {
	if r.Strategy == "" {
		return OnReceived
	}
	return r.Strategy
}

// parseDeadband reads "0.5" (absolute) or "2%" (relative).
func parseDeadband(s string) (v float64, percent bool, err error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, false, nil
	}
	if percent = strings.HasSuffix(s, "%"); percent {
		s = strings.TrimSpace(strings.TrimSuffix(s, "%"))
	}
	v, err = strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, false, fmt.Errorf("%q is not a non-negative number or percentage (0.5, 2%%)", s)
	}
	return v, percent, nil
}

// reporter applies a Report to one device's readings.
type reporter struct {
	strategy string
	period   time.Duration
	slack    time.Duration // period checks forgive this much jitter (half a poll)
	deadband float64
	percent  bool
	sent     map[string]sentValue
	attrs    map[string]tb.Value // attributes last stored
}

type sentValue struct {
	v  tb.Value
	at time.Time // sample time it was sent with
}

func newReporter(r Report, poll time.Duration) *reporter {
	db, pct, _ := parseDeadband(r.Deadband) // validated
	return &reporter{strategy: r.strategy(), period: r.Period, slack: poll / 2, deadband: db, percent: pct,
		sent: map[string]sentValue{}, attrs: map[string]tb.Value{}}
}

// pick returns the values of a reading sampled at `at` to send, and
// remembers them as sent.
func (r *reporter) pick(at time.Time, kvs []tb.KV) []tb.KV {
	if r.strategy == OnReceived {
		return kvs // nothing to remember
	}
	out := kvs[:0:0]
	for _, kv := range kvs {
		last, seen := r.sent[kv.Key]
		send := !seen
		if seen {
			switch r.strategy {
			case OnReceived:
				send = true
			case OnChange:
				send = r.changed(last.v, kv.Value)
			case Period:
				send = at.Sub(last.at)+r.slack >= r.period
			case OnChangeOrPeriod:
				send = r.changed(last.v, kv.Value) || at.Sub(last.at)+r.slack >= r.period
			}
		}
		if send {
			out = append(out, kv)
			r.sent[kv.Key] = sentValue{v: kv.Value, at: at}
		}
	}
	return out
}

// changed reports whether v moved past the deadband from last.
func (r *reporter) changed(last, v tb.Value) bool {
	a, aok := last.Number()
	b, bok := v.Number()
	if !aok || !bok {
		return !sameValue(last, v)
	}
	limit := r.deadband
	if r.percent {
		limit = math.Abs(a) * r.deadband / 100
	}
	if limit == 0 {
		return a != b
	}
	return math.Abs(b-a) >= limit
}

// changedAttributes returns the attributes that differ from those last
// stored, and remembers them.
func (r *reporter) changedAttributes(kvs []tb.KV) []tb.KV {
	var out []tb.KV
	for _, kv := range kvs {
		if last, ok := r.attrs[kv.Key]; ok && sameValue(last, kv.Value) {
			continue
		}
		r.attrs[kv.Key] = kv.Value
		out = append(out, kv)
	}
	return out
}

func sameValue(a, b tb.Value) bool {
	return a.Kind == b.Kind && a.Bool == b.Bool && a.Long == b.Long && a.Str == b.Str &&
		(a.Double == b.Double || (math.IsNaN(a.Double) && math.IsNaN(b.Double))) && string(a.JSON) == string(b.JSON)
}
