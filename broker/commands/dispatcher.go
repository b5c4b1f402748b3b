package commands

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/ratelog"
	"github.com/ferry-iot/ferry/broker/state"
)

// Dispatcher delivers the records of the commands topic to devices and
// appends their outcomes to the responses topic. See the package doc.
type Dispatcher struct {
	cfg       Config
	commands  *commitlog.Topic
	responses *commitlog.Topic
	st        *state.Store
	sender    Sender
	logger    *slog.Logger
	metrics   *Metrics
	limiter   *ratelog.Limiter

	// Timing, fixed by New (tests shorten them before Start).
	retryMin     time.Duration // first wait before retrying an unreachable device or a failed append
	retryMax     time.Duration // cap of the doubling wait
	growthPeriod time.Duration // how often the commands topic is checked for new partitions

	slots chan struct{} // one token per admitted, unfinished command: MaxInFlight
	kick  chan struct{} // (cap 1) a checkpoint has progress to store

	ctx    context.Context // cancelled by Close: stops readers, workers and RPCs
	cancel context.CancelFunc
	wg     sync.WaitGroup // readers, device workers and the checkpoint loop

	// life serializes Start and Close (Start reads the store, so it is
	// not d.mu).
	life    sync.Mutex
	started bool // guarded by life
	closed  bool // guarded by life

	mu struct {
		sync.Mutex
		parts   []*partState       // by partition id
		devices map[string]*device // devices with queued commands, each with one worker
	}
}

// partState is the progress of one commands partition.
type partState struct {
	p  *commitlog.Partition
	id int32

	// Guarded by Dispatcher.mu.
	next    int64              // offsets below are admitted: finished, or in pending
	pending map[int64]struct{} // admitted, response not yet durable
	dirty   bool               // changed since the checkpoint was stored

	redeliver []int64 // reader-owned: unfinished offsets of the stored checkpoint
}

// New checks cfg, creates the commands and responses topics when missing
// and returns a dispatcher that does nothing until Start. The log and the
// store must stay open until Close returned.
func New(cfg Config, lg *commitlog.Log, st *state.Store, sender Sender) (*Dispatcher, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if lg == nil || st == nil || sender == nil {
		return nil, errors.New("commands: new: log, store and sender are required")
	}
	cmds, err := ensureTopic(lg, cfg.Topic)
	if err != nil {
		return nil, err
	}
	resps, err := ensureTopic(lg, cfg.Responses)
	if err != nil {
		return nil, err
	}
	d := &Dispatcher{
		cfg: cfg, commands: cmds, responses: resps, st: st, sender: sender,
		logger: cfg.Logger, metrics: cfg.Metrics,
		retryMin: time.Second, retryMax: 30 * time.Second, growthPeriod: 10 * time.Second,
		slots: make(chan struct{}, cfg.MaxInFlight),
		kick:  make(chan struct{}, 1),
	}
	d.limiter = ratelog.New()
	d.mu.devices = map[string]*device{}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	return d, nil
}

// ensureTopic returns the named topic, creating it when missing. An
// existing topic keeps its configuration (the daemon or a Kafka client may
// have created it on purpose with more partitions).
func ensureTopic(l *commitlog.Log, name string) (*commitlog.Topic, error) {
	t, err := l.Topic(name)
	if err == nil {
		return t, nil
	}
	if !errors.Is(err, commitlog.ErrUnknownTopic) {
		return nil, fmt.Errorf("commands: topic %s: %w", name, err)
	}
	t, err = l.CreateTopic(name, topicConfig())
	if errors.Is(err, commitlog.ErrTopicExists) {
		t, err = l.Topic(name)
	}
	if err != nil {
		return nil, fmt.Errorf("commands: create topic %s: %w", name, err)
	}
	return t, nil
}

// Start loads each partition's checkpoint, sets the retention holds and
// starts reading. A damaged checkpoint is an error (rather than a silent
// replay of the whole topic).
func (d *Dispatcher) Start() error {
	d.life.Lock()
	defer d.life.Unlock()
	if d.started || d.closed {
		return ErrClosed
	}
	d.started = true
	for _, p := range d.commands.Partitions() {
		if err := d.startPartition(p); err != nil {
			d.cancel()
			d.wg.Wait()
			return err
		}
	}
	d.wg.Add(1)
	go d.loop()
	return nil
}

// startPartition resumes one partition from its checkpoint and starts its
// reader.
func (d *Dispatcher) startPartition(p *commitlog.Partition) error {
	cp, found, err := d.loadCheckpoint(p.ID())
	if err != nil {
		return err
	}
	ps := &partState{p: p, id: p.ID(), pending: map[int64]struct{}{}}
	if found {
		ps.next, ps.redeliver = cp.Next, cp.Pending
		for _, o := range cp.Pending {
			ps.pending[o] = struct{}{}
		}
	} else {
		// A new dispatcher starts at the oldest command: whatever is
		// there is answered (delivered, or expired), never skipped.
		ps.next = p.StartOffset()
		cp.Next = ps.next
	}
	p.SetHold(holdOwner, cp.low())
	d.mu.Lock()
	d.mu.parts = append(d.mu.parts, ps)
	d.mu.Unlock()
	d.wg.Add(1)
	go d.readLoop(ps)
	return nil
}

// Close stops reading, cancels the RPCs in flight, waits for every
// goroutine and stores the checkpoints. Commands whose response was not
// yet durable stay unfinished and are redelivered by the next Start. The
// retention holds stay: the log keeps what the next Start needs.
func (d *Dispatcher) Close() error {
	d.life.Lock()
	defer d.life.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	d.cancel()
	d.wg.Wait()
	d.metrics.Pending.Sub(float64(len(d.slots)))
	if err := d.persist(); err != nil {
		return fmt.Errorf("commands: close: %w", err)
	}
	return nil
}

// DeviceOnline tells the dispatcher that device may have become reachable,
// so a command waiting for it is tried at once instead of at the end of
// its backoff. It never blocks; wire it to (*mqtt.Server).OnRPCReady.
func (d *Dispatcher) DeviceOnline(device string) {
	d.mu.Lock()
	dev := d.mu.devices[device]
	d.mu.Unlock()
	if dev != nil {
		select {
		case dev.wake <- struct{}{}:
		default:
		}
	}
}

// loop stores checkpoints when commands finish (coalescing bursts into one
// transaction), retries a failed store with backoff, and starts readers
// for partitions added to the commands topic.
func (d *Dispatcher) loop() {
	defer d.wg.Done()
	growth := time.NewTicker(d.growthPeriod)
	defer growth.Stop()
	retry := time.NewTimer(0)
	<-retry.C
	backoff := d.retryMin
	for {
		select {
		case <-d.ctx.Done():
			retry.Stop()
			return
		case <-growth.C:
			d.startNewPartitions()
			continue
		case <-d.kick:
		case <-retry.C:
		}
		if err := d.persist(); err != nil {
			d.metrics.Errors.WithLabelValues("checkpoint").Inc()
			d.logLimited("checkpoint", "commands: storing the checkpoint failed, retrying", "err", err, "retry_in", backoff)
			retry.Reset(backoff)
			backoff = min(2*backoff, d.retryMax)
			continue
		}
		backoff = d.retryMin
	}
}

// startNewPartitions starts readers for partitions the commands topic
// gained (Kafka's CreatePartitions) since Start.
func (d *Dispatcher) startNewPartitions() {
	d.mu.Lock()
	have := len(d.mu.parts)
	d.mu.Unlock()
	parts := d.commands.Partitions()
	for _, p := range parts[min(have, len(parts)):] {
		if err := d.startPartition(p); err != nil {
			d.metrics.Errors.WithLabelValues("read").Inc()
			d.logLimited("partition", "commands: cannot start reading a new partition", "partition", p.ID(), "err", err)
			return
		}
		d.logger.Info("commands: reading new partition", "topic", d.cfg.Topic, "partition", p.ID())
	}
}

// markDone records that cs's responses are durable: they leave the
// pending sets, give back their slots, and the checkpoint loop is kicked.
func (d *Dispatcher) markDone(cs ...*command) {
	d.mu.Lock()
	for _, c := range cs {
		delete(c.part.pending, c.offset)
		c.part.dirty = true
	}
	d.mu.Unlock()
	for range cs {
		<-d.slots
	}
	d.metrics.Pending.Sub(float64(len(cs)))
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// appendResponses appends response records and waits until they are
// durable, retrying with backoff what may succeed later. It reports
// whether the commands are finished: false means the dispatcher is closing
// (or the log is gone) and they stay unfinished.
func (d *Dispatcher) appendResponses(recs []commitlog.Record, shrink func() []commitlog.Record) bool {
	backoff := d.retryMin
	for {
		_, err := d.responses.Append(d.ctx, recs).Wait(d.ctx)
		if err == nil {
			return true
		}
		if errors.Is(err, commitlog.ErrRecordTooLarge) && shrink != nil {
			recs, shrink = shrink(), nil // once more without the device's payload
			continue
		}
		switch onAppendError(d.ctx, err) {
		case appendStop:
			if d.ctx.Err() == nil {
				d.logLimited("append_stop", "commands: cannot append responses, stopping", "err", err)
			}
			return false
		case appendDrop:
			d.metrics.Errors.WithLabelValues("append").Inc()
			d.logLimited("append_drop", "commands: response cannot be stored, dropped", "err", err)
			return true
		}
		d.metrics.Errors.WithLabelValues("append").Inc()
		d.logLimited("append", "commands: appending responses failed, retrying", "err", err, "retry_in", backoff)
		if !d.sleep(backoff) {
			return false
		}
		backoff = min(2*backoff, d.retryMax)
	}
}

// sleep waits for d or Close; it reports false on Close.
func (d *Dispatcher) sleep(dur time.Duration) bool {
	t := time.NewTimer(dur)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-d.ctx.Done():
		return false
	}
}

// logLimited logs a warning at most once a minute per reason.
func (d *Dispatcher) logLimited(reason, msg string, args ...any) {
	d.limiter.Warn(d.logger, reason, msg, args...)
}

// progress returns a partition's read position and the number of its
// unfinished commands (tests).
func (d *Dispatcher) progress(partition int32) (next int64, pending int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, ps := range d.mu.parts {
		if ps.id == partition {
			return ps.next, len(ps.pending)
		}
	}
	return -1, 0
}
