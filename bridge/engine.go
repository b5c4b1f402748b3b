package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"golang.org/x/time/rate"

	flog "github.com/ferry-iot/ferry/broker/log"
	"github.com/ferry-iot/ferry/broker/state"
)

// TP names an edge partition.
type TP struct {
	Topic     string
	Partition int32
}

func (tp TP) String() string { return fmt.Sprintf("%s/%d", tp.Topic, tp.Partition) }

// Progress is a partition's replication position: every offset below Next
// is upstream, and with live_first also [LiveFrom, LiveNext). LiveFrom is
// 0 when the partition is not split (a split always has Next < LiveFrom).
type Progress struct {
	Next     int64 `json:"next"`
	LiveFrom int64 `json:"live_from,omitempty"`
	LiveNext int64 `json:"live_next,omitempty"`
}

func (p Progress) split() bool { return p.LiveFrom > 0 }

// sent is the number of records at or above Next already upstream.
func (p Progress) ahead() int64 {
	if p.split() {
		return p.LiveNext - p.LiveFrom
	}
	return 0
}

// Item is one record on its way upstream.
type Item struct {
	TP
	Record flog.Record
}

// Batch is what one Send delivers: records from any number of partitions,
// each partition's in offset order, and the partitions' progress once the
// batch is upstream (a target that stores checkpoints upstream writes them
// with the records, atomically).
type Batch struct {
	Items    []Item
	Progress map[TP]Progress
	Bytes    int // key, value and header bytes of Items

	skips []skip // ranges retention dropped before replication, passed over by this batch
}

// skip is a range of a partition's offsets retention deleted unreplicated.
type skip struct {
	tp       TP
	from, to int64
}

// Target is one kind of upstream.
type Target interface {
	// Connect opens a session with the upstream. It may fence a previous
	// instance (Kafka: a new producer epoch for the transactional id).
	Connect(ctx context.Context) (Conn, error)
}

// Conn is a connected session.
type Conn interface {
	// Checkpoints returns the progress the upstream stored for tps (only
	// those it knows), or nil when this upstream keeps none (the local
	// checkpoints are then the truth).
	Checkpoints(ctx context.Context, tps []TP) (map[TP]Progress, error)
	// Send delivers b and returns nil once the upstream acknowledged all of
	// it. On error nothing of b may be counted as delivered.
	Send(ctx context.Context, b *Batch) error
	// Close ends the session (an unfinished Send is abandoned).
	Close() error
}

// Backlog orders.
const (
	OldestFirst = "oldest_first"
	LiveFirst   = "live_first"
)

// Config configures an Engine. Zero fields take the defaults noted.
type Config struct {
	Name   string   // the bridge's name: hold owner "bridge.<name>", metric label, state keys
	Topics []string // edge topics to replicate (every partition)

	Order         string // OldestFirst (default) or LiveFirst
	LiveThreshold int64  // live_first: records behind before a partition is split (default 10000)

	MaxBatchBytes   int           // per Send (default 4 MiB)
	MaxBatchRecords int           // per Send (default 50000)
	Linger          time.Duration // after idling, wait this long for more records (default 50 ms)
	RateLimit       int64         // bytes per second handed to the target; 0: unlimited

	StallTimeout       time.Duration // a Send or Connect taking longer is a stalled link (default 60 s)
	Backoff            time.Duration // first retry delay (default 500 ms)
	MaxBackoff         time.Duration // cap (default 60 s)
	CheckpointInterval time.Duration // local checkpoint writes at most this often (default 1 s)

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
	if c.CheckpointInterval <= 0 {
		c.CheckpointInterval = time.Second
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
	cfg     Config
	log     *flog.Log
	st      *state.Store
	target  Target
	metrics *Metrics
	logger  *slog.Logger
	limiter *rate.Limiter
	owner   string // retention hold owner

	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	started bool

	// Owned by the run goroutine.
	cursors   map[TP]*cursor
	lastSaved time.Time
	dirty     bool

	mu     sync.Mutex
	status Status // guarded by mu; Partitions filled on read
	parts  []partSnap
}

type cursor struct {
	tp   TP
	p    *flog.Partition
	prog Progress
	high int64 // highest offset+1 handed to a Send, for the resent count
}

type partSnap struct {
	tp   TP
	p    *flog.Partition
	prog Progress
}

// New prepares an engine; Start runs it.
func New(cfg Config, lg *flog.Log, st *state.Store, target Target) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.ensureDefaults()
	e := &Engine{cfg: cfg, log: lg, st: st, target: target, metrics: cfg.Metrics, logger: cfg.Logger,
		owner: "bridge." + cfg.Name, cursors: map[TP]*cursor{}, done: make(chan struct{})}
	if cfg.RateLimit > 0 {
		e.limiter = rate.NewLimiter(rate.Limit(cfg.RateLimit), int(max(cfg.RateLimit, int64(cfg.MaxBatchBytes))))
	}
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
		if err != nil {
			e.metrics.Failures.WithLabelValues(e.cfg.Name, "connect").Inc()
			e.failed(err, false)
			e.sleep(&backoff)
			continue
		}
		e.setState(StateConnected, nil)
		e.metrics.Connects.WithLabelValues(e.cfg.Name).Inc()
		progressed, stalled, err := e.pump(conn)
		conn.Close()
		if e.ctx.Err() != nil {
			return
		}
		e.metrics.Failures.WithLabelValues(e.cfg.Name, failureKind(stalled)).Inc()
		e.failed(err, stalled)
		if progressed {
			backoff = e.cfg.Backoff
		}
		e.sleep(&backoff)
	}
}

func failureKind(stalled bool) string {
	if stalled {
		return "stalled"
	}
	return "send"
}

// connect opens a session and resumes every cursor from the upstream's
// checkpoints where it keeps them.
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
	tps := make([]TP, 0, len(e.cursors))
	for tp := range e.cursors {
		tps = append(tps, tp)
	}
	sort.Slice(tps, func(i, j int) bool {
		return tps[i].Topic < tps[j].Topic || (tps[i].Topic == tps[j].Topic && tps[i].Partition < tps[j].Partition)
	})
	up, err := conn.Checkpoints(ctx, tps)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("read upstream checkpoints: %w", err)
	}
	for _, tp := range tps {
		c := e.cursors[tp]
		if p, ok := up[tp]; ok && p != c.prog {
			e.logger.Info("bridge: resuming from the upstream checkpoint", "bridge", e.cfg.Name, "partition", tp.String(),
				"upstream_next", p.Next, "local_next", c.prog.Next)
			c.prog = p
			e.dirty = true
		}
		// Records handed to an unconfirmed Send are sent again.
		if resent := c.high - (c.prog.Next + c.prog.ahead()); resent > 0 && !c.prog.split() {
			e.metrics.Resent.WithLabelValues(e.cfg.Name).Add(float64(resent))
		}
		c.high = 0
		c.p.SetHold(e.owner, c.prog.Next)
	}
	e.publishStatus()
	return conn, nil
}

// refreshPartitions picks up the configured topics' partitions (topics
// may appear or grow) and loads their local checkpoints.
func (e *Engine) refreshPartitions() error {
	for _, name := range e.cfg.Topics {
		t, err := e.log.Topic(name)
		if errors.Is(err, flog.ErrUnknownTopic) {
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

// sleep waits out the backoff (with ±20 % jitter) and doubles it.
func (e *Engine) sleep(backoff *time.Duration) {
	e.setState(StateBackingOff, nil)
	d := time.Duration(float64(*backoff) * (0.8 + 0.4*rand.Float64()))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-e.ctx.Done():
	}
	*backoff = min(2**backoff, e.cfg.MaxBackoff)
}

// pump sends batches until a Send fails or the engine stops. While a
// batch is on its way the next one is read from the log (prefetch), so
// the upstream's round trips and the log's decompression overlap.
func (e *Engine) pump(conn Conn) (progressed, stalled bool, err error) {
	var next *Batch
	for {
		b := next
		if b == nil {
			if b, err = e.nextBatch(); err != nil {
				return progressed, false, err
			}
		}
		if e.limiter != nil {
			if err := e.waitRate(b.Bytes); err != nil {
				return progressed, false, err
			}
		}
		for _, it := range b.Items {
			c := e.cursors[it.TP]
			c.high = max(c.high, it.Record.Offset+1)
		}
		pre := e.prefetch(b)
		ctx, cancel := context.WithTimeout(e.ctx, e.cfg.StallTimeout)
		start := time.Now()
		err = conn.Send(ctx, b)
		stalled = errors.Is(ctx.Err(), context.DeadlineExceeded) && e.ctx.Err() == nil
		cancel()
		next = <-pre // joined before the cursors move
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

// prefetch fills, on a goroutine it owns until the result is received,
// the batch that follows b: from where b leaves each partition, or the
// cursor. It yields nil when nothing follows yet (nextBatch then waits and
// lingers as usual) or on a read error (nextBatch meets it again).
func (e *Engine) prefetch(b *Batch) <-chan *Batch {
	from := e.positions()
	for tp, p := range b.Progress {
		from[tp] = p
	}
	order := e.order()
	ch := make(chan *Batch, 1)
	go func() {
		nb, err := e.fill(order, from)
		if err != nil || (len(nb.Items) == 0 && len(nb.Progress) == 0) {
			nb = nil
		}
		ch <- nb
	}()
	return ch
}

func (e *Engine) waitRate(n int) error {
	for n > 0 {
		step := min(n, e.limiter.Burst())
		if err := e.limiter.WaitN(e.ctx, step); err != nil {
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
	for _, s := range b.skips {
		n := s.to - s.from
		e.metrics.Skipped.WithLabelValues(e.cfg.Name).Add(float64(n))
		e.mu.Lock()
		e.status.RecordsSkipped += n
		e.mu.Unlock()
		e.logger.Warn("bridge: records were dropped by retention before replication", "bridge", e.cfg.Name,
			"partition", s.tp.String(), "from", s.from, "to", s.to, "records", n)
	}
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

func (e *Engine) failed(err error, stalled bool) {
	st := StateBackingOff
	if stalled {
		st = StateStalled
	}
	e.setState(st, err)
	e.logger.Warn("bridge: link failed, retrying", "bridge", e.cfg.Name, "stalled", stalled, "err", err)
	e.mu.Lock()
	e.status.Reconnects++
	e.mu.Unlock()
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
