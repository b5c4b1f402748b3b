package kafka

import (
	"testing"
	"time"

	"github.com/ferry-iot/ferry/bridge"
)

// TestNormalFlow: a backlog and live records reach the upstream exactly
// once, in per-key order, with keys, values, timestamps and headers.
func TestNormalFlow(t *testing.T) {
	c := cluster(t)
	e := newEdge(t, "")
	defer e.close()
	e.produce("telemetry", 0, 5000, 20)
	tg := target(t, c.ListenAddrs(), ExactlyOnce)
	en := engineFor(t, e, tg, bridge.Config{})
	en.Start()
	e.produce("telemetry", 5000, 1000, 20)
	waitLag(t, en, 30*time.Second)
	if err := en.Close(); err != nil {
		t.Fatal(err)
	}
	u := readUpstream(t, c.ListenAddrs(), "site1.telemetry", 6000, 20*time.Second)
	u.check(t, e, "telemetry", false)
	r := u.recs[0]
	if header(r, "ferry.node") != "gw-test" || header(r, "device") != string(r.Key) || header(r, "seq") == "" {
		t.Fatalf("headers not preserved: %+v", r.Headers)
	}
	if r.Timestamp.UnixMilli() < 1_700_000_000_000 || r.Timestamp.UnixMilli() > 1_700_000_006_000 {
		t.Fatalf("timestamp %v not preserved", r.Timestamp)
	}
	st := en.Status()
	if st.RecordsSent != 6000 || st.Lag != 0 {
		t.Fatalf("status: %+v", st)
	}
	t.Logf("wire bytes %d for 6000 records: %.1f bytes/record", tg.WireBytes(), float64(tg.WireBytes())/6000)
}
