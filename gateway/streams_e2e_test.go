package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/broker/testkit"
)

// boilerMinute is the one-minute downsampling pipeline (the YAML's
// streams section, open for more entries).
const boilerMinute = `
streams:
  - name: boiler-minute
    from: [telemetry]
    where: 'headers.device_type == "boiler"'
    window: {tumbling: 1m, grace: 10s}
    aggregate: {temperature: [avg, min, max, count], pressure: [last]}
    to: telemetry_1m`

// streamsConfig is the two pipelines, with the Kafka bridge
// replicating only the one-minute stream.
const streamsConfig = boilerMinute + `
  - name: overheat
    from: [telemetry]
    alert: {when: 'values.temperature > 90', clear: 'values.temperature < 85'}
    to: alerts
bridges:
  kafka:
    brokers: [%q]
    topics: {telemetry_1m: site.telemetry_1m}
    backoff: 100ms
`

// TestStreamsE2E: a device publishes two minutes of 1 Hz telemetry over
// MQTT; the boiler-minute pipeline writes one record per minute, which a
// franz-go consumer and kcat read from the Kafka listener and the Kafka
// bridge replicates upstream alone (the raw telemetry stays at the edge);
// the overheat pipeline raises and clears once; GET /api/v1/streams and
// the metrics report both.
func TestStreamsE2E(t *testing.T) {
	up, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	d := startDaemon(t, "", fmt.Sprintf(streamsConfig, up.ListenAddrs()[0]))
	c := connectDevice(t, d, "TOKEN1")
	base := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC).UnixMilli()
	var sums [3]float64
	for i := range 120 {
		temp := 20 + float64(i%10)
		if i == 30 {
			temp = 95 // overheat, raised
		}
		if i == 31 {
			temp = 91 // still raised: no second event
		}
		sums[i/60] += temp
		publish(t, c, "v1/devices/me/telemetry", fmt.Sprintf(`{"ts":%d,"values":{"temperature":%v,"pressure":%d}}`, base+int64(i)*1000, temp, i))
	}
	// Past the second window's end plus grace: it closes.
	publish(t, c, "v1/devices/me/telemetry", fmt.Sprintf(`{"ts":%d,"values":{"temperature":21}}`, base+131_000))

	var st struct {
		Streams []struct {
			Name       string           `json:"name"`
			State      string           `json:"state"`
			RecordsIn  int64            `json:"records_in"`
			RecordsOut int64            `json:"records_out"`
			Lag        map[string]int64 `json:"lag"`
			From       []string         `json:"from"`
			To         string           `json:"to"`
		} `json:"streams"`
	}
	testkit.Eventually(t, 20*time.Second, func() bool {
		if d.api("GET", "/api/v1/streams", nil, &st) != 200 || len(st.Streams) != 2 {
			return false
		}
		return st.Streams[0].RecordsIn == 121 && st.Streams[0].RecordsOut == 2 && st.Streams[1].RecordsOut == 2
	}, "both pipelines caught up")
	for _, s := range st.Streams {
		if s.State != "running" || len(s.Lag) != 3 || s.From[0] != "telemetry" {
			t.Fatalf("stream status %+v", s)
		}
	}

	// The reduced stream over the Kafka protocol: franz-go, then kcat.
	type window struct {
		Ts     int64              `json:"ts"`
		Values map[string]float64 `json:"values"`
	}
	check := func(who string, values []string) {
		t.Helper()
		if len(values) != 2 {
			t.Fatalf("%s read %d records from telemetry_1m: %q", who, len(values), values)
		}
		for i, v := range values {
			var w window
			if err := json.Unmarshal([]byte(v), &w); err != nil {
				t.Fatalf("%s: %q: %v", who, v, err)
			}
			if w.Ts != base+int64(i+1)*60_000 || w.Values["temperature_count"] != 60 || w.Values["temperature_avg"] != sums[i]/60 ||
				w.Values["pressure_last"] != float64(i*60+59) {
				t.Fatalf("%s: window %d is %+v (sum %v)", who, i, w, sums[i])
			}
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(d.KafkaAddr().String()), kgo.ConsumeTopics("telemetry_1m"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var fromFranz []string
	for len(fromFranz) < 2 && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			if string(r.Key) != "boiler-1" {
				t.Errorf("key %q", r.Key)
			}
			fromFranz = append(fromFranz, string(r.Value))
		})
	}
	check("franz-go", fromFranz)
	out := kcatRun(t, ctx, "", "-C", "-b", d.KafkaAddr().String(), "-t", "telemetry_1m", "-o", "beginning", "-e", "-q", "-f", "%s\n")
	check("kcat", strings.Split(strings.TrimSpace(out), "\n"))

	// Upstream: the one-minute records only.
	upc, err := kgo.NewClient(kgo.SeedBrokers(up.ListenAddrs()...), kgo.ConsumeTopics("site.telemetry_1m"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer upc.Close()
	var upstream []string
	for len(upstream) < 2 && ctx.Err() == nil {
		upc.PollFetches(ctx).EachRecord(func(r *kgo.Record) { upstream = append(upstream, string(r.Value)) })
	}
	check("upstream", upstream)
	adm, err := kgo.NewClient(kgo.SeedBrokers(up.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	var data []string // the bridge's own checkpoint topic aside
	for _, tp := range metadataTopics(t, ctx, adm) {
		if tp != "ferry.checkpoints" {
			data = append(data, tp)
		}
	}
	if len(data) != 1 || data[0] != "site.telemetry_1m" {
		t.Fatalf("upstream data topics %v: only the reduced stream should be there", data)
	}

	alerts := d.records("alerts")
	if len(alerts) != 2 || !strings.Contains(string(alerts[0].Value), `"state":"raised"`) || !strings.Contains(string(alerts[0].Value), `"temperature":95`) ||
		!strings.Contains(string(alerts[1].Value), `"state":"cleared"`) {
		t.Fatalf("alerts %+v", alerts)
	}
	if v := d.metric(`ferry_stream_records_out_total{pipeline="boiler-minute"}`); v != 2 {
		t.Fatalf("ferry_stream_records_out_total = %v", v)
	}
	if v := d.metric(`ferry_stream_running{pipeline="overheat"}`); v != 1 {
		t.Fatalf("ferry_stream_running = %v", v)
	}
}

// metadataTopics lists a cluster's topics.
func metadataTopics(t *testing.T, ctx context.Context, cl *kgo.Client) []string {
	t.Helper()
	resp, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tp := range resp.Topics {
		if tp.Topic != nil {
			names = append(names, *tp.Topic)
		}
	}
	return names
}
