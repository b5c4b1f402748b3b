package adapter

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// bus is one serialized line and the goroutine that polls its devices.
type bus struct {
	m            *Manager
	name, kind   string
	line         io.Closer
	degradeAfter int
	degradeFor   time.Duration
	devs         []*device
	calls        chan *call
	now          func() time.Time
	busySeries   prometheus.Counter // nil without metrics

	mu       sync.Mutex
	busy     time.Duration // time spent in Read or a call since start
	started  time.Time
	lastLine time.Time // when the last request ended
}

// call is an RPC or write queued for a bus.
type call struct {
	ctx  context.Context
	fn   func(ctx context.Context) error
	done chan error
}

func newBus(m *Manager, s BusSettings) *bus {
	b := &bus{m: m, name: s.Name, kind: s.Kind, line: s.Line, degradeAfter: s.DegradeAfter,
		degradeFor: s.DegradeFor, calls: make(chan *call), now: time.Now}
	if m.cfg.Metrics != nil {
		b.busySeries = m.cfg.Metrics.Busy.WithLabelValues(s.Name)
	}
	return b
}

// do runs fn on the bus goroutine, between polls.
func (b *bus) do(ctx context.Context, fn func(ctx context.Context) error) error {
	c := &call{ctx: ctx, fn: fn, done: make(chan error, 1)}
	b.m.mu.Lock()
	running := b.m.started && !b.m.closed
	stop := b.m.ctx
	b.m.mu.Unlock()
	if !running {
		return ErrClosed
	}
	select {
	case b.calls <- c:
	case <-ctx.Done():
		return ctx.Err()
	case <-stop.Done():
		return ErrClosed
	}
	select {
	case err := <-c.done:
		return err
	case <-stop.Done():
		return ErrClosed
	}
}

// run polls the bus's devices until ctx ends. Device i of n first falls
// due at i/n of its period, so a bus's devices spread over time.
func (b *bus) run(ctx context.Context) {
	start := b.now()
	b.mu.Lock()
	b.started = start
	b.mu.Unlock()
	for i, d := range b.devs {
		d.due = start.Add(d.poll * time.Duration(i) / time.Duration(len(b.devs)))
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := b.nextDue()
		var wake <-chan time.Time
		if next != nil {
			wait := next.due.Sub(b.now())
			if wait < minTimerWait {
				select {
				case c := <-b.calls: // writes go first
					b.runCall(c)
				case <-ctx.Done():
					return
				default:
					b.poll(ctx, next)
				}
				continue
			}
			timer.Reset(wait)
			wake = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case c := <-b.calls:
			if !timer.Stop() && wake != nil {
				select {
				case <-timer.C:
				default:
				}
			}
			b.runCall(c)
		case <-wake:
		}
	}
}

// minTimerWait: a device due sooner than this is polled now; arming a
// timer for less costs more than the poll is early.
const minTimerWait = 50 * time.Microsecond

// nextDue is the device due first (nil: the bus has none).
func (b *bus) nextDue() *device {
	var next *device
	for _, d := range b.devs {
		if next == nil || d.due.Before(next.due) {
			next = d
		}
	}
	return next
}

func (b *bus) runCall(c *call) {
	if c.ctx.Err() != nil {
		c.done <- c.ctx.Err()
		return
	}
	start := b.now()
	err := c.fn(c.ctx)
	b.account(start, b.now())
	c.done <- err
}

// account adds a request's line time.
func (b *bus) account(start, end time.Time) {
	b.mu.Lock()
	b.busy += end.Sub(start)
	b.lastLine = end
	b.mu.Unlock()
	b.m.cfg.Metrics.busy(b, end.Sub(start))
}

// busyShare is the share of time since start the line was in use.
func (b *bus) busyShare() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started.IsZero() {
		return 0
	}
	el := b.now().Sub(b.started)
	if el <= 0 {
		return 0
	}
	return float64(b.busy) / float64(el)
}

// poll reads d once (or skips it while degraded) and schedules its next
// poll.
func (b *bus) poll(ctx context.Context, d *device) {
	due := d.due
	start := b.now()
	if until := d.degradedUntil(); start.Before(until) {
		d.due = until
		return
	}
	b.m.cfg.Metrics.lag(d, start.Sub(due))
	r, err := d.src.Read(ctx)
	end := b.now()
	b.account(start, end)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		n := d.fail(start, end, err)
		switch {
		case n >= b.degradeAfter:
			d.degrade(end.Add(b.degradeFor))
			d.skip(uint64(b.degradeFor / d.poll))
			d.due = end.Add(b.degradeFor)
		default:
			// Back off: the next period, then two periods later.
			d.due = nextPhase(due, d.poll*time.Duration(1<<(n-1)), end)
		}
		return
	}
	if r.Time.IsZero() {
		r.Time = start
	}
	d.succeed(start, end, r)
	d.due = nextPhase(due, d.poll, end)
}

// nextPhase is the first time due + k·step (k ≥ 1) after now: a late poll
// keeps the device's phase and skips what it missed.
func nextPhase(due time.Time, step time.Duration, now time.Time) time.Time {
	next := due.Add(step)
	if !next.After(now) {
		missed := now.Sub(next)/step + 1
		next = next.Add(missed * step)
	}
	return next
}
