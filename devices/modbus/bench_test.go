package modbus

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mb "github.com/simonvetter/modbus"

	"github.com/ferry-iot/ferry/devices/adapter"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
	"github.com/ferry-iot/ferry/firmware-sim/modbussim"
)

// counterSlave answers every read with a register counting its reads: a
// slave as fast as the library's own server gets, so the benchmarks
// measure the master side.
type counterSlave struct{ n atomic.Uint32 }

func (s *counterSlave) HandleCoils(req *mb.CoilsRequest) ([]bool, error) {
	return make([]bool, req.Quantity), nil
}

func (s *counterSlave) HandleDiscreteInputs(req *mb.DiscreteInputsRequest) ([]bool, error) {
	return make([]bool, req.Quantity), nil
}

func (s *counterSlave) HandleHoldingRegisters(req *mb.HoldingRegistersRequest) ([]uint16, error) {
	out := make([]uint16, req.Quantity)
	v := uint16(s.n.Add(1))
	for i := range out {
		out[i] = v + uint16(i)
	}
	return out, nil
}

func (s *counterSlave) HandleInputRegisters(req *mb.InputRegistersRequest) ([]uint16, error) {
	return make([]uint16, req.Quantity), nil
}

func startBenchSlave(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	url := "tcp://" + ln.Addr().String()
	ln.Close()
	srv, err := mb.NewServer(&mb.ServerConfiguration{URL: url, MaxClients: 4, Timeout: time.Minute,
		Logger: log.New(io.Discard, "", 0)}, &counterSlave{})
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Stop() })
	return url
}

// tenPoints: ten int16 values with a scale, one merged request.
func tenPoints() []Point {
	var pts []Point
	for i := range 10 {
		pts = append(pts, Point{Key: fmt.Sprint("v", i), Register: "holding", Address: i, Type: "int16", Scale: 0.1})
	}
	return pts
}

// encodingSink counts polls and encodes each record's value as the log's
// sink does (the append itself is the log's benchmark).
type encodingSink struct {
	n    atomic.Int64
	buf  []byte
	at   atomic.Int64  // when n reaches it, reached is closed
	wake chan struct{} // (so a benchmark waits without polling)
}

func (s *encodingSink) Telemetry(_ string, _ adapter.Info, ts int64, v []tb.KV) error {
	s.buf = tb.AppendRecordValue(s.buf[:0], ts, v)
	if n := s.n.Add(1); n == s.at.Load() {
		close(s.wake)
	}
	return nil
}

// reach returns a channel closed when the sink has taken n records
// (n beyond the current count).
func (s *encodingSink) reach(n int64) <-chan struct{} {
	s.wake = make(chan struct{})
	s.at.Store(n)
	return s.wake
}

func (s *encodingSink) Attributes(string, adapter.Info, int64, []tb.KV) error { return nil }

// BenchmarkModbusTCPPolls: polls a second through the adapter (scheduler,
// merged read, decode, report strategy, record encoding) against a bare
// loop of the same library's ReadRegisters on the same slave, alternated
// in short rounds; the ratio is the median of each round's (this VM's
// speed drifts within a run). Goal: ≥ 0.9×.
func BenchmarkModbusTCPPolls(b *testing.B) {
	url := startBenchSlave(b)
	const polls = 8000
	var bare, adapt, ratios []float64
	for range 11 { // short alternated rounds: each ratio from two runs close in time
		// Bare: the library's client alone.
		c := bareClient(b, mb.ClientConfiguration{URL: url, Timeout: time.Second})
		start := time.Now()
		for range polls {
			if _, err := c.ReadRegisters(0, 10, mb.HOLDING_REGISTER); err != nil {
				b.Fatal(err)
			}
		}
		bare = append(bare, polls/time.Since(start).Seconds())
		c.Close()

		// Through the adapter: a device due continuously.
		m, sink := pollContinuously(b, BusConfig{URL: url, Timeout: time.Second})
		start = time.Now()
		<-sink.reach(sink.n.Load() + polls)
		el := time.Since(start)
		m.Close()
		adapt = append(adapt, polls/el.Seconds())
		ratios = append(ratios, adapt[len(adapt)-1]/bare[len(bare)-1])
	}
	b.ReportMetric(median(bare), "bare_polls/s")
	b.ReportMetric(median(adapt), "adapter_polls/s")
	b.ReportMetric(median(ratios), "ratio")
	b.Logf("ratios %.3f", ratios)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// timedSource records when each Read starts.
type timedSource struct {
	adapter.Source
	mu     sync.Mutex
	starts []time.Time
}

func (s *timedSource) Read(ctx context.Context) (adapter.Reading, error) {
	s.mu.Lock()
	s.starts = append(s.starts, time.Now())
	s.mu.Unlock()
	return s.Source.Read(ctx)
}

// lateness is how late each start was against the schedule the first
// start set (start₀ + k·period), in milliseconds.
func lateness(starts []time.Time, period time.Duration) []float64 {
	var out []float64
	for k := 1; k < len(starts); k++ {
		want := starts[0].Add(time.Duration(k) * period)
		out = append(out, float64(starts[k].Sub(want))/float64(time.Millisecond))
	}
	return out
}

func pct(v []float64, p float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// BenchmarkModbusJitter200: 200 Modbus units at 1 s on one TCP line; how
// late each poll starts against its schedule (p50, p99, max), next to a
// baseline measured in the same run: 200 goroutines on time.Ticker at
// 1 s, the runtime's own timer lateness on this machine. Goal: p99 ≤ 5 ms.
// MODBUS_JITTER_WINDOW sets the run (default 20s).
func BenchmarkModbusJitter200(b *testing.B) {
	window := 20 * time.Second
	if w, err := time.ParseDuration(os.Getenv("MODBUS_JITTER_WINDOW")); err == nil {
		window = w
	}
	const n, period = 200, time.Second
	url := startBenchSlave(b)

	// Baseline: bare tickers.
	var base []float64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(period * time.Duration(i) / n)
			t := time.NewTicker(period)
			defer t.Stop()
			starts := []time.Time{time.Now()}
			for range int(window / period) {
				<-t.C
				starts = append(starts, time.Now())
			}
			mu.Lock()
			base = append(base, lateness(starts, period)...)
			mu.Unlock()
		}()
	}
	wg.Wait()

	line, err := NewLine(BusConfig{URL: url, Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	var devs []adapter.DeviceSettings
	var srcs []*timedSource
	for i := range n {
		dev, err := NewDevice(line, DeviceConfig{Unit: i%247 + 1, Timeseries: tenPoints()})
		if err != nil {
			b.Fatal(err)
		}
		ts := &timedSource{Source: dev}
		srcs = append(srcs, ts)
		devs = append(devs, adapter.DeviceSettings{Info: adapter.Info{Name: fmt.Sprint("m", i), Bus: "plc"}, Poll: period, Source: ts})
	}
	m, err := adapter.New(adapter.Config{Sink: &encodingSink{}}, []adapter.BusSettings{{Name: "plc", Kind: "modbus", Line: line}}, devs)
	if err != nil {
		b.Fatal(err)
	}
	m.Start()
	time.Sleep(window + period/2)
	m.Close()
	var late []float64
	for _, s := range srcs {
		late = append(late, lateness(s.starts, period)...)
	}
	b.ReportMetric(pct(late, 0.5), "p50_ms")
	b.ReportMetric(pct(late, 0.99), "p99_ms")
	b.ReportMetric(pct(late, 1), "max_ms")
	b.ReportMetric(pct(base, 0.99), "ticker_p99_ms")
	b.ReportMetric(float64(len(late)), "polls")
}

// BenchmarkModbusRTULine: polls a second one unit gets through the
// adapter on an RTU line (ten registers: an 8-byte request, a 25-byte
// answer) against the line's theoretical limit at its baud — the 33
// characters at 11 bits (8E1) plus the t3.5 silence that ends each of the
// two frames. The line is a pty whose far end, firmware-sim's RTU slave,
// holds each answer for the time the exchange takes on a real line
// (modbussim.Line.Emulate): a pty itself transfers at once. Baseline in
// the same run: the library's client in a bare loop on the same line.
// Goal: ≥ 0.8×.
// MODBUS_RTU_WINDOW sets each round's run (default 3s).
func BenchmarkModbusRTULine(b *testing.B) {
	window := 3 * time.Second
	if w, err := time.ParseDuration(os.Getenv("MODBUS_RTU_WINDOW")); err == nil {
		window = w
	}
	for _, baud := range []int{9600, 19200, 38400, 115200} {
		b.Run(fmt.Sprint(baud), func(b *testing.B) {
			pty, err := modbussim.OpenPTY()
			if err != nil {
				b.Skipf("no pty: %v", err)
			}
			defer pty.Close()
			lineCfg := modbussim.Line{Baud: baud, Parity: "E", StopBits: 1, Emulate: true}
			slave, err := modbussim.New(modbussim.Config{Units: []modbussim.UnitConfig{{ID: 1}}, Line: lineCfg})
			if err != nil {
				b.Fatal(err)
			}
			defer slave.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go slave.ServeRTU(ctx, pty)
			var bare, adapt []float64
			var errs map[string]uint64
			for range 3 { // alternated rounds; medians
				bare = append(bare, bareRTU(b, pty.Path, baud, window))
				got, st := adapterRTU(b, pty.Path, baud, window)
				adapt = append(adapt, got)
				errs = st.Errors
			}
			got := median(adapt)
			bits := lineCfg.BitsPerChar()
			limit := 1 / (33*modbussim.CharTime(baud, bits) + 2*modbussim.T35(baud, bits)).Seconds()
			b.ReportMetric(got, "polls/s")
			b.ReportMetric(limit, "limit_polls/s")
			b.ReportMetric(got/limit, "ratio")
			b.ReportMetric(median(bare)/limit, "bare_ratio")
			b.Logf("baud %d: adapter %.1f polls/s, bare client %.1f (rounds %v, %v), limit %.1f; errors %v", baud, got, median(bare), adapt, bare, limit, errs)
		})
	}
}

// bareClient is the library's client on its own, connected.
func bareClient(b *testing.B, cfg mb.ClientConfiguration) *mb.ModbusClient {
	cfg.Logger = log.New(io.Discard, "", 0)
	c, err := mb.NewClient(&cfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Open(); err != nil {
		b.Fatal(err)
	}
	return c
}

// pollContinuously starts a manager polling one unit (ten registers) on
// bus with a 1 µs period — continuously — and returns once the first
// poll, which connects, is done.
func pollContinuously(b *testing.B, bus BusConfig) (*adapter.Manager, *encodingSink) {
	line, err := NewLine(bus)
	if err != nil {
		b.Fatal(err)
	}
	dev, err := NewDevice(line, DeviceConfig{Unit: 1, Timeseries: tenPoints()})
	if err != nil {
		b.Fatal(err)
	}
	sink := &encodingSink{}
	first := sink.reach(1)
	m, err := adapter.New(adapter.Config{Sink: sink}, []adapter.BusSettings{{Name: "line", Kind: "modbus", Line: line}},
		[]adapter.DeviceSettings{{Info: adapter.Info{Name: "meter", Bus: "line"}, Poll: time.Microsecond, Source: dev}})
	if err != nil {
		b.Fatal(err)
	}
	if err := m.Start(); err != nil {
		b.Fatal(err)
	}
	<-first
	return m, sink
}

// bareRTU is polls/s of the library's client alone on an RTU line.
func bareRTU(b *testing.B, path string, baud int, window time.Duration) float64 {
	c := bareClient(b, mb.ClientConfiguration{URL: "rtu://" + path, Speed: uint(baud), Parity: mb.PARITY_EVEN,
		StopBits: 1, Timeout: time.Second})
	defer c.Close()
	n, start := 0, time.Now()
	for time.Since(start) < window {
		if _, err := c.ReadRegisters(0, 10, mb.HOLDING_REGISTER); err == nil {
			n++
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

// adapterRTU is polls/s of one unit polled continuously through the
// adapter on an RTU line.
func adapterRTU(b *testing.B, path string, baud int, window time.Duration) (float64, adapter.DeviceStatus) {
	m, sink := pollContinuously(b, BusConfig{URL: "rtu://" + path, Baud: baud, Parity: "E", StopBits: 1, Timeout: time.Second})
	n0, t0 := sink.n.Load(), time.Now()
	time.Sleep(window)
	got := float64(sink.n.Load()-n0) / time.Since(t0).Seconds()
	m.Close()
	st, _ := m.Status("meter")
	return got, st
}
