package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferry-iot/ferry/bridge"
	"github.com/ferry-iot/ferry/broker/testkit"
)

// TestBridgeKafkaE2E: telemetry from an MQTT device reaches the upstream
// Kafka cluster (kfake) through the exactly-once bridge, with provenance
// headers; GET /api/v1/bridges reports the bridge connected with no lag.
func TestBridgeKafkaE2E(t *testing.T) {
	up, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	d := startDaemon(t, "", fmt.Sprintf(`
node_id: site-7
bridges:
  kafka:
    brokers: [%q]
    topics: {telemetry: site7.telemetry}
    backoff: 100ms
`, up.ListenAddrs()[0]))
	c := connectDevice(t, d, "TOKEN1")
	for i := 0; i < 20; i++ {
		publish(t, c, "v1/devices/me/telemetry", fmt.Sprintf(`{"ts":%d,"values":{"n":%d}}`, 1_700_000_000_000+i, i))
	}
	var st struct {
		Bridges []bridge.Status `json:"bridges"`
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		d.api("GET", "/api/v1/bridges", nil, &st)
		if len(st.Bridges) == 1 && st.Bridges[0].RecordsSent >= 20 && st.Bridges[0].Lag == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bridge status: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if s := st.Bridges[0]; s.State != bridge.StateConnected || s.LastAck.IsZero() || s.WireBytes <= 0 || s.RecordsResent != 0 || s.RecordsRejected != 0 {
		t.Fatalf("bridge status: %+v", s)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(up.ListenAddrs()...), kgo.ConsumeTopics("site7.telemetry"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := 0
	for got < 20 && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			got++
			hs := map[string]string{}
			for _, h := range r.Headers {
				hs[h.Key] = string(h.Value)
			}
			if string(r.Key) != "boiler-1" || hs["ferry.node"] != "site-7" || hs["ferry.topic"] != "telemetry" ||
				hs["ferry.offset"] == "" || !strings.Contains(string(r.Value), `"values":{"n":`) {
				t.Fatalf("upstream record: key %q value %q headers %v", r.Key, r.Value, hs)
			}
		})
	}
	if got != 20 {
		t.Fatalf("upstream has %d records, want 20", got)
	}
	if v := d.metric(`ferry_bridge_records_sent_total{bridge="kafka"}`); v < 20 {
		t.Fatalf("records sent metric %v", v)
	}
	if v := d.metric(`ferry_bridge_lag{bridge="kafka",partition="0",topic="telemetry"}`); v != 0 {
		t.Fatalf("lag metric %v", v)
	}
	// Wire bytes (after compression, every request) reach the metrics;
	// the records' own bytes are counted apart, before compression.
	if v := d.metric(`ferry_bridge_wire_bytes_total{bridge="kafka"}`); v <= 0 {
		t.Fatalf("wire bytes metric %v", v)
	}
	if v := d.metric(`ferry_bridge_records_rejected_total{bridge="kafka"}`); v != 0 {
		t.Fatalf("rejected records metric %v", v)
	}
}

// TestBridgeUpstreamReinstalled: the core cluster is reinstalled empty
// while the gateway is down. At restart the bridge says so — status
// upstream_reset, ferry_bridge_upstream_resets_total, the log — and goes on
// from its local checkpoint; POST /api/v1/bridges/kafka/resend then sends
// the edge's history to the new cluster.
func TestBridgeUpstreamReinstalled(t *testing.T) {
	bridgeCfg := func(addr string) string {
		return fmt.Sprintf("\nbridges:\n  kafka:\n    brokers: [%q]\n    topics: {telemetry: site.telemetry}\n    backoff: 100ms\n", addr)
	}
	upA, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	d := startDaemon(t, dataDir, bridgeCfg(upA.ListenAddrs()[0]))
	c := connectDevice(t, d, "TOKEN1")
	for i := range 30 {
		publish(t, c, "v1/devices/me/telemetry", fmt.Sprintf(`{"n":%d}`, i))
	}
	var st struct {
		Bridges []bridge.Status `json:"bridges"`
	}
	testkit.Eventually(t, 20*time.Second, func() bool {
		d.api("GET", "/api/v1/bridges", nil, &st)
		return len(st.Bridges) == 1 && st.Bridges[0].RecordsSent == 30 && st.Bridges[0].Lag == 0
	}, "30 records upstream")
	c.Disconnect(100)
	d.stop()
	upA.Close()

	upB, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer upB.Close()
	d = startDaemon(t, dataDir, bridgeCfg(upB.ListenAddrs()[0]))
	testkit.Eventually(t, 20*time.Second, func() bool {
		d.api("GET", "/api/v1/bridges", nil, &st)
		return len(st.Bridges) == 1 && st.Bridges[0].UpstreamReset != "" && st.Bridges[0].State == bridge.StateConnected
	}, "the reset reported")
	if !strings.Contains(st.Bridges[0].UpstreamReset, "the upstream has no checkpoint") {
		t.Fatalf("upstream_reset %q", st.Bridges[0].UpstreamReset)
	}
	if n := d.metric(`ferry_bridge_upstream_resets_total{bridge="kafka"}`); n < 1 {
		t.Fatalf("upstream resets %v", n)
	}
	if code := d.api("POST", "/api/v1/bridges/kafka/resend", map[string]any{"topic": "telemetry", "partition": 0, "offset": 1 << 40}, nil); code != 400 {
		t.Fatalf("resend past the end: %d", code)
	}
	if code := d.api("POST", "/api/v1/bridges/nope/resend", map[string]any{"topic": "telemetry", "partition": 0, "offset": 0}, nil); code != 404 {
		t.Fatalf("resend of an unknown bridge: %d", code)
	}
	for p := range 3 {
		if code := d.api("POST", "/api/v1/bridges/kafka/resend", map[string]any{"topic": "telemetry", "partition": p, "offset": 0}, nil); code != 202 {
			t.Fatalf("resend partition %d: %d", p, code)
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(upB.ListenAddrs()...), kgo.ConsumeTopics("site.telemetry"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seen := map[string]bool{}
	for len(seen) < 30 && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { seen[string(r.Value)] = true })
	}
	if len(seen) != 30 {
		t.Fatalf("the reinstalled upstream has %d of the 30 records after the resend", len(seen))
	}
}
