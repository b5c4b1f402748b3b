package main

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// GCPercent is the gc_percent key: a fixed GOGC (10-1000), or GCAuto.
type GCPercent int

// GCAuto lets the daemon choose GOGC from its allocation rate (gcTuner).
const GCAuto GCPercent = -1

// UnmarshalText reads "auto" or a percentage (the form environment
// variables and quoted YAML values arrive in).
func (g *GCPercent) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if strings.EqualFold(s, "auto") {
		*g = GCAuto
		return nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("%q is not auto or a percentage", s)
	}
	*g = GCPercent(n)
	return nil
}

// MarshalText writes "auto" or the percentage.
func (g GCPercent) MarshalText() ([]byte, error) {
	if g == GCAuto {
		return []byte("auto"), nil
	}
	return []byte(strconv.Itoa(int(g))), nil
}

// The automatic setting. The collector's work grows with the allocation
// rate, not with GOGC's headroom, so the rate decides: a gateway at fleet
// rates allocates a few MiB a second (1,000 MQTT devices at 1 Hz: ~3.7;
// 200 Modbus devices at 1 s: ~0.2) and keeps its heap within half its live
// size for a cost nobody notices, while saturated ingest (~80 MiB/s) gets
// Go's default headroom back, since collecting twice as often there cost
// about 10 % of the throughput (BENCHMARKS.md, "Memory added by 200 Modbus
// devices"). The memory limit still bounds both.
const (
	gcLow          = 50               // GOGC at fleet rates
	gcHigh         = 100              // GOGC under load (Go's default)
	gcUpRate       = 16 << 20         // bytes/s: switch to gcHigh at once
	gcDownRate     = 8 << 20          // bytes/s: back to gcLow once below this...
	gcDownHold     = 10 * time.Second // ...for this long (no flapping on bursts)
	gcTuneInterval = time.Second
)

// gcTuner switches GOGC between gcLow and gcHigh from the heap allocation
// rate, sampled every gcTuneInterval. observe is pure (tests drive it); run
// samples runtime/metrics and applies the result.
type gcTuner struct {
	current    int
	lastBytes  uint64
	lastAt     time.Time
	belowSince time.Time // when the rate fell under gcDownRate while at gcHigh

	set    func(int) int
	gauge  prometheus.Gauge
	logger *slog.Logger
}

// newGCTuner starts at gcLow, applied with set (debug.SetGCPercent).
func newGCTuner(reg prometheus.Registerer, set func(int) int, logger *slog.Logger) *gcTuner {
	t := &gcTuner{current: gcLow, set: set, logger: logger,
		gauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ferry_gc_percent",
			Help: "The garbage collector's GOGC now (gc_percent: auto switches it from the allocation rate)."})}
	if reg != nil {
		reg.MustRegister(t.gauge)
	}
	t.set(t.current)
	t.gauge.Set(float64(t.current))
	return t
}

// observe takes the cumulative bytes allocated at now and returns the
// GOGC to use.
func (t *gcTuner) observe(now time.Time, allocated uint64) int {
	if t.lastAt.IsZero() || !now.After(t.lastAt) {
		t.lastAt, t.lastBytes = now, allocated
		return t.current
	}
	rate := float64(allocated-t.lastBytes) / now.Sub(t.lastAt).Seconds()
	t.lastAt, t.lastBytes = now, allocated
	switch {
	case rate >= gcUpRate:
		t.current, t.belowSince = gcHigh, time.Time{}
	case t.current == gcHigh && rate < gcDownRate:
		if t.belowSince.IsZero() {
			t.belowSince = now
		} else if now.Sub(t.belowSince) >= gcDownHold {
			t.current, t.belowSince = gcLow, time.Time{}
		}
	default:
		t.belowSince = time.Time{}
	}
	return t.current
}

// run samples the allocation counter until ctx ends.
func (t *gcTuner) run(ctx context.Context) {
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	tick := time.NewTicker(gcTuneInterval)
	defer tick.Stop()
	for {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			prev := t.current // read before observe changes it
			if next := t.observe(time.Now(), sample[0].Value.Uint64()); next != prev {
				t.set(next)
				t.gauge.Set(float64(next))
				t.logger.Debug("gc_percent auto", "gogc", next)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
