package kafka

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferry-iot/ferry/bridge"
	"github.com/ferry-iot/ferry/broker/commitlog"
)

// TestNormalFlow: a backlog and live records of two edge topics reach
// their upstream topics exactly once, in per-key order, each key in one
// upstream partition, and every upstream record carries its edge record's
// key, value, timestamp and headers, followed by the provenance headers.
func TestNormalFlow(t *testing.T) {
	c := cluster(t)
	e := newEdge(t, "")
	defer e.close()
	e.produce("telemetry", 0, 5000, 20)
	e.produce("attributes", 0, 500, 7)
	tg := targetWith(t, Config{Brokers: c.ListenAddrs(), Topics: map[string]string{"telemetry": "site1.telemetry", "attributes": "site1.attributes"}})
	m := bridge.NewMetrics(prometheus.NewRegistry())
	en := engineFor(t, e, tg, bridge.Config{Topics: []string{"telemetry", "attributes"}, Metrics: m})
	en.Start()
	e.produce("telemetry", 5000, 1000, 20)
	e.produce("attributes", 500, 100, 7)
	waitLag(t, en, 30*time.Second)
	if err := en.Close(); err != nil {
		t.Fatal(err)
	}
	for topic, want := range map[string]int{"telemetry": 6000, "attributes": 600} {
		u := readUpstream(t, c.ListenAddrs(), "site1."+topic, want, 20*time.Second)
		u.check(t, e, topic, false)
		if len(u.recs) != want {
			t.Fatalf("upstream %s holds %d records, want %d", topic, len(u.recs), want)
		}
		checkRecords(t, u, topic, e.edgeRecords(topic))
	}
	st := en.Status()
	if st.RecordsSent != 6600 || st.Lag != 0 || st.RecordsResent != 0 || st.RecordsRejected != 0 {
		t.Fatalf("status: %+v", st)
	}
	if st.WireBytes != tg.WireBytes() || counter(m.Wire.WithLabelValues("kafka")) != float64(tg.WireBytes()) || st.WireBytes <= 0 {
		t.Fatalf("wire bytes: status %d, metric %v, target %d", st.WireBytes, counter(m.Wire.WithLabelValues("kafka")), tg.WireBytes())
	}
	if st.WireBytes >= st.BytesSent {
		t.Fatalf("%d bytes on the wire for %d record bytes: not compressed", st.WireBytes, st.BytesSent)
	}
	t.Logf("wire bytes %d for 6600 records (%d record bytes): %.1f bytes/record", st.WireBytes, st.BytesSent, float64(st.WireBytes)/6600)
}

// checkRecords compares every upstream record with its edge record,
// found by content (every value of these tests is distinct), not by the
// provenance headers under test: those must name the edge record's own
// partition and offset, as the edge log has them.
func checkRecords(t *testing.T, u *upstream, topic string, edgeRecs map[string]commitlog.Record) {
	t.Helper()
	byValue := make(map[string]string, len(edgeRecs)) // value → "topic/partition/offset" of the edge log
	for pos, r := range edgeRecs {
		if other, dup := byValue[string(r.Value)]; dup {
			t.Fatalf("edge records %s and %s have the same value: the check cannot tell them apart", pos, other)
		}
		byValue[string(r.Value)] = pos
	}
	for _, r := range u.recs {
		pos, ok := byValue[string(r.Value)]
		if !ok {
			t.Fatalf("upstream record %q (provenance %s) is no edge record", r.Value, prov(r))
		}
		er := edgeRecs[pos]
		edgeTopic, rest, _ := strings.Cut(pos, "/")
		part, off, _ := strings.Cut(rest, "/")
		if edgeTopic != topic || off != strconv.FormatInt(er.Offset, 10) {
			t.Fatalf("edge record %s: offset %d", pos, er.Offset) // the index itself is wrong
		}
		if !bytes.Equal(r.Key, er.Key) {
			t.Fatalf("%s: key %q upstream, edge %q", pos, r.Key, er.Key)
		}
		if r.Timestamp.UnixMilli() != er.Timestamp {
			t.Fatalf("%s: timestamp %d upstream, edge %d", pos, r.Timestamp.UnixMilli(), er.Timestamp)
		}
		if len(r.Headers) != len(er.Headers)+4 {
			t.Fatalf("%s: %d headers upstream, edge %d + 4 provenance", pos, len(r.Headers), len(er.Headers))
		}
		for i, h := range er.Headers {
			if r.Headers[i].Key != h.Key || !bytes.Equal(r.Headers[i].Value, h.Value) {
				t.Fatalf("%s: header %d is %s=%q upstream, edge %s=%q", pos, i, r.Headers[i].Key, r.Headers[i].Value, h.Key, h.Value)
			}
		}
		want := []kgo.RecordHeader{{Key: "ferry.node", Value: []byte("gw-test")}, {Key: "ferry.topic", Value: []byte(topic)},
			{Key: "ferry.partition", Value: []byte(part)}, {Key: "ferry.offset", Value: []byte(off)}}
		for i, h := range want {
			got := r.Headers[len(er.Headers)+i]
			if got.Key != h.Key || !bytes.Equal(got.Value, h.Value) {
				t.Fatalf("%s: provenance header %d is %s=%q, want %s=%q", pos, i, got.Key, got.Value, h.Key, h.Value)
			}
		}
	}
}

// TestConfigValidate: upstream topic names follow Kafka's rule (up to
// 249 characters, not "." or ".."), and with exactly-once no edge topic
// may map to the checkpoint topic, whose name follows the same rule.
func TestConfigValidate(t *testing.T) {
	long := strings.Repeat("u", 249)
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // substrings of the error, one per problem; none: valid
	}{
		{"valid, 249 characters", Config{Topics: map[string]string{"telemetry": long}}, nil},
		{"bad upstream names", Config{Topics: map[string]string{"a": long + "u", "b": ".", "c": "..", "d": "no space", "e": ""}}, []string{
			`topic "` + long + `u" is not a Kafka topic name (1-249 of [a-zA-Z0-9._-], not . or ..) (the upstream of edge topic a)`,
			`topic "." is not a Kafka topic name`, `topic ".." is not a Kafka topic name`, `topic "no space" is not a Kafka topic name`,
			"topic e maps to an empty upstream name",
		}},
		{"the default checkpoint topic", Config{Topics: map[string]string{"telemetry": DefaultCheckpointTopic}}, []string{
			"topic telemetry maps to the checkpoint topic ferry.checkpoints",
		}},
		{"a configured checkpoint topic", Config{Delivery: ExactlyOnce, CheckpointTopic: "cp", Topics: map[string]string{"telemetry": "cp"}},
			[]string{"topic telemetry maps to the checkpoint topic cp"}},
		{"at least once keeps no checkpoints upstream", Config{Delivery: AtLeastOnce, Topics: map[string]string{"telemetry": DefaultCheckpointTopic}}, nil},
		{"bad checkpoint topic", Config{CheckpointTopic: "..", Topics: map[string]string{"telemetry": "up"}}, []string{
			`topic ".." is not a Kafka topic name (1-249 of [a-zA-Z0-9._-], not . or ..) (the checkpoint topic)`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Brokers, tc.cfg.NodeID = []string{"127.0.0.1:9092"}, "gw"
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatalf("valid, want %q", tc.want)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("%d problems, want %d:\n%v", len(lines), len(tc.want), err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), "bridge/kafka: "+w) {
					t.Errorf("missing %q in:\n%v", w, err)
				}
			}
		})
	}
	if err := ValidTopicName(long); err != nil {
		t.Fatal(err)
	}
}
