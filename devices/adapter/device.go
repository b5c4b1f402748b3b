package adapter

import (
	"context"
	"time"
)

// device is one adapter device: its source, its report state and its
// counters. The bus goroutine owns due; mu guards the rest (watch events
// and the API read it from other goroutines).
type device struct {
	bus  *bus
	info Info
	poll time.Duration
	src  Source
	due  time.Time

	mu       chan struct{} // a one-slot lock that a watch can wait on with a context
	rep      *reporter
	series   *deviceSeries // nil without metrics
	st       DeviceStatus
	degraded time.Time
	watching bool
}

// DeviceStatus is a device's poll record, as the API shows it.
type DeviceStatus struct {
	Bus    string `json:"bus"`
	Kind   string `json:"kind"`
	Driver string `json:"driver,omitempty"`
	// State is "starting" (not polled yet), "ok", "failing" (its last
	// poll failed) or "degraded" (left alone until DegradedUntil).
	State         string            `json:"state"`
	Poll          string            `json:"poll"`
	Polls         uint64            `json:"polls"`
	Errors        map[string]uint64 `json:"errors"` // by kind
	Skipped       uint64            `json:"skipped"`
	Records       uint64            `json:"records"`
	Failures      int               `json:"consecutive_failures"`
	DegradedUntil *time.Time        `json:"degraded_until,omitempty"`
	LastPoll      *PollOutcome      `json:"last_poll,omitempty"`
	LastSuccess   *time.Time        `json:"last_success,omitempty"`

	last        PollOutcome // LastPoll and LastSuccess are set from these in Status
	lastSuccess time.Time
	LatencyMs   float64 `json:"latency_ms"` // mean of the successful polls
	BusBusy     float64 `json:"bus_busy"`   // the bus's line busy share since start

	latencySum time.Duration
	okPolls    uint64
}

// PollOutcome is how a poll ended.
type PollOutcome struct {
	At        time.Time `json:"at"`
	OK        bool      `json:"ok"`
	Error     string    `json:"error,omitempty"`
	Kind      string    `json:"error_kind,omitempty"`
	LatencyMs float64   `json:"latency_ms"`
}

func newDevice(b *bus, s DeviceSettings) *device {
	d := &device{bus: b, info: s.Info, poll: s.Poll, src: s.Source, mu: make(chan struct{}, 1),
		rep: newReporter(s.Report, s.Poll), series: b.m.cfg.Metrics.series(b.name, s.Name)}
	d.st = DeviceStatus{Bus: b.name, Kind: b.kind, Driver: s.Driver, State: "starting", Poll: s.Poll.String(),
		Errors: map[string]uint64{}}
	return d
}

func (d *device) lock()   { d.mu <- struct{}{} }
func (d *device) unlock() { <-d.mu }

// Status is a copy of d's status.
func (m *Manager) Status(device string) (DeviceStatus, bool) {
	if m == nil {
		return DeviceStatus{}, false
	}
	d := m.devices[device]
	if d == nil {
		return DeviceStatus{}, false
	}
	d.lock()
	st := d.st
	st.Errors = make(map[string]uint64, len(d.st.Errors))
	for k, v := range d.st.Errors {
		st.Errors[k] = v
	}
	d.unlock()
	if !st.last.At.IsZero() {
		st.LastPoll = &st.last
	}
	if !st.lastSuccess.IsZero() {
		st.LastSuccess = &st.lastSuccess
	}
	st.BusBusy = d.bus.busyShare()
	return st, true
}

func (d *device) online() bool {
	d.lock()
	defer d.unlock()
	return d.st.State == "ok" || (d.watching && d.st.State == "starting")
}

func (d *device) degradedUntil() time.Time {
	d.lock()
	defer d.unlock()
	return d.degraded
}

// skip counts n polls not made while the device is degraded.
func (d *device) skip(n uint64) {
	d.lock()
	d.st.Skipped += n
	d.unlock()
	d.bus.m.cfg.Metrics.skipped(d, n)
}

func (d *device) degrade(until time.Time) {
	d.lock()
	first := d.st.State != "degraded"
	d.degraded = until
	d.st.State = "degraded"
	u := until
	d.st.DegradedUntil = &u
	d.unlock()
	d.bus.m.cfg.Metrics.up(d, false)
	if !first {
		return // one line per outage, not one per probe
	}
	d.bus.m.cfg.Logger.Warn("adapter device degraded: left alone until it answers again",
		"device", d.info.Name, "bus", d.bus.name, "for", d.bus.degradeFor.String(), "failures", d.bus.degradeAfter)
}

// fail records a failed poll; it returns the failures in a row.
func (d *device) fail(start, end time.Time, err error) int {
	kind := KindOf(err)
	d.lock()
	d.st.Polls++
	d.st.Errors[kind]++
	d.st.Failures++
	n := d.st.Failures
	wasOK := d.st.State == "ok" || d.st.State == "starting"
	if d.st.State != "degraded" {
		d.st.State = "failing"
	}
	d.st.last = PollOutcome{At: start, Error: err.Error(), Kind: kind, LatencyMs: ms(end.Sub(start))}
	d.unlock()
	mt := d.bus.m.cfg.Metrics
	mt.polled(d, end.Sub(start), kind)
	mt.up(d, false)
	if wasOK {
		d.bus.m.warn.Warn(d.bus.m.cfg.Logger, d.info.Name+"/"+kind, "adapter poll failed",
			"device", d.info.Name, "bus", d.bus.name, "kind", kind, "err", err)
	}
	return n
}

// succeed records a successful poll and hands its values to the sink.
func (d *device) succeed(start, end time.Time, r Reading) {
	d.lock()
	recovered := d.st.State == "failing" || d.st.State == "degraded"
	d.st.Polls++
	d.st.Failures = 0
	d.degraded = time.Time{}
	d.st.DegradedUntil = nil
	d.st.State = "ok"
	lat := end.Sub(start)
	d.st.latencySum += lat
	d.st.okPolls++
	d.st.LatencyMs = ms(d.st.latencySum) / float64(d.st.okPolls)
	d.st.last = PollOutcome{At: start, OK: true, LatencyMs: ms(lat)}
	d.st.lastSuccess = end
	records := d.emitLocked(r)
	d.unlock()
	mt := d.bus.m.cfg.Metrics
	mt.polled(d, lat, "")
	mt.up(d, true)
	mt.records(d, records)
	if recovered {
		d.bus.m.cfg.Logger.Info("adapter device answers again", "device", d.info.Name, "bus", d.bus.name)
		if fn := d.bus.m.onOnline.Load(); fn != nil {
			(*fn)(d.info.Name)
		}
	}
}

// emitLocked applies the report strategy and hands the reading to the
// sink; it returns the records stored.
func (d *device) emitLocked(r Reading) int {
	sink := d.bus.m.cfg.Sink
	ts := r.Time.UnixMilli()
	n := 0
	if vals := d.rep.pick(r.Time, r.Telemetry); len(vals) > 0 {
		if err := sink.Telemetry(d.bus.name, d.info, ts, vals); err != nil {
			d.bus.m.warn.Warn(d.bus.m.cfg.Logger, d.info.Name, "adapter telemetry not stored", "device", d.info.Name, "err", err)
			d.bus.m.cfg.Metrics.sinkFailed(d)
		} else {
			n++
		}
	}
	if attrs := d.rep.changedAttributes(r.Attributes); len(attrs) > 0 {
		if err := sink.Attributes(d.bus.name, d.info, ts, attrs); err != nil {
			d.bus.m.warn.Warn(d.bus.m.cfg.Logger, d.info.Name, "adapter attributes not stored", "device", d.info.Name, "err", err)
			d.bus.m.cfg.Metrics.sinkFailed(d)
			for _, kv := range attrs { // try again at the next poll
				delete(d.rep.attrs, kv.Key)
			}
		} else {
			n++
		}
	}
	d.st.Records += uint64(n)
	return n
}

// watch runs a Watcher source's event loop; events go through the report
// strategy like polls.
func (d *device) watch(ctx context.Context, w Watcher) {
	d.lock()
	d.watching = true
	d.unlock()
	backoff := time.Second
	for ctx.Err() == nil {
		err := w.Watch(ctx, func(r Reading) {
			if r.Time.IsZero() {
				r.Time = time.Now()
			}
			select {
			case d.mu <- struct{}{}:
			case <-ctx.Done():
				return
			}
			n := d.emitLocked(r)
			d.unlock()
			d.bus.m.cfg.Metrics.records(d, n)
		})
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			d.bus.m.warn.Warn(d.bus.m.cfg.Logger, d.info.Name+"/watch", "adapter watch failed; restarting", "device", d.info.Name, "err", err)
		}
		if Sleep(ctx, backoff) != nil {
			return
		}
		backoff = min(2*backoff, time.Minute)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
