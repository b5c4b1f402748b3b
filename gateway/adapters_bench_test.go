package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/firmware-sim/modbussim"
)

// BenchmarkAdapterRSS: the resident memory 200 Modbus devices add to the
// daemon — each polled once a second, ten registers, on one TCP line to
// the simulated meter — against the same daemon with no devices, started
// alternately (the daemon binary, VmRSS after ADAPTER_RSS_WARMUP,
// default 20 s). Goal: ≤ 8 MiB.
func BenchmarkAdapterRSS(b *testing.B) {
	warm := 20 * time.Second
	if w, err := time.ParseDuration(os.Getenv("ADAPTER_RSS_WARMUP")); err == nil {
		warm = w
	}
	const n = 200
	var units []modbussim.UnitConfig
	for i := range n {
		units = append(units, modbussim.UnitConfig{ID: uint8(i%247 + 1)})
	}
	slave, err := modbussim.New(modbussim.Config{Units: units[:min(n, 247)]})
	if err != nil {
		b.Fatal(err)
	}
	defer slave.Close()
	srv, err := slave.StartTCP("tcp://127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	bin := daemonBinary(b)
	config := func(devices int) string {
		var sb strings.Builder
		dir := b.TempDir()
		mq := freePort(b)
		fmt.Fprintf(&sb, "data_dir: %s\nmqtt: {listen: %q}\nhttp: {listen: \"127.0.0.1:0\"}\nkafka: {listen: \"127.0.0.1:0\"}\nlogging: {level: warn}\nlog: {min_free_ratio: 0}\n", dir, mq)
		if devices > 0 {
			fmt.Fprintf(&sb, "buses:\n  - {name: plc, modbus: {url: %q, timeout: 1s}}\n", srv.URL())
		}
		sb.WriteString("devices:\n")
		for i := range devices {
			fmt.Fprintf(&sb, "  - name: meter-%d\n    type: energy_meter\n    source:\n      bus: plc\n      unit: %d\n      poll: 1s\n      timeseries:\n", i, i%247+1)
			for k := range 10 {
				fmt.Fprintf(&sb, "        - {key: r%d, register: holding, address: %d, type: int16, scale: 0.1}\n", k, k)
			}
		}
		p := filepath.Join(b.TempDir(), "ferry.yaml")
		if err := os.WriteFile(p, []byte(sb.String()), 0o644); err != nil {
			b.Fatal(err)
		}
		return p + "\x00" + mq
	}
	measure := func(devices int) float64 {
		cfg, mq, _ := strings.Cut(config(devices), "\x00")
		c := startChildBin(b, bin, cfg, mq)
		time.Sleep(warm)
		rss, _ := rssKiB(c.cmd.Process.Pid)
		c.stop(b)
		return float64(rss) / 1024
	}
	var base, with []float64
	for range 2 {
		base = append(base, measure(0))
		with = append(with, measure(n))
	}
	lo := func(v []float64) float64 { return min(v[0], v[1]) }
	b.ReportMetric(lo(base), "base_MiB")
	b.ReportMetric(lo(with), "with200_MiB")
	b.ReportMetric(lo(with)-lo(base), "added_MiB")
	b.Logf("RSS without devices %v MiB, with %d Modbus devices %v MiB; slave answered %+v", base, n, with, slave.Stats())
}
