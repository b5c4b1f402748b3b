package kafka

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferry-iot/ferry/bridge"
	"github.com/ferry-iot/ferry/broker/commitlog"
)

// BenchmarkDrain drains a backlog of telemetry (about 165-byte JSON
// records from 1,000 devices over 3 edge partitions) to a fresh kfake
// cluster over loopback, with the engine (exactly-once, zstd) and, in the
// same run, with a plain franz-go producer (idempotent, zstd, kgo's
// defaults) reading the same log and writing to another fresh cluster,
// twice: the same upstream records the engine writes (each with the four
// provenance headers ferry.node/topic/partition/offset, which make a
// 165-byte record about 40 % larger before compression), and the bare
// edge records. The backlog is FERRY_BENCH_DRAIN_MB MiB of record payload
// (key, value, headers as stored; default 1024, the 1 GiB); use
// -benchtime=1x. Metrics: MB/s (of the stored payload) and records/s of
// each, ratio = engine ÷ plain with the same upstream records (goal ≥
// 0.5), ratio_bare = engine ÷ plain with the bare records, and wire bytes
// per record (everything written to the upstream's sockets: produce
// requests after compression, transaction and checkpoint traffic).
func BenchmarkDrain(b *testing.B) {
	mb := 1024
	if s := os.Getenv("FERRY_BENCH_DRAIN_MB"); s != "" {
		var err error
		if mb, err = strconv.Atoi(s); err != nil || mb <= 0 {
			b.Fatalf("FERRY_BENCH_DRAIN_MB=%q", s)
		}
	}
	e := newEdge(b, "")
	defer e.close()
	fillStart := time.Now()
	recs, payload := fillTelemetry(b, e.log, int64(mb)<<20)
	b.Logf("backlog: %d records, %.1f MiB payload, %.1f MiB on disk, filled in %v",
		recs, float64(payload)/(1<<20), float64(logSize(e.log))/(1<<20), time.Since(fillStart).Round(time.Millisecond))

	var engineTime, plainTime, bareTime, engineCPU, plainCPU time.Duration
	var wire, plainWire, bareWire int64
	b.ResetTimer()
	for i := range b.N {
		cpu := cpuTime()
		d, w := drainEngine(b, e, fmt.Sprintf("bench%d", i))
		engineTime += d
		wire += w
		engineCPU += cpuTime() - cpu
		cpu = cpuTime()
		d, w = drainPlain(b, e, true)
		plainTime += d
		plainWire += w
		plainCPU += cpuTime() - cpu
		d, w = drainPlain(b, e, false)
		bareTime += d
		bareWire += w
	}
	b.StopTimer()
	n := float64(b.N)
	engRate, plainRate := float64(payload)*n/engineTime.Seconds(), float64(payload)*n/plainTime.Seconds()
	b.ReportMetric(engRate/1e6, "engine_MB/s")
	b.ReportMetric(plainRate/1e6, "plain_MB/s")
	b.ReportMetric(float64(recs)*n/engineTime.Seconds(), "engine_rec/s")
	b.ReportMetric(float64(recs)*n/plainTime.Seconds(), "plain_rec/s")
	bareRate := float64(payload) * n / bareTime.Seconds()
	b.ReportMetric(bareRate/1e6, "bare_MB/s")
	b.ReportMetric(engRate/plainRate, "ratio")
	b.ReportMetric(engRate/bareRate, "ratio_bare")
	b.ReportMetric(float64(wire)/n/float64(recs), "wire_B/rec")
	b.ReportMetric(float64(plainWire)/n/float64(recs), "plain_wire_B/rec")
	b.ReportMetric(float64(bareWire)/n/float64(recs), "bare_wire_B/rec")
	// CPU of this process (engine or producer, the log, kfake) per GiB of
	// payload: on 2 cores the drain is CPU-bound.
	gib := float64(payload) * n / (1 << 30)
	b.ReportMetric(engineCPU.Seconds()/gib, "engine_cpu_s/GiB")
	b.ReportMetric(plainCPU.Seconds()/gib, "plain_cpu_s/GiB")
}

// cpuTime is the user and system CPU time this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchValue is a telemetry reading of about 140 bytes.
func benchValue(r *rand.Rand, seq int) []byte {
	return fmt.Appendf(nil, `{"ts":%d,"values":{"temperature":%.2f,"humidity":%.1f,"pressure":%.2f,"battery":%.2f,"rssi":%d,"seq":%d,"status":"ok"}}`,
		1_700_000_000_000+int64(seq)*10, 15+r.Float64()*15, 30+r.Float64()*40, 990+r.Float64()*40, 3.3+r.Float64()*0.9, -40-r.IntN(60), seq)
}

// fillTelemetry appends telemetry until the payload reaches target bytes
// and returns the records and payload bytes written.
func fillTelemetry(b *testing.B, lg *commitlog.Log, target int64) (records, payload int64) {
	tp, err := lg.CreateTopic("telemetry", commitlog.TopicConfig{Partitions: 3, Compression: commitlog.CompressionZstd,
		Flush: commitlog.FlushNever, Retention: -1})
	if err != nil {
		b.Fatal(err)
	}
	const devices, per, inflight = 1000, 1000, 8
	r := rand.New(rand.NewPCG(1, 2))
	var fs []*commitlog.Future
	for seq := 0; payload < target; {
		recs := make([]commitlog.Record, 0, per)
		for range per {
			dev := []byte("dev-" + strconv.Itoa(seq%devices))
			rec := commitlog.Record{Key: dev, Value: benchValue(r, seq), Timestamp: 1_700_000_000_000 + int64(seq)*10,
				Headers: []commitlog.Header{{Key: "device", Value: dev}}}
			payload += int64(recordPayload(&rec))
			recs = append(recs, rec)
			seq++
		}
		records += per
		fs = append(fs, tp.Append(context.Background(), recs))
		if len(fs) == inflight {
			if _, err := fs[0].Wait(context.Background()); err != nil {
				b.Fatal(err)
			}
			fs = fs[1:]
		}
	}
	for _, f := range fs {
		if _, err := f.Wait(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	return records, payload
}

func recordPayload(r *commitlog.Record) int {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

func logSize(lg *commitlog.Log) int64 {
	var n int64
	for _, t := range lg.Topics() {
		for _, p := range t.Partitions() {
			n += p.Size()
		}
	}
	return n
}

func benchCluster(b *testing.B) *kfake.Cluster {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3))
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// drainEngine replicates the whole edge topic with a new engine (its own
// checkpoints) to a fresh cluster and returns the time to zero lag and the
// wire bytes.
func drainEngine(b *testing.B, e *edge, name string) (time.Duration, int64) {
	c := benchCluster(b)
	defer c.Close()
	tg, err := New(Config{Brokers: c.ListenAddrs(), Topics: map[string]string{"telemetry": "site1.telemetry"}, NodeID: "gw-" + name})
	if err != nil {
		b.Fatal(err)
	}
	en, err := bridge.New(bridge.Config{Name: name, Topics: []string{"telemetry"}, Logger: quiet()}, e.log, e.st, tg)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	en.Start()
	for {
		if st := en.Status(); st.Lag == 0 && len(st.Partitions) > 0 {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	d := time.Since(start)
	if err := en.Close(); err != nil {
		b.Fatal(err)
	}
	return d, tg.WireBytes()
}

// wireCounter counts the bytes a kgo client writes.
type wireCounter struct{ n atomic.Int64 }

func (w *wireCounter) OnBrokerWrite(_ kgo.BrokerMetadata, _ int16, n int, _, _ time.Duration, _ error) {
	w.n.Add(int64(n))
}

// drainPlain reads the edge topic and produces every record with a plain
// kgo producer to a fresh cluster — with provenance, carrying the same
// four provenance headers the engine adds — and returns the time until the
// last record was acknowledged and the wire bytes.
func drainPlain(b *testing.B, e *edge, provenance bool) (time.Duration, int64) {
	c := benchCluster(b)
	defer c.Close()
	var wc wireCounter
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ProducerBatchCompression(kgo.ZstdCompression()),
		kgo.AllowAutoTopicCreation(), kgo.WithHooks(&wc))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	tp, err := e.log.Topic("telemetry")
	if err != nil {
		b.Fatal(err)
	}
	var (
		mu       sync.Mutex
		firstErr error
	)
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			firstErr = err
			mu.Unlock()
		}
	}
	start := time.Now()
	ctx := context.Background()
	node, topic := []byte("gw-plain"), []byte("telemetry")
	for _, p := range tp.Partitions() {
		partition := strconv.AppendInt(nil, int64(p.ID()), 10)
		for off := p.StartOffset(); off < p.HighWatermark(); {
			recs, next, _, err := p.ReadRecords(off, 1<<20)
			if err != nil {
				b.Fatal(err)
			}
			for i := range recs {
				lr := &recs[i]
				r := &kgo.Record{Topic: "site1.telemetry", Key: lr.Key, Value: lr.Value, Timestamp: time.UnixMilli(lr.Timestamp)}
				r.Headers = make([]kgo.RecordHeader, 0, len(lr.Headers)+4)
				for _, h := range lr.Headers {
					r.Headers = append(r.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
				}
				if provenance {
					r.Headers = append(r.Headers,
						kgo.RecordHeader{Key: "ferry.node", Value: node},
						kgo.RecordHeader{Key: "ferry.topic", Value: topic},
						kgo.RecordHeader{Key: "ferry.partition", Value: partition},
						kgo.RecordHeader{Key: "ferry.offset", Value: strconv.AppendInt(nil, lr.Offset, 10)})
				}
				cl.Produce(ctx, r, promise)
			}
			off = next
		}
	}
	if err := cl.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	d := time.Since(start)
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	return d, wc.n.Load()
}
