package streams

import (
	"strings"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/configs"
)

// TestConfigContract runs the two example pipelines, as the
// daemon compiles them from its configuration.
func TestConfigContract(t *testing.T) {
	l := openLog(t, t.TempDir())
	defer l.Close()
	put(t, l, "telemetry", "boiler-1", sec(1), `"temperature":80,"pressure":1.5`)
	put(t, l, "telemetry", "boiler-1", sec(2), `"temperature":95,"pressure":1.6`)
	put(t, l, "telemetry", "boiler-1", sec(3), `"humidity":40`) // no temperature: neither raises nor clears
	put(t, l, "telemetry", "boiler-1", sec(4), `"temperature":84`)
	put(t, l, "telemetry", "boiler-1", sec(75), `"temperature":70`)
	minute, err := Compile(Config{Name: "boiler-minute", From: []string{"telemetry"},
		Where:     `headers.device_type == "boiler"`,
		Window:    &WindowConfig{Tumbling: time.Minute, Grace: 10 * time.Second},
		Aggregate: map[string][]string{"temperature": {"avg", "min", "max", "count"}, "pressure": {"last"}},
		Emit:      "on_window_close", To: "telemetry_1m"})
	if err != nil {
		t.Fatal(err)
	}
	overheat, err := Compile(Config{Name: "overheat", From: []string{"telemetry"},
		Alert: &AlertConfig{When: "values.temperature > 90", Clear: "values.temperature < 85"}, To: "alerts"})
	if err != nil {
		t.Fatal(err)
	}
	drain(t, l, minute)
	drain(t, l, overheat)
	w := readTopic(t, l, "telemetry_1m")
	if len(w) != 1 || num(t, w[0], "temperature_avg") != (80+95+84)/3.0 || num(t, w[0], "temperature_count") != 3 ||
		num(t, w[0], "pressure_last") != 1.6 || w[0].ts != sec(60) {
		t.Fatalf("telemetry_1m %+v", w)
	}
	a := readTopic(t, l, "alerts")
	if len(a) != 2 || a[0].values["state"].Str != "raised" || a[1].values["state"].Str != "cleared" || a[1].ts != sec(4) ||
		a[0].values["alert"].Str != "overheat" {
		t.Fatalf("alerts %+v", a)
	}
}

// TestConfigSetKeyJoin: computed values, re-keying by an expression and
// a join whose row expressions read.
func TestConfigSetKeyJoin(t *testing.T) {
	l := openLog(t, t.TempDir())
	defer l.Close()
	put(t, l, "attributes", "b1", sec(1), `"site":"north","limit":50`)
	put(t, l, "telemetry", "b1", sec(2), `"temperature":60`)
	put(t, l, "telemetry", "b1", sec(3), `"temperature":40`)
	top, err := Compile(Config{Name: "by-site", From: []string{"telemetry"},
		Join:  &JoinConfig{Table: "attributes"},
		Where: "values.temperature > attributes.limit",
		Set:   map[string]string{"fahrenheit": "values.temperature * 9 / 5 + 32", "over": "values.temperature - attributes.limit"},
		Key:   "attributes.site", To: "hot_sites"})
	if err != nil {
		t.Fatal(err)
	}
	drain(t, l, top)
	outs := readTopic(t, l, "hot_sites")
	if len(outs) != 1 || outs[0].key != "north" || num(t, outs[0], "fahrenheit") != 140 || num(t, outs[0], "over") != 10 {
		t.Fatalf("outputs %+v", outs)
	}
}

// TestConfigErrors: every problem names its key; an expression's names
// where in it the problem is.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		c    Config
		want []string
	}{
		{Config{Name: "a", From: []string{"telemetry"}, Where: "values.temperature >", To: "o"},
			[]string{"where: line 1, column 20: unexpected token EOF"}},
		{Config{Name: "a", From: []string{"telemetry"}, Where: "vales.temperature > 1", To: "o"},
			[]string{"where: line 1, column 1: unknown name vales"}},
		{Config{Name: "a", From: []string{"telemetry"}, Where: "ts + 1", To: "o"},
			[]string{"where: expected bool, but got int"}},
		{Config{Name: "a", From: []string{"telemetry"}, Alert: &AlertConfig{When: "values.t > 1", Clear: "1 +"}, To: "o"},
			[]string{"alert.clear: line 1"}},
		{Config{Name: "a b", From: nil, To: ""},
			[]string{"name: ", "from: is required", "to: is required"}},
		{Config{Name: "a", From: []string{"t"}, Window: &WindowConfig{Tumbling: time.Minute, Session: time.Minute},
			Aggregate: map[string][]string{"x": {"median"}}, To: "o"},
			[]string{"window: needs exactly one", `aggregate.x[0]: "median" is not avg`}},
		{Config{Name: "a", From: []string{"t"}, Window: &WindowConfig{Hopping: time.Minute}, Aggregate: map[string][]string{"x": {"avg"}}, To: "o"},
			[]string{"window.advance: is required with hopping"}},
		{Config{Name: "a", From: []string{"t"}, Alert: &AlertConfig{When: "true"}, Window: &WindowConfig{Tumbling: time.Minute}, To: "o"},
			[]string{"alert: cannot be combined"}},
		{Config{Name: "a", From: []string{"t"}, To: "t", Start: "middle", Emit: "often"},
			[]string{`to: "t" is also in from`, `start: "middle"`, "emit: applies only"}},
	} {
		_, err := Compile(tc.c)
		if err == nil {
			t.Errorf("%+v compiled", tc.c)
			continue
		}
		got := strings.Join(configs.Lines(err), "\n")
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%+v:\n%s\nlacks %q", tc.c, got, w)
			}
		}
	}
}
