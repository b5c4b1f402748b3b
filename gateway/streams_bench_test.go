package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

// BenchmarkUpstreamDownsampling: what the Kafka bridge sends upstream for
// 1,000 devices at 1 Hz over 10 minutes, raw (the telemetry topic) and
// through the boiler-minute pipeline (telemetry_1m), each into its own
// kfake cluster; bytes on the wire as the bridge counts them (after
// compression). The records go into the log as MQTT ingest stores them.
func BenchmarkUpstreamDownsampling(b *testing.B) {
	const devices, seconds = 1000, 600
	for _, tc := range []struct{ name, topic string }{{"raw", "telemetry"}, {"downsampled", "telemetry_1m"}} {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				up, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
				if err != nil {
					b.Fatal(err)
				}
				dir := b.TempDir()
				file := filepath.Join(dir, "ferry.yaml")
				yaml := fmt.Sprintf(baseConfig, filepath.Join(dir, "data")) + boilerMinute + fmt.Sprintf(`
bridges:
  kafka:
    brokers: [%q]
    topics: {%s: up.%s}
    backoff: 100ms
`, up.ListenAddrs()[0], tc.topic, tc.topic)
				if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
					b.Fatal(err)
				}
				cfg, err := LoadConfig(file, nil)
				if err != nil {
					b.Fatal(err)
				}
				d, err := Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
				if err != nil {
					b.Fatal(err)
				}
				top, err := d.log.Topic("telemetry")
				if err != nil {
					b.Fatal(err)
				}
				base := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC).UnixMilli()
				var raw int64
				recs := make([]commitlog.Record, 0, devices)
				for s := range seconds + 15 { // 15 s more: the last minute closes
					recs = recs[:0]
					for dev := range devices {
						ts := base + int64(s)*1000 + int64(dev)
						name := fmt.Sprintf("boiler-%04d", dev)
						r := commitlog.Record{Key: []byte(name), Timestamp: ts,
							Value:   fmt.Appendf(nil, `{"ts":%d,"values":{"temperature":%d.%d,"pressure":%d.%d}}`, ts, 40+dev%40, s%10, 1+dev%3, s%7),
							Headers: []commitlog.Header{{Key: "device", Value: []byte(name)}, {Key: "device_type", Value: []byte("boiler")}}}
						raw += int64(len(r.Value))
						recs = append(recs, r)
					}
					if _, err := top.Append(context.Background(), recs).Wait(context.Background()); err != nil {
						b.Fatal(err)
					}
				}
				want := int64((seconds + 15) * devices)
				if tc.topic == "telemetry_1m" {
					want = int64(seconds / 60 * devices) // ten closed minutes
				}
				deadline := time.Now().Add(10 * time.Minute)
				for {
					st := d.bridges[0].Status()
					if st.RecordsSent >= want && st.Lag == 0 {
						b.ReportMetric(float64(st.WireBytes), "wire_bytes")
						b.ReportMetric(float64(st.RecordsSent), "records")
						b.ReportMetric(float64(raw), "raw_value_bytes")
						break
					}
					if time.Now().After(deadline) {
						b.Fatalf("bridge: %+v", st)
					}
					time.Sleep(50 * time.Millisecond)
				}
				if err := d.Close(); err != nil {
					b.Fatal(err)
				}
				up.Close()
			}
		})
	}
}
