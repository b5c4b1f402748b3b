package gpio

import (
	"context"
	"time"

	periphgpio "periph.io/x/conn/v3/gpio"

	"github.com/ferry-iot/ferry/devices/adapter"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// input is a line read as a bool: at each poll, and at each edge.
type input struct {
	*line
	bus      *Bus
	key      string
	edge     periphgpio.Edge
	debounce time.Duration
}

func (d *input) reading(at time.Time, level bool) adapter.Reading {
	return adapter.Reading{Time: at, Telemetry: []tb.KV{{Key: d.key, Value: tb.Value{Kind: tb.KindBool, Bool: level}}}}
}

// Read reads the level.
func (d *input) Read(context.Context) (adapter.Reading, error) {
	if err := d.in(d.edge); err != nil {
		return adapter.Reading{}, err
	}
	return d.reading(time.Time{}, d.level()), nil
}

// Watch emits a reading at each edge, stamped with the edge's time:
//
//   - edge both: the level read after the edge (after debounce, when
//     set), if it differs from the last one emitted;
//   - edge rising or falling: the level the edge went to; with debounce,
//     only if the line still holds it after debounce (a glitch shorter
//     than that is dropped).
func (d *input) Watch(ctx context.Context, emit func(adapter.Reading)) error {
	if err := d.in(d.edge); err != nil {
		return err
	}
	stop := d.watchHalt(ctx)
	defer stop()
	last := d.level()
	for ctx.Err() == nil {
		if !d.waitEdge(d.bus.slice) {
			continue
		}
		at := d.bus.now()
		if d.debounce > 0 {
			if err := d.bus.sleep(ctx, d.debounce); err != nil {
				return nil
			}
		}
		level := d.level()
		switch {
		case d.edge == periphgpio.BothEdges:
			if level == last {
				continue
			}
		case d.debounce > 0:
			if level != d.edgeLevel() {
				continue
			}
		default:
			level = d.edgeLevel()
		}
		last = level
		emit(d.reading(at, level))
	}
	return nil
}

// edgeLevel is the logical level a rising or falling edge goes to.
func (d *input) edgeLevel() bool { return (d.edge == periphgpio.RisingEdge) != d.activeLow }
