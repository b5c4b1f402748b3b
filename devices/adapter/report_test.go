package adapter

import (
	"strings"
	"testing"
	"time"

	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

func dbl(f float64) tb.Value { return tb.Value{Kind: tb.KindDouble, Double: f} }

func keys(kvs []tb.KV) string {
	s := ""
	for _, kv := range kvs {
		s += kv.Key + "=" + string(kv.Value.AppendJSON(nil)) + " "
	}
	return s
}

// TestReportStrategies runs each strategy over the same polls (one every
// 5 s) and checks what each sends.
func TestReportStrategies(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	polls := []float64{20.0, 20.2, 20.6, 20.6, 21.0, 21.0, 21.0, 21.0, 21.0, 21.0, 21.0, 21.0, 21.0, 21.0, 25.0}
	cases := []struct {
		r    Report
		want string // 1 where poll i is sent
	}{
		{Report{}, "111111111111111"},
		{Report{Strategy: OnChange}, "111010000000001"},
		// 20.6 is 0.6 from 20.0; 21.0 only 0.4 from 20.6.
		{Report{Strategy: OnChange, Deadband: "0.5"}, "101000000000001"},
		// 2 % of 20.0 = 0.4 (20.6 sent); 2 % of 20.6 = 0.412 (21.0 not).
		{Report{Strategy: OnChange, Deadband: "2%"}, "101000000000001"},
		{Report{Strategy: Period, Period: 30 * time.Second}, "100000100000100"},
		// 20.6 at 10 s, then unchanged: again at 40 s; 25.0 at 70 s.
		{Report{Strategy: OnChangeOrPeriod, Period: 30 * time.Second, Deadband: "0.5"}, "101000001000001"},
	}
	for _, c := range cases {
		if err := c.r.Validate(); err != nil {
			t.Fatalf("%+v: %v", c.r, err)
		}
		rep := newReporter(c.r, 5*time.Second)
		got := ""
		for i, v := range polls {
			at := t0.Add(time.Duration(i) * 5 * time.Second)
			out := rep.pick(at, []tb.KV{{Key: "t", Value: dbl(v)}})
			if len(out) == 1 {
				got += "1"
				if c.r.strategy() != OnReceived && rep.sent["t"].at != at {
					t.Fatalf("%+v: sent value kept time %v, want its sample time %v", c.r, rep.sent["t"].at, at)
				}
			} else {
				got += "0"
			}
		}
		if got != c.want {
			t.Errorf("%+v: sent %s, want %s", c.r, got, c.want)
		}
	}
}

// TestReportPerKey: strategies apply per key; strings and bools send on
// any change; attributes are stored when they change.
func TestReportPerKey(t *testing.T) {
	rep := newReporter(Report{Strategy: OnChange, Deadband: "1"}, time.Second)
	at := time.Unix(0, 0)
	first := rep.pick(at, []tb.KV{{Key: "a", Value: dbl(1)}, {Key: "s", Value: tb.Value{Kind: tb.KindString, Str: "x"}}})
	second := rep.pick(at.Add(time.Second), []tb.KV{{Key: "a", Value: dbl(1.5)}, {Key: "s", Value: tb.Value{Kind: tb.KindString, Str: "y"}}})
	if keys(first) != `a=1.0 s="x" ` || keys(second) != `s="y" ` {
		t.Fatalf("first %q second %q", keys(first), keys(second))
	}
	attrs := []tb.KV{{Key: "serial", Value: tb.Value{Kind: tb.KindString, Str: "A1"}}}
	if len(rep.changedAttributes(attrs)) != 1 || len(rep.changedAttributes(attrs)) != 0 {
		t.Fatal("attributes: stored once while unchanged")
	}
}

func TestReportValidate(t *testing.T) {
	for _, c := range []struct {
		r    Report
		want string
	}{
		{Report{Strategy: "sometimes"}, "strategy"},
		{Report{Strategy: Period}, "period: is required"},
		{Report{Strategy: OnChange, Period: time.Second}, "period: has no effect"},
		{Report{Strategy: OnChange, Deadband: "x"}, "deadband"},
		{Report{Strategy: OnReceived, Deadband: "1"}, "deadband: has no effect"},
	} {
		err := c.r.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.r, err, c.want)
		}
	}
}
