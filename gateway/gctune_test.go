package main

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-iot/ferry/broker/testkit"
)

// TestGCTunerFollowsAllocationRate: fleet rates keep GOGC at 50, a rate
// at or over 16 MiB/s switches to 100 at once, and it goes back only after
// the rate has stayed under 8 MiB/s for 10 s; a short lull does not.
func TestGCTunerFollowsAllocationRate(t *testing.T) {
	var set []int
	reg := prometheus.NewRegistry()
	tu := newGCTuner(reg, func(p int) int { set = append(set, p); return 100 }, slog.New(slog.DiscardHandler))
	if len(set) != 1 || set[0] != gcLow {
		t.Fatalf("the tuner starts by setting %v", set)
	}
	now, bytes := time.Unix(1000, 0), uint64(0)
	step := func(rate uint64) int {
		now, bytes = now.Add(time.Second), bytes+rate
		return tu.observe(now, bytes)
	}
	if got := tu.observe(now, bytes); got != gcLow {
		t.Fatalf("first sample: %d", got)
	}
	for i := range 30 {
		if got := step(4 << 20); got != gcLow { // 1,000 devices at 1 Hz: ~3.7 MiB/s
			t.Fatalf("second %d at 4 MiB/s: GOGC %d", i, got)
		}
	}
	if got := step(12 << 20); got != gcLow { // between the thresholds: stays
		t.Fatalf("12 MiB/s from low: %d", got)
	}
	if got := step(16 << 20); got != gcHigh {
		t.Fatalf("16 MiB/s: %d", got)
	}
	if got := step(12 << 20); got != gcHigh { // between: stays high
		t.Fatalf("12 MiB/s from high: %d", got)
	}
	for i := range 5 { // a 5 s lull
		if got := step(1 << 20); got != gcHigh {
			t.Fatalf("lull second %d: %d", i, got)
		}
	}
	if got := step(80 << 20); got != gcHigh {
		t.Fatalf("burst: %d", got)
	}
	for i := range 10 { // the hold starts at the first low sample, so the 11th returns
		if got := step(1 << 20); got != gcHigh {
			t.Fatalf("second %d under 8 MiB/s: back to %d already", i, got)
		}
	}
	if got := step(1 << 20); got != gcLow {
		t.Fatalf("after 10 s under 8 MiB/s: %d", got)
	}
	// A clock that does not move (or goes back) changes nothing.
	if got := tu.observe(now.Add(-time.Second), bytes+(100<<20)); got != gcLow {
		t.Fatalf("backward clock: %d", got)
	}
	if v := testutil.ToFloat64(tu.gauge); v != gcLow {
		t.Fatalf("gauge %v", v)
	}
	if n, err := testutil.GatherAndCount(reg, "ferry_gc_percent"); err != nil || n != 1 {
		t.Fatalf("ferry_gc_percent registered %d, %v", n, err)
	}
}

// TestGCTunerRunReadsTheRuntime: run samples the runtime's own allocation
// counter: allocating fast moves GOGC to 100 (through set and the gauge).
func TestGCTunerRunReadsTheRuntime(t *testing.T) {
	var mu sync.Mutex
	var set []int
	tu := newGCTuner(nil, func(p int) int { mu.Lock(); set = append(set, p); mu.Unlock(); return 100 }, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tu.run(ctx); close(done) }()
	var sink []byte
	testkit.Eventually(t, 20*time.Second, func() bool {
		for range 64 { // ~64 MiB per poll, far above gcUpRate
			sink = make([]byte, 1<<20)
		}
		mu.Lock()
		defer mu.Unlock()
		return len(set) > 1 && set[len(set)-1] == gcHigh
	}, "GOGC %d while allocating fast", gcHigh)
	_ = sink
	cancel()
	<-done
	if v := testutil.ToFloat64(tu.gauge); v != gcHigh {
		t.Fatalf("gauge %v", v)
	}
}
