package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/ratelog"
	"github.com/ferry-iot/ferry/broker/state"
)

// Backlog orders.
const (
	OldestFirst = "oldest_first"
	LiveFirst   = "live_first"
)

// DefaultRejectedTopic is the local topic that receives the provenance of
// records the upstream refused for good.
const DefaultRejectedTopic = "bridge_rejected"

// NoLinger as Config.Linger sends records arriving after an idle spell at
// once (zero means the default linger; any negative value means none).
const NoLinger time.Duration = -1

// Config configures an Engine. Zero fields take the defaults noted.
type Config struct {
	Name   string   // the bridge's name: hold owner "bridge.<name>", metric label, state keys
	Topics []string // edge topics to replicate (every partition)

	Order         string // OldestFirst (default) or LiveFirst
	LiveThreshold int64  // live_first: records behind before a partition is split (default 10000)

	// MaxBatchBytes bounds the key, value and header bytes of one Send
	// (default 4 MiB; a Conn's Limits may lower it). The engine holds at
	// most two batches: the one in flight and the next, read meanwhile.
	MaxBatchBytes   int
	MaxBatchRecords int           // per Send (default 50000; a Conn's Limits may lower it)
	Linger          time.Duration // after idling, wait this long for more records (0: default 50 ms; NoLinger: none)
	RateLimit       int64         // bytes per second handed to the target; 0: unlimited

	StallTimeout       time.Duration // a Send or Connect taking longer is a stalled link (default 60 s)
	Backoff            time.Duration // first retry delay (default 500 ms)
	MaxBackoff         time.Duration // cap (default 60 s)
	CheckpointInterval time.Duration // local checkpoint writes at most this often (default 1 s)

	// RejectedTopic is the local topic (created on the first rejection)
	// that receives one record per record the upstream refused for good:
	// key "<bridge>/<topic>/<partition>/<offset>", value its provenance
	// and the reason as JSON (default DefaultRejectedTopic).
	RejectedTopic string

	Logger  *slog.Logger
	Metrics *Metrics // nil: kept, not registered
}

func (c *Config) ensureDefaults() {
	if c.Order == "" {
		c.Order = OldestFirst
	}
	if c.LiveThreshold <= 0 {
		c.LiveThreshold = 10000
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = 4 << 20
	}
	if c.MaxBatchRecords <= 0 {
		c.MaxBatchRecords = 50000
	}
	if c.Linger == 0 {
		c.Linger = 50 * time.Millisecond
	}
	if c.StallTimeout <= 0 {
		c.StallTimeout = 60 * time.Second
	}
	if c.Backoff <= 0 {
		c.Backoff = 500 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 60 * time.Second
	}
	c.MaxBackoff = max(c.MaxBackoff, c.Backoff)
	if c.CheckpointInterval <= 0 {
		c.CheckpointInterval = time.Second
	}
	if c.RejectedTopic == "" {
		c.RejectedTopic = DefaultRejectedTopic
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
}

// Validate reports every problem with c.
func (c *Config) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("bridge: name is empty"))
	}
	if len(c.Topics) == 0 {
		errs = append(errs, errors.New("bridge: no topics"))
	}
	if c.Order != "" && c.Order != OldestFirst && c.Order != LiveFirst {
		errs = append(errs, fmt.Errorf("bridge: order %q is not %s or %s", c.Order, OldestFirst, LiveFirst))
	}
	if c.RateLimit < 0 {
		errs = append(errs, fmt.Errorf("bridge: rate limit %d is negative", c.RateLimit))
	}
	rt := c.RejectedTopic
	if rt == "" {
		rt = DefaultRejectedTopic
	}
	for _, t := range c.Topics {
		if t == rt {
			errs = append(errs, fmt.Errorf("bridge: topic %s is the rejected-records topic; it cannot be replicated by the same bridge", t))
		}
	}
	return errors.Join(errs...)
}

// Link states.
const (
	StateConnecting = "connecting"
	StateConnected  = "connected"
	StateBackingOff = "backing_off"
	StateStalled    = "stalled"
	StateStopped    = "stopped"
)

// Engine replicates the configured topics to one target.
type Engine struct {
	// resends are the positions Resend asked for, applied at the next
	// connect (guarded by mu); resendKick ends the session for it.
	resends    map[TP]int64
	resendKick chan struct{}

	cfg     Config
	log     *commitlog.Log
	st      *state.Store
	target  Target
	metrics *Metrics
	logger  *slog.Logger
	rate    *rate.Limiter // bytes per second to the upstream (Config.RateLimit)
	owner   string        // retention hold owner

	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	started bool

	// Seams for tests, set before Start.
	wait       func(ctx context.Context, d time.Duration) // one backoff sleep
	jitter     func() float64                             // in [0, 1)
	onPrefetch func()                                     // at the start of every prefetch goroutine
	onIdle     func()                                     // when waitData is about to block (run goroutine)
	onJoin     func()                                     // before the run goroutine waits for a prefetch
	onRead     func(tp TP, records int)                   // after each log read of a fill (run or prefetch goroutine)

	// Owned by the run goroutine.
	cursors   map[TP]*cursor
	lastSaved time.Time
	dirty     bool
	lim       limits                    // this session's batch limits
	rejects   map[TP]map[int64]string   // rejected records to pass over when reached (→ reason); read by fills
	isolate   isolation                 // suspect records being isolated
	recorded  map[TP]map[int64]struct{} // rejected records whose provenance is in the rejected topic
	rejTopic  *commitlog.Topic
	rejLog    *ratelog.Limiter
	lastFatal string // the misconfiguration last logged
	wireSeen  int64  // the target's WireBytes at the last look

	mu     sync.Mutex
	status Status // guarded by mu; Partitions filled on read
	parts  []partSnap
}

type cursor struct {
	tp   TP
	p    *commitlog.Partition
	prog Progress
	// handed covers every offset handed to a Send so far (acknowledged or
	// not): an item it covers is sent again (RecordsResent).
	handed Progress
}

type partSnap struct {
	tp   TP
	p    *commitlog.Partition
	prog Progress
}

// New prepares an engine; Start runs it.
func New(cfg Config, lg *commitlog.Log, st *state.Store, target Target) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.ensureDefaults()
	e := &Engine{cfg: cfg, log: lg, st: st, target: target, metrics: cfg.Metrics, logger: cfg.Logger,
		owner: "bridge." + cfg.Name, cursors: map[TP]*cursor{}, done: make(chan struct{}),
		resendKick: make(chan struct{}, 1), resends: map[TP]int64{},
		rejects: map[TP]map[int64]string{}, recorded: map[TP]map[int64]struct{}{}, jitter: rand.Float64,
		rejLog: ratelog.New()}
	e.wait = e.timerWait
	e.metrics.touch(cfg.Name)
	if cfg.RateLimit > 0 {
		e.rate = rate.NewLimiter(rate.Limit(cfg.RateLimit), int(max(cfg.RateLimit, int64(cfg.MaxBatchBytes))))
	}
	if wc, ok := target.(WireCounter); ok {
		e.wireSeen = wc.WireBytes()
	}
	e.lim = limits{batchBytes: cfg.MaxBatchBytes, batchRecords: cfg.MaxBatchRecords}
	e.status = Status{Name: cfg.Name, State: StateConnecting, Order: cfg.Order}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	// Hold what the stored checkpoints say is not yet upstream before any
	// retention pass can run.
	if err := e.refreshPartitions(); err != nil {
		return nil, err
	}
	return e, nil
}

// Start runs the engine until Close.
func (e *Engine) Start() {
	e.started = true
	go e.run()
}

// Close stops the engine, abandoning a Send in flight (its records are
// sent again after restart), writes the local checkpoints and waits.
func (e *Engine) Close() error {
	e.cancel()
	if e.started {
		<-e.done
	}
	e.setState(StateStopped, nil)
	return e.saveCheckpoints(true)
}

func (e *Engine) run() {
	defer close(e.done)
	backoff := e.cfg.Backoff
	for e.ctx.Err() == nil {
		e.setState(StateConnecting, nil)
		conn, err := e.connect()
		e.countWire()
		if err != nil {
			if e.ctx.Err() != nil {
				return
			}
			e.failed("connect", err, false, &backoff)
			e.sleep(&backoff)
			continue
		}
		e.setState(StateConnected, nil)
		e.metrics.Connects.WithLabelValues(e.cfg.Name).Inc()
		progressed, stalled, err := e.pump(conn)
		conn.Close()
		e.countWire()
		if e.ctx.Err() != nil {
			return
		}
		if errors.Is(err, errResend) {
			continue // a new session that starts where Resend said
		}
		if progressed {
			backoff = e.cfg.Backoff
		}
		e.failed(failureKind(stalled), err, stalled, &backoff)
		e.sleep(&backoff)
	}
}

func failureKind(stalled bool) string {
	if stalled {
		return "stalled"
	}
	return "send"
}

// connect opens a session, takes its limits and resumes every cursor from
// the upstream's checkpoints where it keeps them.
func (e *Engine) connect() (Conn, error) {
	ctx, cancel := context.WithTimeout(e.ctx, e.cfg.StallTimeout)
	defer cancel()
	if err := e.refreshPartitions(); err != nil {
		return nil, err
	}
	conn, err := e.target.Connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	e.lim = limits{batchBytes: e.cfg.MaxBatchBytes, batchRecords: e.cfg.MaxBatchRecords}
	if l, ok := conn.(Limited); ok {
		e.lim = e.lim.with(l.Limits())
	}
	tps := make([]TP, 0, len(e.cursors))
	for tp := range e.cursors {
		tps = append(tps, tp)
	}
	sort.Slice(tps, func(i, j int) bool { return less(tps[i], tps[j]) })
	var up map[TP]Progress
	if cp, ok := conn.(Checkpointer); ok {
		if up, err = cp.Checkpoints(ctx, tps); err != nil {
			conn.Close()
			return nil, fmt.Errorf("read upstream checkpoints: %w", err)
		}
	}
	_, checkpoints := conn.(Checkpointer)
	e.mu.Lock()
	resends := e.resends
	e.resends = map[TP]int64{}
	e.mu.Unlock()
	for _, tp := range tps {
		c := e.cursors[tp]
		p, ok := up[tp]
		if checkpoints {
			e.checkUpstreamReset(tp, c.prog, p, ok)
		}
		if ok && p != c.prog {
			e.logger.Info("bridge: resuming from the upstream checkpoint", "bridge", e.cfg.Name, "partition", tp.String(),
				"upstream_next", p.Next, "local_next", c.prog.Next)
			c.prog = p
			e.dirty = true
		}
		if off, ok := resends[tp]; ok {
			e.logger.Warn("bridge: sending again from the offset asked for", "bridge", e.cfg.Name, "partition", tp.String(),
				"from", off, "was_at", c.prog.Next)
			c.prog = Progress{Next: off}
			e.dirty = true
		}
		c.p.SetHold(e.owner, c.prog.Next)
	}
	e.publishStatus()
	return conn, nil
}

// errResend ends a session so the next one starts where Resend said.
var errResend = errors.New("bridge: sending again from an offset, as asked")

// Resend makes the bridge send partition's records again from offset
// (between the partition's first stored offset and its end): at the next
// session, which it starts now, the partition's cursor moves there, over
// the upstream's checkpoint and the local one. For an upstream that was
// reset (Status.UpstreamReset) and must get the edge's history again.
func (e *Engine) Resend(topic string, partition int32, offset int64) error {
	if !slices.Contains(e.cfg.Topics, topic) {
		return fmt.Errorf("%w: topic %q is not one bridge %s replicates (%v)", ErrNoSuchPartition, topic, e.cfg.Name, e.cfg.Topics)
	}
	t, err := e.log.Topic(topic)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoSuchPartition, err)
	}
	p, err := t.Partition(partition)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoSuchPartition, err)
	}
	if start, end := p.StartOffset(), p.HighWatermark(); offset < start || offset > end {
		return fmt.Errorf("%w: offset %d: %s/%d holds %d..%d", ErrBadOffset, offset, topic, partition, start, end)
	}
	e.mu.Lock()
	e.resends[TP{topic, partition}] = offset
	e.mu.Unlock()
	select {
	case e.resendKick <- struct{}{}:
	default:
	}
	return nil
}

// Resend's refusals.
var (
	ErrNoSuchPartition = errors.New("bridge: no such partition")
	ErrBadOffset       = errors.New("bridge: offset outside the partition")
)

// checkUpstreamReset says loudly when the upstream holds less than this
// bridge sent: no checkpoint for a partition the bridge had sent from (a
// reinstalled cluster, a deleted checkpoint topic), or one behind the
// local checkpoint. With none the bridge resumes from its local
// checkpoint — the records before it are not sent again unless asked
// (Resend, POST /api/v1/bridges/{name}/resend); with one behind, from the
// upstream's, sending the difference again.
func (e *Engine) checkUpstreamReset(tp TP, local, upstream Progress, found bool) {
	var msg string
	switch {
	case local.Next == 0:
		return // nothing sent yet
	case !found:
		msg = fmt.Sprintf("the upstream has no checkpoint for %s, though this bridge sent it up to offset %d: the upstream was reset (reinstalled, or its checkpoint topic deleted); resuming from the local checkpoint %d — to send the records before it again, POST /api/v1/bridges/%s/resend",
			tp, local.Next, local.Next, e.cfg.Name)
	case upstream.Next < local.Next:
		msg = fmt.Sprintf("the upstream's checkpoint for %s (%d) is behind this bridge's (%d): resuming from the upstream's, sending %d offsets again",
			tp, upstream.Next, local.Next, local.Next-upstream.Next)
	default:
		return
	}
	e.metrics.UpstreamResets.WithLabelValues(e.cfg.Name).Inc()
	e.mu.Lock()
	e.status.UpstreamReset = time.Now().UTC().Format(time.RFC3339) + ": " + msg
	e.mu.Unlock()
	e.logger.Error("bridge: "+msg, "bridge", e.cfg.Name)
}

// refreshPartitions picks up the configured topics' partitions (topics
// may appear or grow) and loads their local checkpoints.
func (e *Engine) refreshPartitions() error {
	for _, name := range e.cfg.Topics {
		t, err := e.log.Topic(name)
		if errors.Is(err, commitlog.ErrUnknownTopic) {
			continue // not created yet: picked up later
		}
		if err != nil {
			return fmt.Errorf("bridge %s: topic %s: %w", e.cfg.Name, name, err)
		}
		for _, p := range t.Partitions() {
			tp := TP{name, p.ID()}
			if _, ok := e.cursors[tp]; ok {
				continue
			}
			prog, err := e.loadCheckpoint(tp)
			if err != nil {
				return err
			}
			c := &cursor{tp: tp, p: p, prog: prog}
			e.cursors[tp] = c
			p.SetHold(e.owner, prog.Next)
		}
	}
	e.publishStatus()
	return nil
}

// sleep waits out the backoff with ±20 % jitter, then doubles it up to
// MaxBackoff.
func (e *Engine) sleep(backoff *time.Duration) {
	e.setState(StateBackingOff, nil)
	e.wait(e.ctx, time.Duration(float64(*backoff)*(0.8+0.4*e.jitter())))
	*backoff = min(2**backoff, e.cfg.MaxBackoff)
}

func (e *Engine) timerWait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// pump sends batches until a Send fails or the engine stops. While a
// batch is on its way the next one is read from the log (prefetch), so
// the upstream's round trips and the log's decompression overlap.
func (e *Engine) pump(conn Conn) (progressed, stalled bool, err error) {
	var next *Batch
	for {
		select {
		case <-e.resendKick:
			return progressed, false, errResend
		default:
		}
		b := next
		next = nil
		if b == nil {
			if b, err = e.nextBatch(); err != nil {
				return progressed, false, err
			}
		}
		if err := e.deadLetter(b); err != nil {
			return progressed, false, err
		}
		if e.rate != nil {
			if err := e.waitRate(b.Bytes); err != nil {
				return progressed, false, err
			}
		}
		e.hand(b)
		pre := e.prefetch(b)
		ctx, cancel := context.WithTimeout(e.ctx, e.cfg.StallTimeout)
		start := time.Now()
		e.waiting(&start)
		// Long before the watchdog gives up, the status says the link is
		// silent: an upstream that died is not shown "connected".
		warned := make(chan struct{})
		warn := time.AfterFunc(e.cfg.StallTimeout/4, func() {
			defer close(warned)
			e.setState(StateStalled, fmt.Errorf("no acknowledgement for %v with %d records on their way (the watchdog reconnects at %v)",
				e.cfg.StallTimeout/4, len(b.Items), e.cfg.StallTimeout))
		})
		err = conn.Send(ctx, b)
		if !warn.Stop() {
			<-warned // it ran: let it finish before the state moves on
		}
		e.waiting(nil)
		stalled = errors.Is(ctx.Err(), context.DeadlineExceeded) && e.ctx.Err() == nil
		cancel()
		if err == nil {
			e.setState(StateConnected, nil) // after a slow acknowledgement, shown stalled meanwhile
		}
		if e.onJoin != nil {
			e.onJoin()
		}
		next = <-pre // joined before the cursors move
		e.countWire()
		if rej := (*RejectedError)(nil); err != nil && !stalled && errors.As(err, &rej) && e.rejected(b, rej) {
			next = nil // it follows b: read again from the cursors
			continue
		}
		if err != nil {
			if stalled {
				err = fmt.Errorf("no acknowledgement for %v with records waiting (stalled link): %w", e.cfg.StallTimeout, err)
			}
			return progressed, stalled, err
		}
		progressed = true
		e.metrics.SendSeconds.WithLabelValues(e.cfg.Name).Observe(time.Since(start).Seconds())
		e.delivered(b)
	}
}

// hand notes b as handed to a Send: items handed before are counted as
// resent.
func (e *Engine) hand(b *Batch) {
	var resent int64
	var c *cursor // items come in runs of one partition: one lookup per run
	for i := range b.Items {
		it := &b.Items[i]
		if c == nil || c.tp != it.TP {
			c = e.cursors[it.TP]
		}
		if c.handed.covers(it.Record.Offset) {
			resent++
		}
	}
	for tp, p := range b.Progress {
		c := e.cursors[tp]
		c.handed = union(c.handed, p)
	}
	if resent > 0 {
		e.metrics.Resent.WithLabelValues(e.cfg.Name).Add(float64(resent))
		e.mu.Lock()
		e.status.RecordsResent += resent
		e.mu.Unlock()
	}
}

// prefetch fills, on a goroutine it owns until the result is received,
// the batch that follows b: from where b leaves each partition, or the
// cursor. It yields nil when nothing follows yet (nextBatch then waits and
// lingers as usual), on a read error (nextBatch meets it again) or when
// the engine stops. The fill reads only the plan and the log, never the
// engine's mutable state, and the run goroutine changes neither the
// cursors nor the plan's maps before it has received the result.
func (e *Engine) prefetch(b *Batch) <-chan *Batch {
	pl := e.plan()
	for tp, p := range b.Progress {
		pl.from[tp] = p
	}
	ch := make(chan *Batch, 1)
	go func() {
		if e.onPrefetch != nil {
			e.onPrefetch()
		}
		nb, err := e.fill(pl)
		if err != nil || (len(nb.Items) == 0 && len(nb.Progress) == 0) {
			nb = nil
		}
		ch <- nb
	}()
	return ch
}

func (e *Engine) waitRate(n int) error {
	for n > 0 {
		step := min(n, e.rate.Burst())
		if err := e.rate.WaitN(e.ctx, step); err != nil {
			return err
		}
		n -= step
	}
	return nil
}

// delivered advances the cursors past an acknowledged batch.
func (e *Engine) delivered(b *Batch) {
	for tp, prog := range b.Progress {
		c := e.cursors[tp]
		c.prog = prog
		c.p.SetHold(e.owner, prog.Next)
	}
	for _, s := range b.drops {
		n := s.to - s.from
		e.metrics.Dropped.WithLabelValues(e.cfg.Name).Add(float64(n))
		e.mu.Lock()
		e.status.RecordsDropped += n
		e.mu.Unlock()
		e.logger.Warn("bridge: records were dropped by retention before replication", "bridge", e.cfg.Name,
			"partition", s.tp.String(), "from", s.from, "to", s.to, "records", n)
	}
	e.countRejected(b)
	e.dirty = true
	e.metrics.Records.WithLabelValues(e.cfg.Name).Add(float64(len(b.Items)))
	e.metrics.Bytes.WithLabelValues(e.cfg.Name).Add(float64(b.Bytes))
	e.metrics.Batches.WithLabelValues(e.cfg.Name).Inc()
	e.mu.Lock()
	e.status.RecordsSent += int64(len(b.Items))
	e.status.BytesSent += int64(b.Bytes)
	e.status.LastAck = time.Now()
	e.status.LastError = ""
	e.mu.Unlock()
	if err := e.saveCheckpoints(false); err != nil {
		e.logger.Warn("bridge: cannot store checkpoints (they are written again with the next batch)", "bridge", e.cfg.Name, "err", err)
	}
	e.publishStatus()
}

// countWire adds what the target wrote since the last look to the wire
// bytes (run goroutine only).
func (e *Engine) countWire() {
	wc, ok := e.target.(WireCounter)
	if !ok {
		return
	}
	n := wc.WireBytes()
	if d := n - e.wireSeen; d > 0 {
		e.wireSeen = n
		e.metrics.Wire.WithLabelValues(e.cfg.Name).Add(float64(d))
		e.mu.Lock()
		e.status.WireBytes += d
		e.mu.Unlock()
	}
}

// failed records a failed session. A misconfiguration (ErrMisconfigured)
// retries at MaxBackoff only and is logged once per distinct cause; other
// failures back off from where they are and are logged each time (at most
// once per backoff).
func (e *Engine) failed(kind string, err error, stalled bool, backoff *time.Duration) {
	st := StateBackingOff
	if stalled {
		st = StateStalled
	}
	e.setState(st, err)
	e.mu.Lock()
	e.status.Reconnects++
	e.mu.Unlock()
	if errors.Is(err, ErrMisconfigured) {
		e.metrics.Failures.WithLabelValues(e.cfg.Name, "misconfigured").Inc()
		*backoff = e.cfg.MaxBackoff
		if msg := err.Error(); msg != e.lastFatal {
			e.lastFatal = msg
			e.logger.Error("bridge: the upstream refuses the configuration; retrying every max_backoff until it is fixed",
				"bridge", e.cfg.Name, "max_backoff", e.cfg.MaxBackoff, "err", err)
		}
		return
	}
	e.lastFatal = ""
	e.metrics.Failures.WithLabelValues(e.cfg.Name, kind).Inc()
	e.logger.Warn("bridge: link failed, retrying", "bridge", e.cfg.Name, "stalled", stalled, "err", err)
}

// waiting records when the batch on its way was handed over (nil: none).
func (e *Engine) waiting(since *time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if since != nil {
		t := *since
		since = &t
	}
	e.status.WaitingSince = since
}

func (e *Engine) setState(s string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s == StateBackingOff && e.status.State == StateStalled && err == nil {
		return // keep showing why we back off
	}
	e.status.State = s
	if err != nil {
		e.status.LastError = err.Error()
	}
	e.metrics.setState(e.cfg.Name, s)
}
