package commitlog

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	badgeropts "github.com/dgraph-io/badger/v4/options"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

// Benchmarks on the real filesystem (the test's temp dir). Each appender is
// a producer with a window of benchWindow appends in flight, as an MQTT
// device with a receive window or a Kafka producer pipelines; every append
// is acknowledged only after its commit cycle's fsync (flush=always).
//
// wamp is the bytes this process caused to be written to the block device
// (/proc/self/io write_bytes) divided by the payload bytes (record values).

const benchWindow = 8

// procWriteBytes returns /proc/self/io write_bytes.
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

// telemetryValue is a ThingsBoard-style JSON telemetry record.
func telemetryValue(r *rand.Rand, i int) []byte {
	return fmt.Appendf(nil, `{"ts":%d,"values":{"temperature":%.2f,"humidity":%.1f,"pressure":%.1f,"battery":%d,"rssi":%d}}`,
		1_764_000_000_000+int64(i)*1000, 18+r.Float64()*8, 30+r.Float64()*30, 990+r.Float64()*30, 60+r.IntN(40), -90+r.IntN(40))
}

type benchCase struct {
	name      string
	size      int // payload bytes per record; 0 = JSON telemetry
	appenders int
	codec     Compression
}

func appendCases() []benchCase {
	var cs []benchCase
	for _, size := range []int{100, 1024} {
		for _, n := range []int{1, 8, 64} {
			cs = append(cs, benchCase{name: fmt.Sprintf("size=%d/appenders=%d", size, n), size: size, appenders: n})
		}
	}
	for _, n := range []int{8, 64} {
		cs = append(cs, benchCase{name: fmt.Sprintf("telemetry-zstd/appenders=%d", n), appenders: n, codec: CompressionZstd})
	}
	return cs
}

// appendResults keeps each case's bytes per commit cycle for the raw
// baseline, which runs in the same process.
var appendResults sync.Map // case name → appendResult

type appendResult struct {
	bytesPerCycle float64
	totalBytes    int64
}

// runAppenders appends n records from c.appenders goroutines, each keeping
// up to benchWindow appends in flight, and returns the payload bytes.
func runAppenders(tb testing.TB, p *Partition, c benchCase, n int) int64 {
	var next, payload atomic.Int64
	var wg sync.WaitGroup
	ctx := context.Background()
	fixed := bytes.Repeat([]byte("x"), c.size)
	for a := 0; a < c.appenders; a++ {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(a), 1))
			key := []byte("device-" + strconv.Itoa(a))
			ring := make([]*Future, 0, benchWindow)
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					break
				}
				v := fixed
				if c.size == 0 {
					v = telemetryValue(r, int(i))
				}
				payload.Add(int64(len(v)))
				if len(ring) == benchWindow {
					if _, err := ring[0].Wait(ctx); err != nil {
						tb.Error(err)
						return
					}
					ring = append(ring[:0], ring[1:]...)
				}
				ring = append(ring, p.Append(ctx, []Record{{Key: key, Value: v}}))
			}
			for _, f := range ring {
				if _, err := f.Wait(ctx); err != nil {
					tb.Error(err)
				}
			}
		})
	}
	wg.Wait()
	return payload.Load()
}

// BenchmarkAppend measures appends acknowledged after fsync. Beside MB/s
// it reports records/s, wamp, bytes per commit cycle, and vs_raw: its
// throughput over the raw-file baseline (same bytes, same fsync cadence)
// measured right after it in the same run.
func BenchmarkAppend(b *testing.B) {
	for _, c := range appendCases() {
		b.Run(c.name, func(b *testing.B) {
			dir := b.TempDir()
			l, err := Open(dir, WithLogger(quietLogger()), WithMinFreeRatio(0))
			if err != nil {
				b.Fatal(err)
			}
			tp, err := l.CreateTopic("bench", TopicConfig{Compression: c.codec, Retention: -1})
			if err != nil {
				b.Fatal(err)
			}
			p, _ := tp.Partition(0)
			w0, s0 := procWriteBytes(b), l.Stats()
			b.ResetTimer()
			start := time.Now()
			payload := runAppenders(b, p, c, b.N)
			elapsed := time.Since(start)
			b.StopTimer()
			if err := l.Close(); err != nil {
				b.Fatal(err)
			}
			w1 := procWriteBytes(b)
			st := l.Stats()
			written, syncs := st.BytesWritten-s0.BytesWritten, st.Syncs-s0.Syncs
			b.SetBytes(payload / int64(b.N))
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
			b.ReportMetric(float64(w1-w0)/float64(payload), "wamp")
			if syncs > 0 {
				perCycle := float64(written) / float64(syncs)
				b.ReportMetric(perCycle, "B/cycle")
				appendResults.Store(c.name, appendResult{bytesPerCycle: perCycle, totalBytes: written})
				raw := rawAppend(b, filepath.Join(b.TempDir(), "raw"), written, int(perCycle))
				b.ReportMetric(float64(written)/elapsed.Seconds()/raw, "vs_raw")
			}
		})
	}
}

// rawAppend writes total bytes to a plain file, fsyncing after every
// cycle bytes, and returns the bytes per second.
func rawAppend(tb testing.TB, path string, total int64, cycle int) float64 {
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer os.Remove(path)
	defer f.Close()
	buf := bytes.Repeat([]byte{0x5a}, max(cycle, 1))
	start := time.Now()
	for done := int64(0); done < total; done += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			tb.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			tb.Fatal(err)
		}
	}
	return float64(total) / time.Since(start).Seconds()
}

// BenchmarkRawFileAppend is the physical baseline: appends of the same
// size as each BenchmarkAppend case's commit cycles, each followed by an
// fsync, to one plain file. Run it together with BenchmarkAppend (it uses
// the cycle sizes that run measured); alone it assumes one record per
// appender window per cycle.
func BenchmarkRawFileAppend(b *testing.B) {
	for _, c := range appendCases() {
		b.Run(c.name, func(b *testing.B) {
			cycle := float64(c.appenders * benchWindow * (max(c.size, 120) + 20))
			if r, ok := appendResults.Load(c.name); ok {
				cycle = r.(appendResult).bytesPerCycle
			}
			path := filepath.Join(b.TempDir(), "raw")
			f, err := os.Create(path)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			buf := bytes.Repeat([]byte{0x5a}, int(cycle))
			b.SetBytes(int64(len(buf)))
			w0 := procWriteBytes(b)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := f.Write(buf); err != nil {
					b.Fatal(err)
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(procWriteBytes(b)-w0)/float64(b.N*len(buf)), "wamp")
			b.ReportMetric(cycle, "B/cycle")
		})
	}
}

// BenchmarkBadgerAppend stores the same records in badger (small-device
// options, see docs/libraries.md#badger, SyncWrites on), one transaction per
// record from the same concurrent appenders with the same window of
// benchWindow commits in flight each: the alternative a user might pick
// for store-and-forward.
func BenchmarkBadgerAppend(b *testing.B) {
	for _, c := range appendCases() {
		if c.codec != CompressionNone {
			continue
		}
		b.Run(c.name, func(b *testing.B) {
			opts := badger.DefaultOptions(b.TempDir()).
				WithMemTableSize(8 << 20).WithBaseTableSize(8 << 20).
				WithNumMemtables(2).WithNumLevelZeroTables(2).WithNumLevelZeroTablesStall(4).
				WithBaseLevelSize(16 << 20).WithValueLogFileSize(64 << 20).
				WithValueThreshold(1 << 10).
				WithCompression(badgeropts.None).WithBlockCacheSize(0).WithIndexCacheSize(0).
				WithNumCompactors(2).WithNumGoroutines(2).WithMetricsEnabled(false).
				WithSyncWrites(true).WithLogger(nil)
			db, err := badger.Open(opts)
			if err != nil {
				b.Fatal(err)
			}
			payloadBuf := bytes.Repeat([]byte("x"), c.size)
			var next atomic.Int64
			var wg sync.WaitGroup
			w0 := procWriteBytes(b)
			b.SetBytes(int64(c.size))
			b.ResetTimer()
			start := time.Now()
			for a := 0; a < c.appenders; a++ {
				// Like the log's appenders, each keeps benchWindow
				// commits in flight (CommitWith), so badger's write
				// pipeline can batch them into one sync as the log's
				// commit cycle does.
				wg.Go(func() {
					window := make(chan struct{}, benchWindow)
					var inFlight sync.WaitGroup
					defer inFlight.Wait()
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						key := binary.BigEndian.AppendUint64([]byte("telemetry/"), uint64(i))
						txn := db.NewTransaction(true)
						if err := txn.Set(key, payloadBuf); err != nil {
							txn.Discard()
							b.Error(err)
							return
						}
						window <- struct{}{}
						inFlight.Add(1)
						txn.CommitWith(func(err error) {
							if err != nil {
								b.Error(err)
							}
							<-window
							inFlight.Done()
						})
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if err := db.Close(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
			b.ReportMetric(float64(procWriteBytes(b)-w0)/float64(b.N*c.size), "wamp")
		})
	}
}

// recoveryFixture is a partition holding about 1 GiB, built once per
// segment size and reused by the recovery benchmarks.
var recoveryFixtures sync.Map // segment bytes → dir

// recoveryBytes is the partition size: 1 GiB less 2 MiB, so that with
// 1 GiB segments everything is in the active segment (the worst case for
// an unclean open) and with 128 MiB segments the active one is nearly full.
const recoveryBytes = 1<<30 - 2<<20

func recoveryFixture(b *testing.B, segBytes int64) string {
	if d, ok := recoveryFixtures.Load(segBytes); ok {
		return d.(string)
	}
	dir, err := os.MkdirTemp("", "ferry-recovery-")
	if err != nil {
		b.Fatal(err)
	}
	l, err := Open(dir, WithLogger(quietLogger()), WithMinFreeRatio(0))
	if err != nil {
		b.Fatal(err)
	}
	tp, err := l.CreateTopic("t", TopicConfig{Flush: FlushNever, SegmentBytes: segBytes, Retention: -1})
	if err != nil {
		b.Fatal(err)
	}
	p, _ := tp.Partition(0)
	val := bytes.Repeat([]byte("r"), 1024)
	recs := make([]Record, 256)
	for i := range recs {
		recs[i] = Record{Key: []byte("k"), Value: val}
	}
	ctx := context.Background()
	const perAppend = 256 * (1024 + 16) // payload plus record framing, about
	for {
		n := (recoveryBytes - p.Size()) / perAppend
		if n <= 0 {
			break
		}
		futs := make([]*Future, 0, 64)
		for i := int64(0); i < min(n, 64); i++ {
			futs = append(futs, p.Append(ctx, recs))
		}
		for _, f := range futs {
			if _, err := f.Wait(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	recoveryFixtures.Store(segBytes, dir)
	return dir
}

// dropPageCache writes back and drops the page cache.
func dropPageCache(b *testing.B) {
	if err := exec.Command("sync").Run(); err != nil {
		b.Skipf("sync: %v", err)
	}
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		b.Skipf("cannot drop the page cache (needs root): %v", err)
	}
}

// markUnclean rewrites every state.json as a crash leaves it (clean=false).
func markUnclean(b *testing.B, dir string) {
	err := filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.Name() != stateFile {
			return err
		}
		st, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(path, bytes.Replace(st, []byte(`"clean":true`), []byte(`"clean":false`), 1), 0o644)
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRecovery opens a partition holding 1 GiB after a clean and after
// an unclean shutdown, with the default segment size and with a single
// 1 GiB segment (the worst case: all of it unsynced).
//
// cache=cold drops the page cache before each open (needs root), so the
// scan reads from the device, as after a real power cut.
func BenchmarkRecovery(b *testing.B) {
	for _, seg := range []int64{DefaultSegmentBytes, MaxSegmentBytes} {
		for _, c := range []struct {
			clean, cold bool
		}{{true, false}, {true, true}, {false, false}, {false, true}} {
			clean := c.clean
			cache := map[bool]string{true: "cold", false: "warm"}[c.cold]
			name := fmt.Sprintf("segment=%dMiB/clean=%v/cache=%s", seg>>20, clean, cache)
			b.Run(name, func(b *testing.B) {
				b.StopTimer()
				dir := recoveryFixture(b, seg)
				var scanned int64
				for i := 0; i < b.N; i++ {
					if !clean {
						markUnclean(b, dir)
					}
					if c.cold {
						dropPageCache(b)
					}
					b.StartTimer()
					l, err := Open(dir, WithLogger(quietLogger()), WithMinFreeRatio(0))
					b.StopTimer()
					if err != nil {
						b.Fatal(err)
					}
					for _, r := range l.Recovery() {
						scanned += r.ScannedBytes
						if r.Clean != clean {
							b.Fatalf("report says clean=%v", r.Clean)
						}
					}
					tp, _ := l.Topic("t")
					p, _ := tp.Partition(0)
					if p.Size() < recoveryBytes-(1<<20) {
						b.Fatalf("partition holds %d bytes", p.Size())
					}
					l.Close()
				}
				b.ReportMetric(float64(scanned)/float64(b.N)/(1<<20), "MiB_scanned/op")
			})
		}
	}
}

// BenchmarkAppendSlowFsync emulates an SD card's slow fsync (5 ms added to
// each one, on the real filesystem) to show what pacing does there: the
// same appenders, with just-in-time cycle cutting on and off.
func BenchmarkAppendSlowFsync(b *testing.B) {
	for _, pacing := range []bool{true, false} {
		b.Run(fmt.Sprintf("size=100/appenders=64/pacing=%v", pacing), func(b *testing.B) {
			fs := &slowSyncFS{FS: vfs.OS, delay: 5 * time.Millisecond}
			l, err := Open(b.TempDir(), WithFS(fs), WithLogger(quietLogger()), WithMinFreeRatio(0), WithPacing(pacing))
			if err != nil {
				b.Fatal(err)
			}
			tp, _ := l.CreateTopic("bench", TopicConfig{Retention: -1})
			p, _ := tp.Partition(0)
			s0 := l.Stats()
			b.ResetTimer()
			start := time.Now()
			payload := runAppenders(b, p, benchCase{size: 100, appenders: 64}, b.N)
			elapsed := time.Since(start)
			b.StopTimer()
			st := l.Stats()
			l.Close()
			b.SetBytes(payload / int64(b.N))
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
			b.ReportMetric(float64(st.Syncs-s0.Syncs)*1000/float64(b.N), "fsyncs/1k_records")
		})
	}
}
