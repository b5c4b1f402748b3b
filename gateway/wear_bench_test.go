package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ferry-iot/ferry/firmware-sim/sim"
)

// BenchmarkFleetWear runs the daemon binary against a fleet of
// firmware-sim devices publishing at a fixed rate (QoS 1) and measures
// what the storage pays for it over a window after warm-up: fsyncs per
// second, segment bytes (ferry_log_written_bytes_total), the bytes the
// daemon caused the block device to write (write_bytes of /proc/PID/io)
// and the bytes the whole block device wrote (sectors written in
// /sys/dev/block, which includes the file system's journal), projected
// to GiB a day, and publish → PUBACK p50/p99. Each fleet runs with the
// defaults and with log.ack_delay at 0, 20, 50, 100 and 250 ms.
//
//	go test -run '^$' -bench FleetWear -benchtime=1x ./gateway
//	WEAR_WINDOW=60s WEAR_ONLY=1000x1Hz/defaults go test ...
//
// The data directory is b.TempDir(), so TMPDIR must be on the disk to
// measure (not tmpfs: a tmpfs writes no block device).
func BenchmarkFleetWear(b *testing.B) {
	window := 30 * time.Second
	if v := os.Getenv("WEAR_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("WEAR_WINDOW: %v", err)
		}
		window = d
	}
	bin := daemonBinary(b)
	fleets := []struct {
		name    string
		devices int
		rate    float64
	}{{"1000x1Hz", 1000, 1}, {"100x10Hz", 100, 10}}
	settings := []struct{ name, log string }{
		{"defaults", ""},
		{"ack_delay=0ms", "ack_delay: 0s"},
		{"ack_delay=20ms", "ack_delay: 20ms"},
		{"ack_delay=50ms", "ack_delay: 50ms"},
		{"ack_delay=100ms", "ack_delay: 100ms"},
		{"ack_delay=250ms", "ack_delay: 250ms"},
	}
	if v := os.Getenv("WEAR_SETTINGS"); v != "" { // name=yaml;name=yaml: other log settings
		settings = settings[:0]
		for _, s := range strings.Split(v, ";") {
			name, yaml, _ := strings.Cut(s, "=")
			settings = append(settings, struct{ name, log string }{name, yaml})
		}
	}
	only := os.Getenv("WEAR_ONLY")
	for _, fl := range fleets {
		for _, st := range settings {
			name := fl.name + "/" + st.name
			if only != "" && !strings.Contains(name, only) {
				continue
			}
			b.Run(name, func(b *testing.B) {
				w := measureWear(b, bin, fl.devices, fl.rate, st.log, window)
				b.ReportMetric(w.fsyncsPerSec, "fsync/s")
				b.ReportMetric(w.segKiBs, "seg_KiB/s")
				b.ReportMetric(w.procKiBs, "proc_KiB/s")
				b.ReportMetric(w.devKiBs, "dev_KiB/s")
				b.ReportMetric(w.procKiBs*86400/(1<<20), "proc_GiB/day")
				b.ReportMetric(w.devKiBs*86400/(1<<20), "dev_GiB/day")
				b.ReportMetric(w.procKiBs/w.segKiBs, "proc/seg")
				b.ReportMetric(float64(w.sum.P50.Microseconds())/1000, "p50_ms")
				b.ReportMetric(float64(w.sum.P99.Microseconds())/1000, "p99_ms")
				b.ReportMetric(w.msgsPerSec, "msgs/s")
				b.ReportMetric(w.segKiBs*1024/w.msgsPerSec, "seg_B/msg")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// wear is one fleet run's measurements over the window.
type wear struct {
	fsyncsPerSec, segKiBs, procKiBs, devKiBs, msgsPerSec float64
	sum                                                  sim.Summary
}

func measureWear(b *testing.B, bin string, devices int, rate float64, logYAML string, window time.Duration) wear {
	b.Helper()
	dir := b.TempDir()
	mqttAddr, httpAddr := freePort(b), freePort(b)
	var sb strings.Builder
	fmt.Fprintf(&sb, "data_dir: %s\nmqtt: {listen: %q}\nhttp: {listen: %q}\nkafka: {listen: \"127.0.0.1:0\"}\nlogging: {level: warn}\n",
		dir, mqttAddr, httpAddr)
	if logYAML != "" {
		fmt.Fprintf(&sb, "log: {%s}\n", logYAML)
	}
	sb.WriteString("devices:\n")
	for i := range devices {
		fmt.Fprintf(&sb, "  - {name: sim-device-%d, token: sim-token-%d}\n", i, i)
	}
	cfg := filepath.Join(b.TempDir(), "ferry.yaml")
	if err := os.WriteFile(cfg, []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	c := startChildBin(b, bin, cfg, mqttAddr)
	defer c.stop(b)
	pid := c.cmd.Process.Pid
	dev := blockDevice(b, dir)

	spread := 5 * time.Second
	warm := spread + 5*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), warm+window+2*time.Second)
	defer cancel()
	done := make(chan struct{})
	var sum sim.Summary
	var runErr error
	go func() {
		defer close(done)
		sum, runErr = sim.Run(ctx, sim.Config{Broker: "tcp://" + mqttAddr, Devices: devices, Rate: rate,
			Inflight: 10, StartSpread: spread}, nil)
	}()
	time.Sleep(warm)
	type sample struct {
		at              time.Time
		proc, dev       int64
		seg, syncs, msg float64
	}
	take := func() sample {
		// Write back every dirty page on the machine first (the daemon's
		// unsynced files and, before the window, the build's), so the
		// window counts the daemon's writes, not their timing.
		syscall.Sync()
		m := scrapeMetrics(b, httpAddr)
		proc, err := procWriteBytes(fmt.Sprintf("/proc/%d/io", pid))
		if err != nil {
			b.Fatal(err)
		}
		msgs := 0.0 // over its labels (topic kinds)
		for k, v := range m {
			if strings.HasPrefix(k, "ferry_mqtt_messages_total{") {
				msgs += v
			}
		}
		return sample{at: time.Now(), proc: proc, dev: deviceWrittenBytes(b, dev),
			seg: m["ferry_log_written_bytes_total"], syncs: m["ferry_log_fsync_rounds_total"], msg: msgs}
	}
	s0 := take()
	time.Sleep(window)
	s1 := take()
	<-done
	if runErr != nil && ctx.Err() == nil {
		b.Fatal(runErr)
	}
	if sum.Failed > 0 {
		b.Fatalf("%d publishes failed: %+v", sum.Failed, sum)
	}
	secs := s1.at.Sub(s0.at).Seconds()
	return wear{
		fsyncsPerSec: (s1.syncs - s0.syncs) / secs,
		segKiBs:      (s1.seg - s0.seg) / 1024 / secs,
		procKiBs:     float64(s1.proc-s0.proc) / 1024 / secs,
		devKiBs:      float64(s1.dev-s0.dev) / 1024 / secs,
		msgsPerSec:   (s1.msg - s0.msg) / secs,
		sum:          sum,
	}
}

// blockDevice finds the /sys/dev/block entry of the device holding dir.
func blockDevice(tb testing.TB, dir string) string {
	tb.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		tb.Fatal(err)
	}
	p := fmt.Sprintf("/sys/dev/block/%d:%d/stat", unix.Major(st.Dev), unix.Minor(st.Dev))
	if _, err := os.Stat(p); err != nil {
		tb.Skipf("%s is not on a block device (%v): nothing to measure", dir, err)
	}
	return p
}

// deviceWrittenBytes is the device's sectors written × 512, from every
// writer on the machine.
func deviceWrittenBytes(tb testing.TB, stat string) int64 {
	tb.Helper()
	b, err := os.ReadFile(stat)
	if err != nil {
		tb.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) < 7 {
		tb.Fatalf("%s: %q", stat, b)
	}
	n, _ := strconv.ParseInt(f[6], 10, 64)
	return n * 512
}
