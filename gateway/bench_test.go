package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ferry-iot/ferry/firmware-sim/sim"
)

// The broker benchmarks run the broker as a child process — the daemon
// built from this package as users run it (its resident set is the
// daemon's own, not a test binary's with every test dependency mapped),
// or this test binary as the plain mochi baseline — and the load,
// firmware-sim devices, in the benchmark process, so the broker's CPU and
// memory are its own.
//
//	go test -run '^$' -bench 'Ingest|DeviceFleet' -benchtime=1x ./gateway

// allowAll is a mochi hook that admits every client: the baseline broker.
type allowAll struct{ mochi.HookBase }

func (*allowAll) ID() string { return "allow-all" }
func (*allowAll) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}
func (*allowAll) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }
func (*allowAll) OnACLCheck(*mochi.Client, string, bool) bool              { return true }

// runPlainMochi serves the same mochi version with no storage and its own
// PUBACK path (the baseline), until SIGTERM.
func runPlainMochi(addr string) int {
	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumQos = 1
	caps.MaximumClientWritesPending = 128
	s := mochi.New(&mochi.Options{Capabilities: caps, Logger: slog.New(slog.DiscardHandler)})
	_ = s.AddHook(new(allowAll), nil)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_ = s.AddListener(listeners.NewNet("tcp", ln))
	if err := s.Serve(); err != nil {
		return 1
	}
	c := make(chan os.Signal, 1)
	signalNotify(c)
	<-c
	s.Close()
	return 0
}

// child is a broker process.
type child struct {
	cmd  *exec.Cmd
	addr string
	log  bytes.Buffer
}

// startChild starts the ferry daemon (config file) or, with an empty
// config, this binary as the plain mochi baseline.
func startChild(tb testing.TB, configFile, addr string) *child {
	tb.Helper()
	bin := ""
	if configFile != "" {
		bin = daemonBinary(tb)
	}
	return startChildBin(tb, bin, configFile, addr)
}

// startChildBin is startChild with the daemon binary already built.
func startChildBin(tb testing.TB, bin, configFile, addr string) *child {
	tb.Helper()
	c := &child{addr: addr}
	if configFile != "" {
		c.cmd = exec.Command(bin, "--config", configFile)
	} else {
		c.cmd = exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
		c.cmd.Env = append(os.Environ(), "GATEWAY_E2E_MOCHI="+addr)
	}
	c.cmd.Stdout, c.cmd.Stderr = &c.log, &c.log
	if err := c.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		if conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			conn.Close()
			return c
		}
		if time.Now().After(deadline) {
			c.cmd.Process.Kill()
			tb.Fatalf("broker did not start:\n%s", c.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// daemonBinary builds the daemon (go build, as `go run ./gateway` does)
// into the benchmark's temporary directory; the build cache makes every
// build after the first a link.
func daemonBinary(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "ferry")
	build := exec.Command(goTool(tb), "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if out, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func (c *child) stop(tb testing.TB) {
	c.cmd.Process.Signal(os.Interrupt)
	if err := c.cmd.Wait(); err != nil {
		tb.Errorf("broker exit: %v\n%s", err, c.log.String())
	}
}

// rssKiB reads a process's resident set (VmRSS) and peak (VmHWM).
func rssKiB(pid int) (rss, peak int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && (f[0] == "VmRSS:" || f[0] == "VmHWM:") {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			if f[0] == "VmRSS:" {
				rss = v
			} else {
				peak = v
			}
		}
	}
	return rss, peak
}

// ferryConfig writes a config for n simulator devices and returns its path.
func ferryConfig(tb testing.TB, dataDir, mqttAddr string, n int, extra string) string {
	tb.Helper()
	var sb strings.Builder
	fmt.Fprintf(&sb, "data_dir: %s\nmqtt: {listen: %q}\nhttp: {listen: %q}\nkafka: {listen: \"127.0.0.1:0\"}\nlogging: {level: warn}\nlog: {min_free_ratio: 0}\n%s\ndevices:\n",
		dataDir, mqttAddr, "127.0.0.1:0", extra)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&sb, "  - {name: sim-device-%d, token: sim-token-%d}\n", i, i)
	}
	p := filepath.Join(tb.TempDir(), "ferry.yaml")
	if err := os.WriteFile(p, []byte(sb.String()), 0o644); err != nil {
		tb.Fatal(err)
	}
	return p
}

// load runs firmware-sim against addr until each device sent msgs messages.
func load(tb testing.TB, addr string, devices, msgs, inflight int, rate float64, d time.Duration) (sim.Summary, time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	if d > 0 {
		ctx, cancel = context.WithTimeout(context.Background(), d)
	}
	defer cancel()
	start := time.Now()
	sum, err := sim.Run(ctx, sim.Config{Broker: "tcp://" + addr, Devices: devices, Messages: msgs,
		Inflight: inflight, Rate: rate, Shapes: []string{sim.ShapeObject}, StartSpread: time.Second}, nil)
	if err != nil && ctx.Err() == nil {
		tb.Fatal(err)
	}
	return sum, time.Since(start)
}

const ingestDevices, ingestInflight = 50, 4

// BenchmarkIngest measures QoS 1 ingest: ferry with flush=always (every
// PUBACK after fsync) against the same mochi broker with no storage, under
// the same firmware-sim load in the same run. Reports msgs/s of each,
// vs_mochi, and ferry's publish→PUBACK p50/p99.
func BenchmarkIngest(b *testing.B) {
	msgs := max(b.N/ingestDevices, 200)
	// Baseline first.
	addr := freePort(b)
	m := startChild(b, "", addr)
	base, baseTime := load(b, addr, ingestDevices, msgs, ingestInflight, 0, 0)
	m.stop(b)
	// Ferry.
	addr = freePort(b)
	f := startChild(b, ferryConfig(b, b.TempDir(), addr, ingestDevices, ""), addr)
	b.ResetTimer()
	sum, ferryTime := load(b, addr, ingestDevices, msgs, ingestInflight, 0, 0)
	b.StopTimer()
	f.stop(b)
	if sum.Failed > 0 || sum.Acked != int64(ingestDevices*msgs) || base.Acked != int64(ingestDevices*msgs) {
		b.Fatalf("ferry %+v / baseline %+v", sum, base)
	}
	ferryRate := float64(sum.Acked) / ferryTime.Seconds()
	baseRate := float64(base.Acked) / baseTime.Seconds()
	b.ReportMetric(ferryRate, "msgs/s")
	b.ReportMetric(baseRate, "mochi_msgs/s")
	b.ReportMetric(ferryRate/baseRate, "vs_mochi")
	b.ReportMetric(float64(sum.P50.Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(sum.P99.Microseconds())/1000, "p99_ms")
}

// BenchmarkDeviceFleet holds 1,000 connected devices, each publishing once
// a second at QoS 1, for 30 s, and reports the daemon's resident memory
// (peak and at the end), throughput and p99. Then it measures the maximum
// rate and the p99 at half of it. Run with -benchtime=1x.
func BenchmarkDeviceFleet(b *testing.B) {
	const fleet = 1000
	addr := freePort(b)
	f := startChild(b, ferryConfig(b, b.TempDir(), addr, fleet, ""), addr)
	defer f.stop(b)
	pid := f.cmd.Process.Pid
	idle, _ := rssKiB(pid)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	var maxRSS int64
	sampler := make(chan struct{})
	go func() {
		defer close(sampler)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if r, _ := rssKiB(pid); r > maxRSS {
					maxRSS = r
				}
			}
		}
	}()
	b.ResetTimer()
	sum, err := sim.Run(ctx, sim.Config{Broker: "tcp://" + addr, Devices: fleet, Rate: 1, Messages: 30,
		StartSpread: 10 * time.Second}, nil)
	b.StopTimer()
	cancel()
	<-sampler
	if err != nil && ctx.Err() == nil {
		b.Fatal(err)
	}
	rss, peak := rssKiB(pid)
	if sum.Acked < fleet*25 {
		b.Fatalf("fleet run acknowledged only %d: %+v", sum.Acked, sum)
	}
	b.ReportMetric(float64(idle)/1024, "idle_RSS_MiB")
	b.ReportMetric(float64(max(maxRSS, rss))/1024, "fleet_RSS_MiB")
	b.ReportMetric(float64(peak)/1024, "peak_RSS_MiB")
	b.ReportMetric(float64(sum.P99.Microseconds())/1000, "fleet_p99_ms")

	// Maximum rate with the same daemon, then half of it.
	full, fullTime := load(b, addr, ingestDevices, 400, ingestInflight, 0, 0)
	maxRate := float64(full.Acked) / fullTime.Seconds()
	half, _ := load(b, addr, ingestDevices, 0, ingestInflight, maxRate/2/ingestDevices, 15*time.Second)
	b.ReportMetric(maxRate, "max_msgs/s")
	b.ReportMetric(float64(half.P50.Microseconds())/1000, "half_rate_p50_ms")
	b.ReportMetric(float64(half.P99.Microseconds())/1000, "half_rate_p99_ms")
}
