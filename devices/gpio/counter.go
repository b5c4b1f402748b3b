package gpio

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	periphgpio "periph.io/x/conn/v3/gpio"

	"github.com/ferry-iot/ferry/devices/adapter"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// counter counts pulses (edges) on a line. Its watch counts and emits
// nothing; each poll reports the count since start and the rate since
// the previous poll.
type counter struct {
	*line
	bus      *Bus
	edge     periphgpio.Edge
	debounce time.Duration
	scale    float64
	key      string

	count atomic.Int64 // pulses since start; the watch adds, polls read

	mu        sync.Mutex // guards the rate window, which polls own
	lastCount int64
	lastTime  time.Time
}

func newCounter(b *Bus, l *line, c adapter.SensorConfig) *counter {
	return &counter{line: l, bus: b, edge: edgeOr(c.Edge, periphgpio.RisingEdge), debounce: c.Debounce,
		scale: c.Scale, key: c.KeyOr("value"), lastTime: b.now()}
}

// Watch counts edges; an edge sooner than debounce after the last one
// counted is a bounce and is not counted.
func (d *counter) Watch(ctx context.Context, _ func(adapter.Reading)) error {
	if err := d.in(d.edge); err != nil {
		return err
	}
	stop := d.watchHalt(ctx)
	defer stop()
	var last time.Time
	for ctx.Err() == nil {
		if !d.waitEdge(d.bus.slice) {
			continue
		}
		at := d.bus.now()
		if d.debounce > 0 && !last.IsZero() && at.Sub(last) < d.debounce {
			continue
		}
		last = at
		d.count.Add(1)
	}
	return nil
}

// Read reports count (pulses since start, a long) and rate (pulses per
// second since the previous poll); with scale, also key (count × scale)
// and key_rate (rate × scale, per second).
func (d *counter) Read(context.Context) (adapter.Reading, error) {
	if err := d.in(d.edge); err != nil {
		return adapter.Reading{}, err
	}
	n := d.count.Load()
	now := d.bus.now()
	d.mu.Lock()
	var rate float64
	if el := now.Sub(d.lastTime).Seconds(); el > 0 {
		rate = float64(n-d.lastCount) / el
	}
	d.lastCount, d.lastTime = n, now
	d.mu.Unlock()
	kvs := []tb.KV{
		{Key: "count", Value: tb.Value{Kind: tb.KindLong, Long: n}},
		adapter.Double("rate", round6(rate)),
	}
	if d.scale != 0 {
		kvs = append(kvs, adapter.Double(d.key, round6(float64(n)*d.scale)), adapter.Double(d.key+"_rate", round6(rate*d.scale)))
	}
	return adapter.Reading{Time: now, Telemetry: kvs}, nil
}

// round6 rounds to six decimals, so 3 × 0.1 L reads 0.3, not
// 0.30000000000000004.
func round6(v float64) float64 { return math.Round(v*1e6) / 1e6 }
