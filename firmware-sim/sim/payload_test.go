package sim

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestTelemetryShapes(t *testing.T) {
	now := time.UnixMilli(1767225600123)
	tests := []struct {
		shape      string
		wantArray  bool
		wantStamps []int64
	}{
		{ShapeObject, false, nil},
		{ShapeArray, true, nil},
		{ShapeTS, false, []int64{1767225600123}},
		{ShapeTSArray, true, []int64{1767225599123, 1767225600123}},
		{"no-such-shape", false, nil}, // falls back to object
	}
	for _, tc := range tests {
		t.Run(tc.shape, func(t *testing.T) {
			for _, dev := range []int{0, 1, 42} {
				for _, seq := range []int{0, 1, 999, 123456} {
					payload := Telemetry(tc.shape, dev, seq, now)
					if !json.Valid(payload) {
						t.Fatalf("invalid JSON: %s", payload)
					}
					if got := strings.HasPrefix(string(payload), "["); got != tc.wantArray {
						t.Fatalf("array root = %v, want %v: %s", got, tc.wantArray, payload)
					}
					values, stamps := decodeTelemetry(t, payload)
					if !slices.Equal(stamps, tc.wantStamps) {
						t.Fatalf("timestamps %v, want %v", stamps, tc.wantStamps)
					}
					checkReading(t, values, Sample(dev, seq))
				}
			}
		})
	}
}

// checkReading compares decoded telemetry with the Reading it came from,
// and checks ThingsBoard will type every key the same way every time.
func checkReading(t *testing.T, values map[string]any, want Reading) {
	t.Helper()
	if len(values) != 7 {
		t.Fatalf("got keys %v, want 7", values)
	}
	integer := func(k string) int64 {
		n, ok := values[k].(json.Number)
		if !ok || strings.ContainsAny(n.String(), ".eE") {
			t.Fatalf("%s = %v, want an integer (LONG)", k, values[k])
		}
		v, _ := n.Int64()
		return v
	}
	double := func(k string) float64 {
		n, ok := values[k].(json.Number)
		if !ok || !strings.Contains(n.String(), ".") {
			t.Fatalf("%s = %v, want a number with a decimal point (DOUBLE)", k, values[k])
		}
		v, _ := n.Float64()
		return v
	}
	got := Reading{
		Seq:         int(integer("seq")),
		Temperature: double("temperature"),
		Humidity:    double("humidity"),
		Pressure:    double("pressure"),
		Battery:     double("battery"),
		RSSI:        int(integer("rssi")),
	}
	motion, ok := values["motion"].(bool)
	if !ok {
		t.Fatalf("motion = %v, want a bool", values["motion"])
	}
	got.Motion = motion
	if got != want {
		t.Fatalf("decoded %+v, want %+v", got, want)
	}
}

func TestSampleIsDeterministicAndPlausible(t *testing.T) {
	if Sample(3, 17) != Sample(3, 17) {
		t.Fatal("Sample is not deterministic")
	}
	if Sample(3, 17) == Sample(4, 17) {
		t.Fatal("devices 3 and 4 read the same")
	}
	for _, dev := range []int{0, 7, 99} {
		prev := Sample(dev, 0)
		motions := 0
		for seq := 1; seq < 5000; seq++ {
			r := Sample(dev, seq)
			switch {
			case r.Temperature < 5 || r.Temperature > 40:
				t.Fatalf("device %d seq %d: temperature %v", dev, seq, r.Temperature)
			case r.Humidity < 3 || r.Humidity > 99:
				t.Fatalf("device %d seq %d: humidity %v", dev, seq, r.Humidity)
			case r.Pressure < 990 || r.Pressure > 1035:
				t.Fatalf("device %d seq %d: pressure %v", dev, seq, r.Pressure)
			case r.RSSI < -95 || r.RSSI > -40:
				t.Fatalf("device %d seq %d: rssi %v", dev, seq, r.RSSI)
			case r.Battery > prev.Battery || r.Battery < 0:
				t.Fatalf("device %d seq %d: battery %v after %v", dev, seq, r.Battery, prev.Battery)
			case abs(r.Temperature-prev.Temperature) > 0.2:
				t.Fatalf("device %d seq %d: temperature jumped %v → %v", dev, seq, prev.Temperature, r.Temperature)
			}
			if r.Motion {
				motions++
			}
			prev = r
		}
		if motions < 100 || motions > 500 {
			t.Errorf("device %d: %d motion events in 5000 samples, want about 250", dev, motions)
		}
	}
}

func abs(v float64) float64 { return max(v, -v) }

func TestAttributes(t *testing.T) {
	var got map[string]any
	if err := json.Unmarshal(Attributes(12, 40), &got); err != nil {
		t.Fatal(err)
	}
	if got["serialNumber"] != "SIM-000012" || got["lastSeq"] != float64(40) {
		t.Fatalf("attributes %v", got)
	}
}

func TestRPCReply(t *testing.T) {
	tests := []struct {
		name, request string
		want          map[string]any
	}{
		{"echo", `{"method":"setGpio","params":{"pin":4}}`,
			map[string]any{"method": "setGpio", "params": map[string]any{"pin": float64(4)}, "result": "ok"}},
		{"no params", `{"method":"reboot"}`, map[string]any{"method": "reboot", "params": nil, "result": "ok"}},
		{"ping", `{"method":"ping","params":{}}`, map[string]any{"pong": true}},
		{"not JSON", `{`, map[string]any{"error": "invalid RPC request"}},
		{"no method", `{"params":1}`, map[string]any{"error": "invalid RPC request"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got map[string]any
			if err := json.Unmarshal(rpcReply(1, 2, []byte(tc.request)), &got); err != nil {
				t.Fatal(err)
			}
			gotJSON, _ := json.Marshal(got)
			wantJSON, _ := json.Marshal(tc.want)
			if string(gotJSON) != string(wantJSON) {
				t.Fatalf("reply %s, want %s", gotJSON, wantJSON)
			}
		})
	}
	values, _ := decodeTelemetry(t, rpcReply(5, 9, []byte(`{"method":"getTelemetry"}`)))
	checkReading(t, values, Sample(5, 9))
}

func BenchmarkTelemetry(b *testing.B) {
	now := time.Now()
	for i := 0; b.Loop(); i++ {
		Telemetry(ShapeObject, 7, i, now)
	}
}
