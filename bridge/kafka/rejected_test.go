package kafka

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/bridge"
	"github.com/ferry-iot/ferry/broker/commitlog"
)

// rejectedEdge is an edge with telemetry and a few records the upstream
// will refuse, appended between ordinary ones.
type rejectedEdge struct {
	*edge
	rejected map[string]bool // provenance "telemetry/partition/offset"
}

// newPoisonEdge appends 3000 telemetry records with the rejected records
// made by bad(i) at the sequence numbers in at.
func newPoisonEdge(t *testing.T, at []int, bad func(i int) commitlog.Record) *rejectedEdge {
	t.Helper()
	pe := &rejectedEdge{edge: newEdge(t, ""), rejected: map[string]bool{}}
	tp, err := pe.log.EnsureTopic("telemetry", commitlog.TopicConfig{Partitions: 3, Compression: commitlog.CompressionZstd})
	if err != nil {
		t.Fatal(err)
	}
	from := 0
	for _, i := range append(append([]int(nil), at...), 3000) {
		if err := appendTelemetry(tp, from, i-from, 50); err != nil {
			t.Fatal(err)
		}
		if i == 3000 {
			break
		}
		r := bad(i)
		if _, err := tp.Append(context.Background(), []commitlog.Record{r}).Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		from = i
	}
	for pos, r := range pe.edgeRecords("telemetry") {
		if bytes.HasPrefix(r.Key, []byte("rejected")) {
			pe.rejected[pos] = true
		}
	}
	if len(pe.rejected) != len(at) {
		t.Fatalf("%d rejected records in the log, want %d", len(pe.rejected), len(at))
	}
	return pe
}

// checkPoison asserts the upstream holds every edge record but the rejected
// ones (once, or at least once), the bridge counted and named them, the
// local rejected topic has their provenance and, exactly once, the
// checkpoint topic records each skip.
func (pe *rejectedEdge) checkPoison(t *testing.T, c *kfake.Cluster, en *bridge.Engine, m *bridge.Metrics, eos bool) {
	t.Helper()
	st := en.Status()
	u := readUpstream(t, c.ListenAddrs(), "site1.telemetry", int(pe.total("telemetry"))-len(pe.rejected), 30*time.Second)
	missing := map[string]bool{}
	for pos := range pe.edgeRecords("telemetry") {
		if u.byPos[pos] == 0 {
			missing[pos] = true
		}
		if u.byPos[pos] > 1 && eos {
			t.Fatalf("%s upstream %d times", pos, u.byPos[pos])
		}
	}
	if fmt.Sprint(missing) != fmt.Sprint(pe.rejected) {
		t.Fatalf("missing upstream: %v, the rejected records: %v", missing, pe.rejected)
	}
	if int(st.RecordsRejected) != len(pe.rejected) || counter(m.Rejected.WithLabelValues("kafka")) != float64(len(pe.rejected)) {
		t.Fatalf("rejected: status %d, metric %v, want %d", st.RecordsRejected, counter(m.Rejected.WithLabelValues("kafka")), len(pe.rejected))
	}
	if lr := st.LastRejected; lr == nil || !pe.rejected[fmt.Sprintf("%s/%d/%d", lr.Topic, lr.Partition, lr.Offset)] || lr.Reason == "" {
		t.Fatalf("last rejected: %+v", st.LastRejected)
	}
	// The local rejected topic.
	rt, err := pe.log.Topic(bridge.DefaultRejectedTopic)
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string]bool{}
	for pos := range pe.edgeRecordsOf(rt) {
		recorded[pos] = true
	}
	if fmt.Sprint(recorded) != fmt.Sprint(pe.rejected) {
		t.Fatalf("rejected topic names %v, want %v", recorded, pe.rejected)
	}
	if !eos {
		return
	}
	// Exactly once: each skip is in the checkpoint topic, committed.
	cp := readUpstream(t, c.ListenAddrs(), "ferry.checkpoints", 1, 20*time.Second)
	skips := map[string]bool{}
	for _, r := range cp.recs {
		if k := string(r.Key); strings.HasSuffix(k, "/rejected") {
			var v rejectedCheckpoint
			if err := json.Unmarshal(r.Value, &v); err != nil || v.Reason == "" {
				t.Fatalf("checkpoint record %s: %q (%v)", k, r.Value, err)
			}
			skips[strings.TrimSuffix(strings.TrimPrefix(k, "gw-test/"), "/rejected")] = true
		}
	}
	if fmt.Sprint(skips) != fmt.Sprint(pe.rejected) {
		t.Fatalf("skips in the checkpoint topic: %v, want %v", skips, pe.rejected)
	}
}

// edgeRecordsOf reads the rejected topic's records as the provenance they
// name.
func (pe *rejectedEdge) edgeRecordsOf(rt *commitlog.Topic) map[string]struct{} {
	out := map[string]struct{}{}
	p := rt.Partitions()[0]
	for pos := int64(0); pos < p.HighWatermark(); {
		recs, next, _, err := p.ReadRecords(pos, 1<<20)
		if err != nil {
			pe.t.Fatal(err)
		}
		for _, r := range recs {
			var v struct {
				Topic     string `json:"topic"`
				Partition int32  `json:"partition"`
				Offset    int64  `json:"offset"`
				Reason    string `json:"reason"`
			}
			if err := json.Unmarshal(r.Value, &v); err != nil || v.Reason == "" {
				pe.t.Fatalf("rejected-topic record %q: %v", r.Value, err)
			}
			out[fmt.Sprintf("%s/%d/%d", v.Topic, v.Partition, v.Offset)] = struct{}{}
		}
		pos = next
	}
	return out
}

// TestPoisonTooLarge: the upstream takes batches of at most 16 KiB
// (message.max.bytes); two records larger than that sit in the backlog.
// The target learns the limit on connect, the engine rejects those two
// before sending, and replication goes on: every other record upstream,
// the skips counted, named in Status, in the local rejected topic and
// (exactly once) in the checkpoint topic, with no reconnect.
func TestPoisonTooLarge(t *testing.T) {
	for _, delivery := range []string{ExactlyOnce, AtLeastOnce} {
		t.Run(delivery, func(t *testing.T) {
			c := cluster(t, kfake.BrokerConfigs(map[string]string{"message.max.bytes": "16384"}))
			pe := newPoisonEdge(t, []int{700, 2100}, func(i int) commitlog.Record {
				v := make([]byte, 40<<10)
				crand.Read(v) // incompressible
				return commitlog.Record{Key: []byte(fmt.Sprintf("rejected-%d", i)), Value: v, Timestamp: 1_700_000_000_000 + int64(i)}
			})
			defer pe.close()
			m := bridge.NewMetrics(prometheus.NewRegistry())
			en := engineFor(t, pe.edge, target(t, c.ListenAddrs(), delivery), bridge.Config{MaxBatchBytes: 64 << 10, Metrics: m})
			en.Start()
			waitLag(t, en, 30*time.Second)
			if err := en.Close(); err != nil {
				t.Fatal(err)
			}
			if st := en.Status(); st.Reconnects != 0 || !strings.Contains(st.LastRejected.Reason, "larger than the upstream takes") {
				t.Fatalf("status %+v, last rejected %+v", st, st.LastRejected)
			}
			pe.checkPoison(t, c, en, m, delivery == ExactlyOnce)
		})
	}
}

// TestPoisonRefused: the upstream refuses, with INVALID_RECORD, every
// produce request holding a record keyed "rejected-…" (as a broker-side
// validation would; kfake answers for the whole request). The target
// cannot tell which record is guilty; the engine isolates the batches
// until the rejected record travels alone, skips it, and every innocent
// record reaches the upstream (exactly once, or at least once with the
// duplicates counted).
func TestPoisonRefused(t *testing.T) {
	for _, delivery := range []string{ExactlyOnce, AtLeastOnce} {
		t.Run(delivery, func(t *testing.T) {
			c := cluster(t, kfake.SeedTopics(1, "site1.telemetry"))
			dec := commitlog.NewDecompressor(1 << 20)
			refused := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "site1.telemetry", Err: kerr.InvalidRecord, Count: -1,
				When: func(req kmsg.Request) bool { return holdsPoison(req.(*kmsg.ProduceRequest), dec) }})
			pe := newPoisonEdge(t, []int{500, 501, 1800}, func(i int) commitlog.Record {
				r := telemetry(i, 50)
				r.Key = []byte(fmt.Sprintf("rejected-%d", i))
				return r
			})
			defer pe.close()
			m := bridge.NewMetrics(prometheus.NewRegistry())
			en := engineFor(t, pe.edge, target(t, c.ListenAddrs(), delivery), bridge.Config{MaxBatchBytes: 64 << 10, Metrics: m})
			en.Start()
			waitLag(t, en, 60*time.Second)
			if err := en.Close(); err != nil {
				t.Fatal(err)
			}
			refused.Remove()
			st := en.Status()
			if st.Reconnects != 0 || refused.Hits() < len(pe.rejected) {
				t.Fatalf("status %+v; refused requests %d", st, refused.Hits())
			}
			pe.checkPoison(t, c, en, m, delivery == ExactlyOnce)
			t.Logf("%d requests refused, %d records resent while isolation", refused.Hits(), st.RecordsResent)
		})
	}
}

// holdsPoison reports whether a produce request carries a record keyed
// "rejected-…" (runs on kfake's goroutine; it only decodes).
func holdsPoison(req *kmsg.ProduceRequest, dec *commitlog.Decompressor) bool {
	for _, rt := range req.Topics {
		for _, rp := range rt.Partitions {
			found := false
			_ = commitlog.SplitBatches(rp.Records, func(_ commitlog.BatchHeader, b []byte) error {
				_, recs, err := commitlog.DecodeRecords(b, dec)
				for _, r := range recs {
					found = found || bytes.HasPrefix(r.Key, []byte("rejected-"))
				}
				return err
			})
			if found {
				return true
			}
		}
	}
	return false
}

// TestRejectedCheckpointFormat: the checkpoint topic's record of a skip
// keeps its key and JSON, byte for byte.
func TestRejectedCheckpointFormat(t *testing.T) {
	c := &conn{t: targetWith(t, Config{Brokers: []string{"127.0.0.1:9092"}, NodeID: "edge-1"})}
	r := bridge.Rejected{TP: bridge.TP{Topic: "telemetry", Partition: 2}, Offset: 17, Timestamp: 1_700_000_000_123, Key: []byte("dev-1"),
		Bytes: 2048, Reason: "MESSAGE_TOO_LARGE"}
	if k, v := c.rejectedKey(r), string(rejectedCheckpointOf(r)); k != "edge-1/telemetry/2/17/rejected" ||
		v != `{"offset":17,"timestamp":1700000000123,"bytes":2048,"reason":"MESSAGE_TOO_LARGE"}` {
		t.Fatalf("checkpoint record of a skip: %s = %s", k, v)
	}
}
