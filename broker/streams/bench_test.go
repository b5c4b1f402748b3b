package streams

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

// The benchmark input: 1,000 devices at 1 Hz for 200 s, half of them
// boilers, in four partitions as the daemon's telemetry topic would hold
// them (ThingsBoard-shaped values, device headers).
const (
	benchDevices = 1000
	benchSeconds = 200
)

var benchRuns int // makes every benchmark pipeline's name new

var benchLog struct {
	once sync.Once
	dir  string
	n    int
}

func benchInput(b *testing.B) (*commitlog.Log, int) {
	benchLog.once.Do(func() {
		dir, err := osMkdirTemp()
		if err != nil {
			b.Fatal(err)
		}
		l, err := commitlog.Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		top, err := l.CreateTopic("telemetry", commitlog.TopicConfig{Partitions: 4})
		if err != nil {
			b.Fatal(err)
		}
		var recs []commitlog.Record
		for s := range benchSeconds {
			for d := range benchDevices {
				typ := "boiler"
				if d%2 == 1 {
					typ = "meter"
				}
				ts := t0 + int64(s)*1000 + int64(d)
				recs = append(recs, commitlog.Record{Key: fmt.Appendf(nil, "device-%04d", d), Timestamp: ts,
					Value: fmt.Appendf(nil, `{"ts":%d,"values":{"temperature":%d.%d,"pressure":%d,"state":"ok"}}`, ts, 20+d%30, s%10, 1000+s),
					Headers: []commitlog.Header{{Key: "device", Value: fmt.Appendf(nil, "device-%04d", d)},
						{Key: "device_type", Value: []byte(typ)}}})
			}
			if _, err := top.Append(context.Background(), recs).Wait(context.Background()); err != nil {
				b.Fatal(err)
			}
			benchLog.n += len(recs)
			recs = recs[:0]
		}
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
		benchLog.dir = dir
	})
	l, err := commitlog.Open(benchLog.dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	return l, benchLog.n
}

// BenchmarkPipeline compares a filter + one-minute tumbling average
// pipeline (as configured: an expression, then the window) with the log's
// own ReadRecords over the same records; records/s each. Goal: the
// pipeline at least half the read rate.
func BenchmarkPipeline(b *testing.B) {
	b.Run("ReadRecords", func(b *testing.B) {
		l, n := benchInput(b)
		top, _ := l.Topic("telemetry")
		b.ResetTimer()
		start := time.Now()
		for range b.N {
			read := 0
			for _, p := range top.Partitions() {
				for off := p.StartOffset(); off < p.HighWatermark(); {
					recs, next, _, err := p.ReadRecords(off, 256<<10)
					if err != nil {
						b.Fatal(err)
					}
					read += len(recs)
					off = next
				}
			}
			if read != n {
				b.Fatalf("read %d of %d", read, n)
			}
		}
		b.ReportMetric(float64(n*b.N)/time.Since(start).Seconds(), "records/s")
	})
	b.Run("FilterTumblingAvg", func(b *testing.B) {
		l, n := benchInput(b)
		b.ResetTimer()
		var elapsed time.Duration
		for range b.N {
			// A name no earlier run used: a pipeline's changelog would
			// restore its position, and it would read nothing.
			benchRuns++
			top, err := Compile(Config{Name: fmt.Sprintf("bench-%d", benchRuns), From: []string{"telemetry"},
				Where:     `headers.device_type == "boiler"`,
				Window:    &WindowConfig{Tumbling: time.Minute, Grace: 10 * time.Second},
				Aggregate: map[string][]string{"temperature": {"avg", "min", "max", "count"}, "pressure": {"last"}},
				To:        fmt.Sprintf("out-%d", benchRuns)})
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			st := runUntilRead(b, l, top, n)
			elapsed += time.Since(start)
			if st.RecordsOut != benchDevices/2*3 { // three closed minutes per boiler
				b.Fatalf("outputs %d", st.RecordsOut)
			}
		}
		b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "records/s")
	})
}

// runUntilRead runs top until it has read n records and committed.
func runUntilRead(b *testing.B, l *commitlog.Log, top *Topology, n int) Status {
	task := NewTask(l, top, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { task.Run(ctx); close(done) }()
	for task.Status().RecordsIn < int64(n) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	return task.Status()
}

// BenchmarkPipelineMemory is the heap each pipeline adds: 20 pipelines
// (filter + tumbling average) started on the benchmark input, measured
// after a collection; idle (started at the end of their input, no state)
// and holding an open one-minute window for each of 500 boilers.
// eKuiper quotes 400-500 KB per rule; the goal is at most 512 KiB.
func BenchmarkPipelineMemory(b *testing.B) {
	for _, tc := range []struct {
		name   string
		latest bool
	}{{"idle", true}, {"500keys", false}} {
		b.Run(tc.name, func(b *testing.B) {
			l, n := benchInput(b)
			const pipelines = 20
			for range b.N {
				before := heap()
				ctx, cancel := context.WithCancel(context.Background())
				var tasks []*Task
				for j := range pipelines {
					benchRuns++
					name := fmt.Sprintf("mem-%s-%d-%d", tc.name, benchRuns, j)
					top, err := Compile(Config{Name: name, From: []string{"telemetry"},
						Where:     `headers.device_type == "boiler"`,
						Window:    &WindowConfig{Tumbling: time.Minute, Grace: 10 * time.Second},
						Aggregate: map[string][]string{"temperature": {"avg", "min", "max", "count"}, "pressure": {"last"}},
						To:        name + "-out"})
					if err != nil {
						b.Fatal(err)
					}
					t := NewTask(l, top, Options{StartLatest: tc.latest})
					t.Start(ctx)
					tasks = append(tasks, t)
				}
				for _, t := range tasks {
					for !caughtUp(t) || (!tc.latest && t.Status().RecordsIn < int64(n)) {
						time.Sleep(time.Millisecond)
					}
				}
				time.Sleep(50 * time.Millisecond) // commits done
				after := heap()
				b.ReportMetric(float64(after-before)/pipelines, "B/pipeline")
				cancel()
				for _, t := range tasks {
					<-t.Done()
				}
				runtime.KeepAlive(tasks)
			}
		})
	}
}

func heap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

func osMkdirTemp() (string, error) { return os.MkdirTemp("", "ferry-streams-bench-") }
