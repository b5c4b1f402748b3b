package kafka

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/ferry-iot/ferry/bridge"
	"github.com/ferry-iot/ferry/broker/testkit"
)

// produceLog records the record batches of every Produce request a
// cluster receives (a kfake control that observes and lets the cluster
// handle the request).
type produceLog struct {
	mu      sync.Mutex
	batches []producedBatch
}

type producedBatch struct {
	topic            string   // "" in Produce v13+, which names topics by id
	topicID          [16]byte // v13+
	kmsg.RecordBatch          // header only (Records dropped)
}

func observeProduce(c *kfake.Cluster) *produceLog {
	pl := &produceLog{}
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		pr := req.(*kmsg.ProduceRequest)
		pl.mu.Lock()
		defer pl.mu.Unlock()
		for _, rt := range pr.Topics {
			for _, rp := range rt.Partitions {
				var rb kmsg.RecordBatch
				if rb.ReadFrom(rp.Records) == nil {
					rb.Records = nil
					pl.batches = append(pl.batches, producedBatch{rt.Topic, rt.TopicID, rb})
				}
			}
		}
		return nil, nil, false // not handled: observed only
	})
	return pl
}

// each calls fn for the batches to topic (every batch when topic is
// "") and returns their number.
func (pl *produceLog) each(t *testing.T, c *kfake.Cluster, topic string, fn func(rb kmsg.RecordBatch)) int {
	t.Helper()
	var id [16]byte
	if topic != "" {
		adm := kadm.NewClient(mustClient(t, c.ListenAddrs()))
		defer adm.Close()
		td, err := adm.ListTopics(context.Background(), topic)
		if err != nil || td[topic].Err != nil {
			t.Fatalf("topic %s: %v %v", topic, err, td[topic].Err)
		}
		id = td[topic].ID
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	n := 0
	for _, b := range pl.batches {
		if topic == "" || b.topic == topic || (b.topic == "" && b.topicID == id) {
			fn(b.RecordBatch)
			n++
		}
	}
	return n
}

// noTransactions is a cluster's API table without idempotent or
// transactional producing (Kafka before 0.11, or a Kafka-compatible
// service without them).
func noTransactions() *kversion.Versions {
	v := kversion.Stable()
	for _, k := range []kmsg.Key{kmsg.InitProducerID, kmsg.AddPartitionsToTxn, kmsg.AddOffsetsToTxn, kmsg.EndTxn,
		kmsg.WriteTxnMarkers, kmsg.TxnOffsetCommit, kmsg.DescribeTransactions, kmsg.ListTransactions} {
		v.SetMaxKeyVersion(int16(k), -1)
	}
	v.SetMaxKeyVersion(int16(kmsg.Produce), 11) // before KIP-890's implicit transactions
	return v
}

// TestUpstreamWithoutTransactions: at-least-once against an upstream
// without InitProducerId detects it on connect, logs it once however
// often it reconnects, and produces without idempotence (no producer id
// in any batch); every record arrives. Exactly-once against it is a
// configuration error stated in Status.
func TestUpstreamWithoutTransactions(t *testing.T) {
	c := cluster(t, kfake.MaxVersions(noTransactions()))
	pl := observeProduce(c)
	e := newEdge(t, "")
	defer e.close()
	e.produce("telemetry", 0, 4000, 50)
	var logs syncBuf
	l := newLink()
	tg := targetWith(t, Config{Brokers: c.ListenAddrs(), Delivery: AtLeastOnce, Opts: []kgo.Opt{kgo.Dialer(l.dial)},
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	m := bridge.NewMetrics(prometheus.NewRegistry())
	en := engineFor(t, e, tg, bridge.Config{MaxBatchBytes: 64 << 10, Metrics: m})
	en.Start()
	testkit.Eventually(t, 30*time.Second, func() bool { return en.Status().RecordsSent > 0 }, "progress")
	l.cut() // a second session: the upstream is probed again
	testkit.Eventually(t, 30*time.Second, func() bool { return en.Status().Reconnects > 0 }, "the cut noticed")
	l.restore()
	e.produce("telemetry", 4000, 1000, 50)
	waitLag(t, en, 30*time.Second)
	st := en.Status()
	if err := en.Close(); err != nil {
		t.Fatal(err)
	}
	u := readUpstream(t, c.ListenAddrs(), "site1.telemetry", 5000, 20*time.Second)
	dups := u.check(t, e, "telemetry", true)
	if int64(dups) > st.RecordsResent {
		t.Fatalf("%d duplicates upstream, %d records resent", dups, st.RecordsResent)
	}
	if n := counter(m.Connects.WithLabelValues("kafka")); n < 2 {
		t.Fatalf("%v sessions, want 2+", n)
	}
	if n := strings.Count(logs.String(), "does not support idempotent producing"); n != 1 {
		t.Fatalf("%d log lines about the missing idempotence over %v sessions, want 1:\n%s", n, counter(m.Connects.WithLabelValues("kafka")), logs.String())
	}
	n := pl.each(t, c, "", func(rb kmsg.RecordBatch) {
		if rb.ProducerID != -1 || rb.Attributes&0x10 != 0 {
			t.Fatalf("a batch with producer id %d, attributes %#x against an upstream without InitProducerId", rb.ProducerID, rb.Attributes)
		}
	})
	if n == 0 {
		t.Fatal("no produce requests observed")
	}
	t.Logf("%d batches, none idempotent; %d duplicates, %d resent", n, dups, st.RecordsResent)

	t.Run("exactly_once", func(t *testing.T) {
		st, m := failingStatus(t, target(t, c.ListenAddrs(), ExactlyOnce))
		if !strings.Contains(st.LastError, "does not support transactions") || !strings.Contains(st.LastError, "at_least_once") ||
			failures(m, "misconfigured") < 3 {
			t.Fatalf("status %+v, misconfigured failures %v", st, failures(m, "misconfigured"))
		}
	})
}

// TestZstdOnTheWire: without a compression setting every batch the
// upstream receives is zstd; "none" sends them uncompressed (the
// observation can tell).
func TestZstdOnTheWire(t *testing.T) {
	for _, tc := range []struct {
		compression string
		codec       int16 // RecordBatch attributes & 7
	}{{"", 4}, {"none", 0}} {
		t.Run("compression="+tc.compression, func(t *testing.T) {
			c := cluster(t)
			pl := observeProduce(c)
			e := newEdge(t, "")
			defer e.close()
			e.produce("telemetry", 0, 2000, 20)
			tg := targetWith(t, Config{Brokers: c.ListenAddrs(), Compression: tc.compression})
			en := engineFor(t, e, tg, bridge.Config{MaxBatchBytes: 64 << 10})
			en.Start()
			waitLag(t, en, 30*time.Second)
			if err := en.Close(); err != nil {
				t.Fatal(err)
			}
			// Only the records' batches: kgo sends a batch uncompressed
			// when compressing does not make it smaller (the tiny
			// checkpoint records).
			n := pl.each(t, c, "site1.telemetry", func(rb kmsg.RecordBatch) {
				if got := rb.Attributes & 0x07; got != tc.codec {
					t.Fatalf("a batch with codec %d, want %d", got, tc.codec)
				}
			})
			if n == 0 {
				t.Fatal("no produce requests observed")
			}
		})
	}
}

// TestOneClientPerConnect: against an upstream with Kafka's default
// message.max.bytes every Connect builds one kgo client (the default
// producer shape is what the probe asks for); an upstream taking less
// costs a second client on the first Connect only, since the target keeps
// what the probe found for the next one.
func TestOneClientPerConnect(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  []kfake.Opt
		first int64 // clients the first Connect builds
	}{
		{"default message.max.bytes", nil, 1},
		{"message.max.bytes 16384", []kfake.Opt{kfake.BrokerConfigs(map[string]string{"message.max.bytes": "16384"})}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cluster(t, tc.opts...)
			tg := target(t, c.ListenAddrs(), ExactlyOnce)
			for i, want := range []int64{tc.first, tc.first + 1, tc.first + 2} {
				cn, err := tg.Connect(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if err := cn.Close(); err != nil {
					t.Fatal(err)
				}
				if n := tg.clients.Load(); n != want {
					t.Fatalf("after connect %d: %d clients built, want %d", i+1, n, want)
				}
			}
		})
	}
}
