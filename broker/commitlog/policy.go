package commitlog

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// The commit policy decides when the committer cuts the next cycle.
//
// Cutting at once whenever the syncer is free is what a saturated disk
// wants, and what wears flash out at fleet rates: a thousand devices that
// each publish once a second get a thousand fsyncs a second, each
// rewriting a partly filled page and the inode's block for one small
// record (and each record its own batch, too small for zstd). So a cycle
// waits for company, within a budget — like PostgreSQL's commit_delay, and
// like its commit_siblings only while there is company to wait for:
//
//   - a partition holds a full batch, or the queues are expected to write
//     syncBytes (their bytes times the recent ratio of bytes written to
//     bytes queued: compression): cut now, it is worth an fsync;
//   - the syncer is in an fsync: gather until just before it ends
//     (paceWait), since a cycle cut now would wait for it anyway;
//   - (nearly) every producer seen in the last second or so has an append
//     not yet acknowledged: cut now, nobody else is coming (they all wait
//     for acknowledgements — a closed loop, such as a device draining its
//     backlog or a synchronous Kafka producer). A producer whose
//     connection closed is retired at once (Source.Close);
//   - otherwise gather until the oldest queued append has waited the
//     acknowledgement delay budget (WithAckDelay).
//
// Producers are told apart by the Source an append's context carries
// (WithSource); appends without one count as producers that wait, so a
// caller that names no sources gets the cut-at-once behaviour.

// Source identifies one producer (an MQTT connection, a Kafka client
// connection) to the commit policy. Its zero value is ready; it must not
// be copied after first use. One Source serves any number of goroutines.
type Source struct {
	// Detached marks a producer that does not wait for its appends to be
	// acknowledged before it produces again (a device adapter polling on
	// its own schedule): it counts among the active producers, so waiting
	// ones are not cut for at once, but never as a waiting one, so its
	// appends are gathered within the budget like a fleet's. Set it
	// before the first append.
	Detached bool

	epoch       atomic.Int64 // the activity epoch it was last counted in, +1
	outstanding atomic.Int64 // appends not yet completed
	before      atomic.Int64 // the epoch it was counted in before that, +1
	committer   atomic.Pointer[committer]
}

// Close retires src: the commit policy stops counting it among the active
// producers (a device that disconnected will not publish again on this
// connection, and waiting for it would cost every other producer the
// whole budget until it aged out). Appends already made complete as
// usual. Close may be called more than once.
func (src *Source) Close() {
	if c := src.committer.Swap(nil); c != nil {
		c.sources.forget(src)
		c.wakeFull() // the others may all be waiting now
	}
}

type sourceKey struct{}

// WithSource returns ctx carrying src: appends made with the returned
// context are src's. The MQTT server and the Kafka listener give each
// connection one.
func WithSource(ctx context.Context, src *Source) context.Context {
	return context.WithValue(ctx, sourceKey{}, src)
}

func sourceOf(ctx context.Context) *Source {
	if ctx == nil {
		return nil
	}
	s, _ := ctx.Value(sourceKey{}).(*Source)
	return s
}

// activityEpoch is the span in which producers are counted as active: a
// device publishing once a second appends in every epoch.
const activityEpochShift = 30 // 2^30 ns ≈ 1.07 s

// sourceCounts counts distinct sources per activity epoch.
type sourceCounts struct {
	mu        sync.Mutex
	epoch     int64 // the current epoch
	cur, prev int   // sources counted in it and in the one before
	active    atomic.Int64
}

// seen counts src's first append in epoch e.
func (sc *sourceCounts) seen(src *Source, e int64) {
	sc.mu.Lock()
	old := src.epoch.Load()
	if old == e+1 { // another goroutine of src counted it
		sc.mu.Unlock()
		return
	}
	src.before.Store(old)
	src.epoch.Store(e + 1)
	switch {
	case e == sc.epoch:
		sc.cur++
	case e == sc.epoch+1:
		sc.prev, sc.cur, sc.epoch = sc.cur, 1, e
	case e > sc.epoch:
		sc.prev, sc.cur, sc.epoch = 0, 1, e
	default: // a late count from the epoch before: still activity
		sc.prev++
	}
	sc.active.Store(int64(max(sc.cur, sc.prev)))
	sc.mu.Unlock()
}

// forget uncounts a retired source from the epochs it was counted in.
func (sc *sourceCounts) forget(src *Source) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	for _, e := range []int64{src.epoch.Load() - 1, src.before.Load() - 1} {
		switch {
		case e < 0:
		case e == sc.epoch && sc.cur > 0:
			sc.cur--
		case e == sc.epoch-1 && sc.prev > 0:
			sc.prev--
		}
	}
	sc.active.Store(int64(max(sc.cur, sc.prev)))
}

// activeAt is the number of sources active around epoch e: those counted
// in e or in the epoch before, whichever is more.
func (sc *sourceCounts) activeAt(e int64) int64 {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	switch {
	case e == sc.epoch:
		return int64(max(sc.cur, sc.prev))
	case e == sc.epoch+1:
		return int64(sc.cur)
	case e > sc.epoch:
		return 0
	}
	return int64(max(sc.cur, sc.prev))
}

// policy is the committer's commit policy state. Appenders write the
// atomics (noteAppend); the committer owns the rest.
type policy struct {
	pendRaw      atomic.Int64 // bytes queued in all partitions, not yet taken by a cycle
	firstPending atomic.Int64 // monoNow of the oldest append not yet taken, 0 when none
	fullNow      atomic.Bool  // a partition holds a full batch
	cutRaw       atomic.Int64 // queued bytes expected to make syncBytes of output
	waiting      atomic.Int64 // sources with an append not yet completed
	sources      sourceCounts

	outRatio    float64 // EWMA of bytes written per byte queued (committer)
	gatherTimer *time.Timer
}

// noteAppend records an append of n queued bytes by src (nil: anonymous)
// for the commit policy. It runs on the appending goroutine after the
// partition's lock is released.
func (c *committer) noteAppend(n int, src *Source) {
	now := monoNow()
	if c.firstPending.Load() == 0 {
		c.firstPending.CompareAndSwap(0, now)
	}
	wake := false
	if src != nil {
		if src.committer.Load() == nil {
			src.committer.Store(c)
		}
		if e := now >> activityEpochShift; src.epoch.Load() != e+1 {
			c.sources.seen(src, e)
		}
		if !src.Detached && src.outstanding.Add(1) == 1 {
			wake = allWaiting(c.waiting.Add(1), c.sources.active.Load())
		}
	}
	cut := c.cutRaw.Load()
	if v := c.pendRaw.Add(int64(n)); v >= cut && v-int64(n) < cut {
		wake = true
	}
	if wake {
		c.wakeFull()
	}
}

// noteDone records that an append of src completed (any goroutine).
func (c *committer) noteDone(src *Source) {
	if src != nil && !src.Detached && src.outstanding.Add(-1) == 0 {
		c.waiting.Add(-1)
	}
}

// startGathering begins the gathering of a new cycle as one is cut.
func (c *committer) startGathering() {
	c.firstPending.Store(0)
	c.fullNow.Store(false)
}

// gather waits until the next cycle should be cut (cutWait) or the log
// closes.
func (c *committer) gather() {
	for {
		wait := c.cutWait(monoNow())
		if wait <= 0 {
			return
		}
		if c.gatherTimer == nil {
			c.gatherTimer = time.NewTimer(wait)
		} else {
			c.gatherTimer.Reset(wait)
		}
		select {
		case <-c.gatherTimer.C:
		case <-c.full:
			c.gatherTimer.Stop()
		case <-c.log.quit:
			c.gatherTimer.Stop()
			return
		}
	}
}

// cutWait is how long the committer should keep gathering appends before
// cutting the next cycle, at monoNow now; 0 cuts it now. The rules are in
// the comment at the top of this file.
func (c *committer) cutWait(now int64) time.Duration {
	if c.fullNow.Load() || c.pendRaw.Load() >= c.cutRaw.Load() {
		return 0
	}
	wait := c.paceWait()
	first := c.firstPending.Load()
	budget := c.log.opts.ackDelay
	if budget <= 0 || first == 0 {
		return wait
	}
	if allWaiting(c.waiting.Load(), c.sources.activeAt(now>>activityEpochShift)) {
		return wait // every producer is waiting (or none is known)
	}
	if due := time.Duration(first-now) + budget; due >= minGatherWait {
		wait = max(wait, due)
	}
	return wait
}

// allWaiting reports whether waiting producers are (nearly) all of the
// active ones: seven in eight. Exactly all would let one producer that is
// active but not sending — between reconnects, or just slow to answer its
// acknowledgements — cost every cycle of a closed loop the whole budget;
// at fleet rates only the producers of the last budget's span wait (a
// seventh of them at 140 ms for devices publishing once a second).
func allWaiting(waiting, active int64) bool {
	return waiting*8 >= active*7
}

// minGatherWait: a wait shorter than this is not worth a timer.
const minGatherWait = 100 * time.Microsecond

// policyAfterCycle updates the commit policy's estimate of compression
// after a cycle that took queued bytes of appends and wrote written bytes.
func (c *committer) policyAfterCycle(queued, written int64) {
	if queued <= 0 || written <= 0 {
		return
	}
	r := float64(written) / float64(queued)
	c.outRatio += (r - c.outRatio) / 8
	c.cutRaw.Store(int64(float64(c.log.opts.syncBytes) / max(c.outRatio, 1.0/64)))
}
