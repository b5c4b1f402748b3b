package main

import (
	"fmt"
	"io"
	"net/http"
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
// alternately (the daemon binary; VmRSS averaged over ten seconds after
// ADAPTER_RSS_WARMUP, default 60 s, so that both have run the collector
// and its scavenger a while; and the live heap after a forced
// collection). Goal: ≤ 8 MiB.
func BenchmarkAdapterRSS(b *testing.B) {
	warm := 60 * time.Second
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
		mq, web := freePort(b), freePort(b)
		fmt.Fprintf(&sb, "data_dir: %s\nmqtt: {listen: %q}\nhttp: {listen: %q, admin_token: bench}\nkafka: {listen: \"127.0.0.1:0\"}\nlogging: {level: warn}\nlog: {min_free_ratio: 0}\n", dir, mq, web)
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
		return p + "\x00" + mq + "\x00" + web
	}
	// measure is the mean VmRSS over ten seconds after the warm-up (a
	// busy heap cycles between its live size and the GC's goal), and the
	// live heap after a forced collection.
	measure := func(devices int) (rss, live float64) {
		parts := strings.Split(config(devices), "\x00")
		c := startChildBin(b, bin, parts[0], parts[1])
		time.Sleep(warm)
		var sum int64
		for range 20 {
			r, _ := rssKiB(c.cmd.Process.Pid)
			sum += r
			time.Sleep(500 * time.Millisecond)
		}
		req, _ := http.NewRequest("GET", "http://"+parts[2]+"/debug/pprof/heap?gc=1", nil)
		req.Header.Set("Authorization", "Bearer bench")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		live = scrapeMetrics(b, parts[2])["go_memstats_heap_inuse_bytes"] / (1 << 20)
		c.stop(b)
		return float64(sum) / 20 / 1024, live
	}
	var base, with, baseLive, withLive []float64
	for range 2 {
		r, l := measure(0)
		base, baseLive = append(base, r), append(baseLive, l)
		r, l = measure(n)
		with, withLive = append(with, r), append(withLive, l)
	}
	mean := func(v []float64) float64 { return (v[0] + v[1]) / 2 }
	b.ReportMetric(mean(base), "base_MiB")
	b.ReportMetric(mean(with), "with200_MiB")
	b.ReportMetric(mean(with)-mean(base), "added_MiB")
	b.ReportMetric(mean(withLive)-mean(baseLive), "added_live_heap_MiB")
	b.Logf("mean RSS without devices %.1f MiB, with %d Modbus devices %.1f MiB; live heap %.1f → %.1f MiB; slave answered %+v",
		base, n, with, baseLive, withLive, slave.Stats())
}
