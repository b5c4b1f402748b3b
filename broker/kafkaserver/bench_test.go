package kafkaserver

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

// Benchmarks of the listener against the log it serves (issue 4), each
// compared in the same run with the in-process path it wraps.
//
// Everything runs on the real filesystem: b.TempDir() is under $TMPDIR or
// /tmp, which on the benchmark machine is the ext4 root disk, not tmpfs
// (check with `df -T /tmp`; broker/commitlog's benchmarks use the same place).
// Produce waits for fsync (flush=always), so the disk's fsync time sets
// its pace. Consume reads data just written, which the page cache holds
// (128 MiB per topic on a machine with 24 GiB): it measures the listener
// and the client, not the disk, as a consumer keeping up with its
// producers does.
//
// The franz-go client, the listener and the log share the machine's cores.

const (
	consumeBytes    = 128 << 20 // record payload per filled topic
	consumeRecord   = 1 << 10   // payload bytes per record
	consumeBatch    = 16 << 10  // the filled topic's batch size: what a producer sends (Java's batch.size)
	fetchPartBytes  = 8 << 20   // per-partition fetch size, for the consumer and the in-process reader alike
	fetchMaxBytes   = 64 << 20  // per-request fetch size of the consumer
	produceWindow   = 8         // appends in flight per in-process appender, as in broker/commitlog's BenchmarkAppend
	produceWorkers  = 8         // in-process appenders
	baselineRecords = 100_000   // most records appended for a kgo case's in-process baseline
)

// benchLog opens a log in a fresh temporary directory, closed at cleanup.
func benchLog(tb testing.TB) *commitlog.Log {
	tb.Helper()
	lg, err := commitlog.Open(filepath.Join(tb.TempDir(), "log"), commitlog.WithLogger(quiet()), commitlog.WithMinFreeRatio(0))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := lg.Close(); err != nil {
			tb.Error(err)
		}
	})
	return lg
}

// benchServer starts a listener over lg, closed at cleanup (before the
// log). The benchmarks' clients are direct consumers and producers, which
// send no group API, so no group coordinator is configured; producer ids
// are kept in memory only.
func benchServer(tb testing.TB, lg *commitlog.Log, edit func(*Config)) *Server {
	tb.Helper()
	cfg := Config{Listen: "127.0.0.1:0", Logger: quiet()}
	if edit != nil {
		edit(&cfg)
	}
	srv, err := New(cfg, lg, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	srv.Start()
	tb.Cleanup(func() {
		if err := srv.Close(); err != nil {
			tb.Error(err)
		}
	})
	return srv
}

// procWriteBytes returns /proc/self/io write_bytes: what this process
// caused to be written to the block device.
func procWriteBytes(tb testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		tb.Skipf("no /proc/self/io: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	tb.Skip("no write_bytes in /proc/self/io")
	return 0
}

// reportDisk reports wamp (bytes this process caused to be written to the
// block device per payload byte) and B/cycle (segment bytes per fsync
// round, which sets the pace under flush=always).
func reportDisk(b *testing.B, devBytes int64, s0, s1 commitlog.Stats, payload int) {
	b.ReportMetric(float64(devBytes)/float64(payload), "wamp")
	if syncs := s1.Syncs - s0.Syncs; syncs > 0 {
		b.ReportMetric(float64(s1.BytesWritten-s0.BytesWritten)/float64(syncs), "B/cycle")
	}
}

// ---- Consume ----

// fillConsumeTopic writes consumeBytes of 1 KiB records, spread evenly over
// parts partitions, in batches of at most consumeBatch bytes, and waits
// until they are durable. It returns the topic and its record count.
func fillConsumeTopic(b *testing.B, lg *commitlog.Log, parts int) (*commitlog.Topic, int64) {
	b.Helper()
	tp, err := lg.CreateTopic("consume", commitlog.TopicConfig{Partitions: parts, Retention: -1, MaxBatchBytes: consumeBatch})
	if err != nil {
		b.Fatal(err)
	}
	val := make([]byte, consumeRecord)
	for i := range val {
		val[i] = byte('a' + i%26)
	}
	perPart := consumeBytes / consumeRecord / parts
	ctx := context.Background()
	var wg sync.WaitGroup
	for _, p := range tp.Partitions() {
		wg.Go(func() {
			recs := make([]commitlog.Record, 0, 256)
			var ring []*commitlog.Future
			for i := 0; i < perPart; {
				recs = recs[:0]
				for ; len(recs) < cap(recs) && i < perPart; i++ {
					recs = append(recs, commitlog.Record{Key: []byte("k" + strconv.Itoa(i)), Value: val})
				}
				if len(ring) == produceWindow {
					if _, err := ring[0].Wait(ctx); err != nil {
						b.Error(err)
						return
					}
					ring = ring[1:]
				}
				ring = append(ring, p.Append(ctx, recs))
			}
			for _, f := range ring {
				if _, err := f.Wait(ctx); err != nil {
					b.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	var batches, stored int64
	for _, p := range tp.Partitions() {
		stored += p.Size()
		off := p.StartOffset()
		for off < p.HighWatermark() {
			sl, err := p.Read(off, fetchPartBytes)
			if err != nil {
				b.Fatal(err)
			}
			buf, err := sl.AppendTo(nil)
			sl.Release()
			if err != nil {
				b.Fatal(err)
			}
			commitlog.SplitBatches(buf, func(h commitlog.BatchHeader, _ []byte) error {
				batches++
				off = h.NextOffset()
				return nil
			})
		}
	}
	b.Logf("filled %d partition(s): %d records, %d MiB stored, %.1f KiB per batch",
		parts, perPart*parts, stored>>20, float64(stored)/float64(batches)/1024)
	return tp, int64(perPart * parts)
}

// readInProcess reads every partition from its start to its high watermark
// as the listener's Fetch does (Partition.Read of up to fetchPartBytes,
// then the bytes into buf, reused), finding each run's next offset from
// the batch headers. With decode, every batch is also CRC-checked and its
// records decoded, as a consumer must. It returns the records seen.
func readInProcess(tb testing.TB, parts []*commitlog.Partition, buf []byte, decode bool, d *commitlog.Decompressor) (int64, []byte) {
	var n int64
	for _, p := range parts {
		off, hwm := p.StartOffset(), p.HighWatermark()
		for off < hwm {
			sl, err := p.Read(off, fetchPartBytes)
			if err != nil {
				tb.Fatal(err)
			}
			buf, err = sl.AppendTo(buf[:0])
			sl.Release()
			if err != nil {
				tb.Fatal(err)
			}
			err = commitlog.SplitBatches(buf, func(h commitlog.BatchHeader, batch []byte) error {
				if decode {
					_, recs, err := commitlog.DecodeRecords(batch, d)
					if err != nil {
						return err
					}
					for i := range recs {
						if len(recs[i].Value) != consumeRecord {
							return fmt.Errorf("record %d has %d bytes", recs[i].Offset, len(recs[i].Value))
						}
					}
					n += int64(len(recs))
				} else {
					n += int64(h.NumRecords)
				}
				off = h.NextOffset()
				return nil
			})
			if err != nil {
				tb.Fatal(err)
			}
		}
	}
	return n, buf
}

// inProcessRate reads the whole topic in process at least three times and
// for at least 300 ms, and returns records per second.
func inProcessRate(tb testing.TB, tp *commitlog.Topic, decode bool) float64 {
	d := commitlog.NewDecompressor(0)
	var buf []byte
	var n int64
	start := time.Now()
	for pass := 0; pass < 3 || time.Since(start) < 300*time.Millisecond; pass++ {
		var m int64
		m, buf = readInProcess(tb, tp.Partitions(), buf, decode, d)
		n += m
	}
	return float64(n) / time.Since(start).Seconds()
}

// consumeAll reads the topic from the start with a franz-go direct
// consumer until it has seen want records, and returns the payload bytes.
func consumeAll(tb testing.TB, addr, topic string, want int64) int64 {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxBytes(fetchMaxBytes), kgo.FetchMaxPartitionBytes(fetchPartBytes),
		kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		tb.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var n, payload int64
	for n < want {
		fs := cl.PollFetches(ctx)
		for _, fe := range fs.Errors() {
			tb.Fatalf("fetch %s/%d: %v (after %d of %d records)", fe.Topic, fe.Partition, fe.Err, n, want)
		}
		fs.EachRecord(func(r *kgo.Record) {
			n++
			payload += int64(len(r.Value))
		})
	}
	if n != want {
		tb.Fatalf("consumed %d records, want %d", n, want)
	}
	return payload
}

// BenchmarkConsume: a franz-go consumer reading a topic of 1 KiB records
// through the listener, against reading the same segment bytes in
// process. Each iteration reads the whole topic (128 MiB of payload) once.
//
//	inprocess         Partition.Read + Slice.AppendTo into a reused buffer
//	inprocess-decode  the same, and every batch CRC-checked and decoded
//	kgo               franz-go direct consumer, sendfile on (the default)
//	kgo-nosendfile    the same with Config.DisableSendfile
//
// The kgo cases report ratio (their records/s over inprocess's) and
// ratio_decode (over inprocess-decode's), both baselines measured right
// after them in the same run, and sendfile_share, the part of the served
// record bytes that went out with sendfile.
func BenchmarkConsume(b *testing.B) {
	for _, parts := range []int{1, 3} {
		b.Run(fmt.Sprintf("partitions=%d", parts), func(b *testing.B) {
			lg := benchLog(b)
			tp, total := fillConsumeTopic(b, lg, parts)
			payload := total * consumeRecord
			b.Run("inprocess", func(b *testing.B) { benchInProcess(b, tp, total, false) })
			b.Run("inprocess-decode", func(b *testing.B) { benchInProcess(b, tp, total, true) })
			srv := benchServer(b, lg, nil)
			nosf := benchServer(b, lg, func(c *Config) { c.DisableSendfile = true })
			for _, s := range []struct {
				name string
				srv  *Server
			}{{"kgo", srv}, {"kgo-nosendfile", nosf}} {
				b.Run(s.name, func(b *testing.B) {
					m := s.srv.metrics
					fetched0 := testutil.ToFloat64(m.FetchBytes.WithLabelValues("consume"))
					sent0 := testutil.ToFloat64(m.SendfileBytes)
					b.SetBytes(payload)
					b.ResetTimer()
					start := time.Now()
					for range b.N {
						if got := consumeAll(b, s.srv.Addr().String(), "consume", total); got != payload {
							b.Fatalf("consumed %d payload bytes, want %d", got, payload)
						}
					}
					elapsed := time.Since(start)
					b.StopTimer()
					rate := float64(total) * float64(b.N) / elapsed.Seconds()
					b.ReportMetric(rate, "records/s")
					if fetched := testutil.ToFloat64(m.FetchBytes.WithLabelValues("consume")) - fetched0; fetched > 0 {
						b.ReportMetric((testutil.ToFloat64(m.SendfileBytes)-sent0)/fetched, "sendfile_share")
					}
					b.ReportMetric(rate/inProcessRate(b, tp, false), "ratio")
					b.ReportMetric(rate/inProcessRate(b, tp, true), "ratio_decode")
				})
			}
		})
	}
}

func benchInProcess(b *testing.B, tp *commitlog.Topic, total int64, decode bool) {
	d := commitlog.NewDecompressor(0)
	var buf []byte
	b.SetBytes(total * consumeRecord)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		var n int64
		n, buf = readInProcess(b, tp.Partitions(), buf, decode, d)
		if n != total {
			b.Fatalf("read %d records, want %d", n, total)
		}
	}
	b.ReportMetric(float64(total)*float64(b.N)/time.Since(start).Seconds(), "records/s")
}

// ---- Produce ----

// produceValues returns a pool of record values of size bytes: JSON
// telemetry, padded or cut to size, compressible as device data is.
func produceValues(size int) [][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	vals := make([][]byte, 1024)
	for i := range vals {
		var v []byte
		for len(v) < size {
			v = fmt.Appendf(v, `{"ts":%d,"temperature":%.2f,"humidity":%.1f,"battery":%d},`,
				1_764_000_000_000+int64(i)*1000, 18+r.Float64()*8, 30+r.Float64()*30, 60+r.IntN(40))
		}
		vals[i] = v[:size]
	}
	return vals
}

type produceCase struct {
	size  int
	codec string // none or zstd
}

func (c produceCase) topicConfig() commitlog.TopicConfig {
	cfg := commitlog.TopicConfig{Retention: -1} // flush=always, the default
	if c.codec == "zstd" {
		cfg.Compression = commitlog.CompressionZstd // the log compresses the batches it builds
	}
	return cfg
}

func (c produceCase) kgoCodec() kgo.CompressionCodec {
	if c.codec == "zstd" {
		return kgo.ZstdCompression()
	}
	return kgo.NoCompression()
}

// appendInProcess appends n records to p from produceWorkers goroutines,
// each keeping produceWindow appends of one record in flight and waiting
// for every one to be durable, as broker/commitlog's BenchmarkAppend does.
func appendInProcess(tb testing.TB, p *commitlog.Partition, vals [][]byte, n int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	ctx := context.Background()
	for a := range produceWorkers {
		wg.Go(func() {
			key := []byte("device-" + strconv.Itoa(a))
			ring := make([]*commitlog.Future, 0, produceWindow)
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					break
				}
				if len(ring) == produceWindow {
					if _, err := ring[0].Wait(ctx); err != nil {
						tb.Error(err)
						return
					}
					ring = append(ring[:0], ring[1:]...)
				}
				ring = append(ring, p.Append(ctx, []commitlog.Record{{Key: key, Value: vals[i%int64(len(vals))]}}))
			}
			for _, f := range ring {
				if _, err := f.Wait(ctx); err != nil {
					tb.Error(err)
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkProduce: a franz-go producer (acks=-1, idempotent, 1 ms
// linger, one produce request in flight: its defaults but the linger)
// writing through the listener into a topic with flush=always, against
// the log's own append path (log-append: the same records appended in
// process from produceWorkers goroutines with produceWindow appends in
// flight each). b.N is the record count; MB/s counts record payload.
//
// The kgo case reports vs_log, its records/s over log-append's measured
// right after it in the same run with the same records; both report wamp
// and B/cycle (reportDisk). The producer buffers up to 50,000 records and
// sends them in batches of up to 1 MB, so its commit cycles carry far more
// than log-append's 64 records in flight: the ratio mostly shows what
// batching buys under fsync, and B/cycle says how much.
func BenchmarkProduce(b *testing.B) {
	for _, c := range []produceCase{{100, "none"}, {100, "zstd"}, {1024, "none"}, {1024, "zstd"}} {
		vals := produceValues(c.size)
		b.Run(fmt.Sprintf("size=%d/codec=%s", c.size, c.codec), func(b *testing.B) {
			b.Run("log-append", func(b *testing.B) {
				lg := benchLog(b)
				tp, err := lg.CreateTopic("produce", c.topicConfig())
				if err != nil {
					b.Fatal(err)
				}
				p, _ := tp.Partition(0)
				b.SetBytes(int64(c.size))
				w0, s0 := procWriteBytes(b), lg.Stats()
				b.ResetTimer()
				start := time.Now()
				appendInProcess(b, p, vals, b.N)
				elapsed := time.Since(start)
				b.StopTimer()
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
				reportDisk(b, procWriteBytes(b)-w0, s0, lg.Stats(), b.N*c.size)
			})
			b.Run("kgo", func(b *testing.B) {
				lg := benchLog(b)
				tp, err := lg.CreateTopic("produce", commitlog.TopicConfig{Retention: -1})
				if err != nil {
					b.Fatal(err)
				}
				srv := benchServer(b, lg, nil)
				cl, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr().String()), kgo.DefaultProduceTopic("produce"),
					kgo.ProducerLinger(time.Millisecond), kgo.ProducerBatchCompression(c.kgoCodec()))
				if err != nil {
					b.Fatal(err)
				}
				defer cl.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				// Metadata, InitProducerId: before the clock starts.
				if err := cl.ProduceSync(ctx, &kgo.Record{Value: vals[0]}).FirstErr(); err != nil {
					b.Fatal(err)
				}
				var failed atomic.Int64
				var firstErr atomic.Value
				done := func(_ *kgo.Record, err error) {
					if err != nil && failed.Add(1) == 1 {
						firstErr.Store(err)
					}
				}
				b.SetBytes(int64(c.size))
				w0, s0 := procWriteBytes(b), lg.Stats()
				b.ResetTimer()
				start := time.Now()
				for i := range b.N {
					cl.Produce(ctx, &kgo.Record{Key: []byte("device-" + strconv.Itoa(i%produceWorkers)), Value: vals[i%len(vals)]}, done)
				}
				if err := cl.Flush(ctx); err != nil {
					b.Fatal(err)
				}
				elapsed := time.Since(start)
				b.StopTimer()
				if n := failed.Load(); n > 0 {
					b.Fatalf("%d records failed: %v", n, firstErr.Load())
				}
				p, _ := tp.Partition(0)
				if hwm := p.HighWatermark(); hwm != int64(b.N)+1 {
					b.Fatalf("log holds %d records, want %d", hwm, b.N+1)
				}
				rate := float64(b.N) / elapsed.Seconds()
				b.ReportMetric(rate, "records/s")
				reportDisk(b, procWriteBytes(b)-w0, s0, lg.Stats(), b.N*c.size)

				// The log's own path, same records, same run (at most
				// baselineRecords of them: its rate is steady well before).
				bt, err := lg.CreateTopic("baseline", c.topicConfig())
				if err != nil {
					b.Fatal(err)
				}
				bp, _ := bt.Partition(0)
				n := min(b.N, baselineRecords)
				start = time.Now()
				appendInProcess(b, bp, vals, n)
				b.ReportMetric(rate/(float64(n)/time.Since(start).Seconds()), "vs_log")
			})
		})
	}
}
