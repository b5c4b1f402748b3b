package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/configs"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

func TestLatencyQuantiles(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name          string
		values        []time.Duration
		p50, p99, max time.Duration
	}{
		{"empty", nil, 0, 0, 0},
		{"one", []time.Duration{3 * ms}, 3 * ms, 3 * ms, 3 * ms},
		{"exact small", []time.Duration{1, 2, 3, 4}, 2, 4, 4},
		{"hundred", seq(1, 100, ms), 50 * ms, 99 * ms, 100 * ms},
		{"outlier", append(seq(1, 99, ms), 5*time.Second), 50 * ms, 99 * ms, 5 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h latencyHist
			for _, v := range tc.values {
				h.record(v)
			}
			check := func(what string, got, want time.Duration) {
				// Buckets are at most 1/64 wide and report their upper bound.
				if got < want || float64(got-want) > float64(want)/64 {
					t.Errorf("%s = %v, want %v (+1/64)", what, got, want)
				}
			}
			check("p50", h.quantile(0.5), tc.p50)
			check("p99", h.quantile(0.99), tc.p99)
			if h.maximum() != tc.max {
				t.Errorf("max = %v, want %v", h.maximum(), tc.max)
			}
		})
	}
}

func seq(from, to int, unit time.Duration) []time.Duration {
	var out []time.Duration
	for i := from; i <= to; i++ {
		out = append(out, time.Duration(i)*unit)
	}
	return out
}

func TestLatencyBuckets(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		v := r.Uint64() >> r.IntN(64)
		i := bucketOf(v)
		if i < 0 || i >= numBuckets {
			t.Fatalf("bucketOf(%d) = %d, outside 0..%d", v, i, numBuckets)
		}
		upper := bucketUpper(i)
		if upper < v || (v >= subBuckets && float64(upper-v) > float64(v)/subBuckets) {
			t.Fatalf("value %d: bucket %d upper %d", v, i, upper)
		}
		if i > 0 && bucketUpper(i-1) >= v {
			t.Fatalf("value %d also fits bucket %d", v, i-1)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	valid := func() Config { return Config{Broker: "tcp://127.0.0.1:1883", Devices: 1} }
	tests := []struct {
		name   string
		modify func(*Config)
		fields []string // fields the error must name, in order; none: valid
	}{
		{"defaults", func(*Config) {}, nil},
		{"qos0", func(c *Config) { c.QoS = AtMostOnce }, nil},
		{"ws", func(c *Config) { c.Broker = "ws://host:8080/mqtt" }, nil},
		{"provision", func(c *Config) {
			c.Provision, c.ProvisionKey, c.ProvisionSecret, c.TokenFormat = true, "k", "s", "fixed"
		}, nil},
		{"everything wrong", func(c *Config) {
			*c = Config{Broker: "http://x", Devices: 0, Rate: -1, Messages: -1, QoS: 2, Inflight: -1,
				TokenFormat: "fixed", DeviceNameFormat: "%s-%d", Shapes: []string{"object", "xml"},
				AttributesEvery: -1, StartSpread: -time.Second}
		}, []string{"Broker", "Devices", "Rate", "Messages", "QoS", "Inflight", "TokenFormat", "DeviceNameFormat", "Shapes", "AttributesEvery", "StartSpread"}},
		{"provision without credentials", func(c *Config) { c.Provision = true }, []string{"ProvisionKey", "ProvisionSecret"}},
		{"no broker", func(c *Config) { c.Broker = "" }, []string{"Broker"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.modify(&c)
			c.EnsureDefaults()
			err := c.Validate()
			if len(tc.fields) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
			var got []string
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var fe *configs.FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("%v is not a FieldError", e)
				}
				got = append(got, fe.Key)
			}
			if strings.Join(got, ",") != strings.Join(tc.fields, ",") {
				t.Fatalf("fields %v, want %v (error: %v)", got, tc.fields, err)
			}
		})
	}
}

func TestRunRejectsInvalidConfig(t *testing.T) {
	_, err := Run(context.Background(), Config{}, nil)
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Run(Config{}) = %v, want ErrInvalidConfig", err)
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		err       error
		sameEpoch bool
		abandoned bool
		want      Outcome
	}{
		{nil, true, false, Acked},
		{nil, false, false, Unconfirmed}, // #563: completed by resume() across a reconnect
		{nil, true, true, Unconfirmed},
		{mqtt.ErrNotConnected, true, false, Failed},
		{fmt.Errorf("no message IDs available"), true, false, Failed},
		{fmt.Errorf("connection lost before Publish completed"), true, false, Unconfirmed},
		{fmt.Errorf("publish was broken by timeout"), false, false, Unconfirmed},
		{&net.OpError{Op: "write", Net: "tcp", Err: syscall.EPIPE}, true, false, Unconfirmed}, // paho keeps it for the resend
		{fmt.Errorf("something new"), true, false, Failed},
	}
	for _, tc := range tests {
		if got := classify(tc.err, tc.sameEpoch, tc.abandoned); got != tc.want {
			t.Errorf("classify(%v, same=%v, abandoned=%v) = %v, want %v", tc.err, tc.sameEpoch, tc.abandoned, got, tc.want)
		}
	}
}

func TestParseProvisionResponse(t *testing.T) {
	tests := []struct {
		answer, token, status string
	}{
		{`{"credentialsType":"ACCESS_TOKEN","credentialsValue":"abc","status":"SUCCESS"}`, "abc", ""},
		{`{"errorMsg":"Provision data was not found!","status":"NOT_FOUND"}`, "", "NOT_FOUND"},
		{`{"errorMsg":"Failed to provision device!","status":"FAILURE"}`, "", "FAILURE"},
		{`{"credentialsType":"MQTT_BASIC","credentialsValue":{"clientId":"c"},"status":"SUCCESS"}`, "", statusUnsupported},
		{`{"credentialsType":"ACCESS_TOKEN","credentialsValue":"","status":"SUCCESS"}`, "", statusInvalid},
		{`{"credentialsType":"ACCESS_TOKEN","status":"SUCCESS"}`, "", statusInvalid},
		{`{}`, "", statusInvalid},
		{`not json`, "", statusInvalid},
	}
	for _, tc := range tests {
		token, err := parseProvisionResponse(7, []byte(tc.answer))
		var pe *ProvisionError
		switch {
		case tc.status == "" && (err != nil || token != tc.token):
			t.Errorf("%s: got %q, %v; want %q", tc.answer, token, err, tc.token)
		case tc.status != "" && (!errors.As(err, &pe) || pe.Status != tc.status || pe.Device != 7 || !errors.Is(err, ErrProvision)):
			t.Errorf("%s: got %q, %v; want a ProvisionError with status %s", tc.answer, token, err, tc.status)
		}
	}
}

func FuzzParseProvisionResponse(f *testing.F) {
	f.Add([]byte(`{"credentialsType":"ACCESS_TOKEN","credentialsValue":"abc","status":"SUCCESS"}`))
	f.Add([]byte(`{"errorMsg":"x","status":"NOT_FOUND"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, answer []byte) {
		token, err := parseProvisionResponse(1, answer)
		var pe *ProvisionError
		switch {
		case err == nil && token == "":
			t.Fatal("success without a token")
		case err != nil && (token != "" || !errors.As(err, &pe) || pe.Status == "SUCCESS"):
			t.Fatalf("failure %v with token %q", err, token)
		}
	})
}
