package commands

import (
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

// device is a device with queued commands. It exists, with exactly one
// worker goroutine (serve), while its queue is not empty.
type device struct {
	name  string
	queue []*command    // guarded by Dispatcher.mu: admitted, in admission (offset) order
	wake  chan struct{} // (cap 1) DeviceOnline: the device may be reachable now
}

// enqueue queues c on its device, starting the device's worker if idle.
// Workers are bounded by MaxInFlight: each holds at least one command.
func (d *Dispatcher) enqueue(name string, c *command) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dev := d.mu.devices[name]
	if dev == nil {
		dev = &device{name: name, wake: make(chan struct{}, 1)}
		d.mu.devices[name] = dev
		d.wg.Add(1)
		go d.serve(dev)
	}
	dev.queue = append(dev.queue, c)
}

// serve is a device's worker: it delivers the device's commands one at a
// time, each after the previous one's response is durable, and exits when
// the queue is empty (or on Close).
func (d *Dispatcher) serve(dev *device) {
	defer d.wg.Done()
	for {
		d.mu.Lock()
		if len(dev.queue) == 0 {
			delete(d.mu.devices, dev.name)
			d.mu.Unlock()
			return
		}
		c := dev.queue[0]
		d.mu.Unlock()
		if !d.deliver(dev, c) {
			return
		}
		d.mu.Lock()
		dev.queue[0] = nil
		dev.queue = dev.queue[1:]
		d.mu.Unlock()
	}
}

// deliver sends c to its device until it is answered, times out, fails or
// expires, and appends the response. While the device is unreachable it
// waits for DeviceOnline or a doubling backoff (retryMin to retryMax),
// whichever comes first, never past the command's deadline. It reports
// false when the dispatcher is closing: c stays unfinished.
func (d *Dispatcher) deliver(dev *device, c *command) bool {
	timeout := c.spec.timeout
	if timeout == 0 {
		timeout = d.cfg.Timeout
	}
	backoff := d.retryMin
	waiting := false
	defer func() {
		if waiting {
			d.metrics.Waiting.Dec()
		}
	}()
	for {
		now := time.Now()
		if !now.Before(c.deadline) {
			d.metrics.Expired.Inc()
			return d.finish(c, result{status: StatusExpired, err: "commands: device not reachable before the command expired"})
		}
		select { // a wake from before this attempt is stale
		case <-dev.wake:
		default:
		}
		resp, err := d.sender.RPC(d.ctx, Request{Device: dev.name, Method: c.spec.method, Params: c.spec.params,
			Timeout: timeout, OneWay: c.spec.oneWay})
		var r result
		switch classify(d.ctx, err) {
		case outcomeStopped:
			return false
		case outcomeOffline:
			if !waiting {
				waiting = true
				d.metrics.Waiting.Inc()
			}
			t := time.NewTimer(min(backoff, c.deadline.Sub(now)))
			backoff = min(2*backoff, d.retryMax)
			select {
			case <-dev.wake:
			case <-t.C:
			case <-d.ctx.Done():
			}
			t.Stop()
			if d.ctx.Err() != nil {
				return false
			}
			continue
		case outcomeAnswered:
			d.metrics.Delivered.Inc()
			d.metrics.Answered.Inc()
			r = result{status: StatusOK, response: resp}
		case outcomeTimeout:
			d.metrics.Delivered.Inc()
			d.metrics.Failed.WithLabelValues("timeout").Inc()
			r = result{status: StatusTimeout, err: err.Error()}
		case outcomeUnknown:
			d.metrics.Invalid.WithLabelValues("unknown_device").Inc()
			r = result{status: StatusError, reason: ReasonUnknownDevice, err: err.Error()}
		case outcomeFailed:
			d.metrics.Failed.WithLabelValues("error").Inc()
			d.logLimited("rpc", "commands: delivery failed", "device", dev.name, "err", err)
			r = result{status: StatusError, reason: ReasonFailed, err: err.Error()}
		}
		return d.finish(c, r)
	}
}

// finish appends c's response and marks c finished once it is durable.
func (d *Dispatcher) finish(c *command, r result) bool {
	now := time.Now()
	recs := []commitlog.Record{responseRecord(d.cfg.Topic, c, r, now)}
	shrink := func() []commitlog.Record {
		sc, sr := shrunk(c, r)
		return []commitlog.Record{responseRecord(d.cfg.Topic, sc, sr, now)}
	}
	if !d.appendResponses(recs, shrink) {
		return false
	}
	d.markDone(c)
	return true
}

// shrunk is c and r without what can make a response too large for the
// responses topic: the device's answer and the copied request headers.
func shrunk(c *command, r result) (*command, result) {
	sc := *c
	sc.headers = nil
	if r.response != nil || r.status == StatusOK {
		r = result{status: StatusError, reason: ReasonTooLarge, err: "commands: the device's answer is too large for the responses topic"}
	}
	return &sc, r
}
