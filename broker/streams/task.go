package streams

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

// commitKey is the changelog key of commit markers; state keys start
// with a step id, never with a NUL.
const commitKey = "\x00commit"

// Options tune a Task.
type Options struct {
	// CommitInterval is how often state changes and input positions are
	// committed when there is no output to write (default 5s; outputs
	// are committed as soon as a read batch is done). Longer writes less
	// to the card; a crash re-reads at most this much input.
	CommitInterval time.Duration
	// MaxBatchRecords caps the records processed between commits
	// (default 5000).
	MaxBatchRecords int
	// StartLatest starts a pipeline that has no committed position at the
	// end of its inputs instead of their beginning.
	StartLatest bool
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// Retry is the wait before a failed pipeline starts again from its
	// changelog, and between attempts to write to a full topic (default 1s).
	Retry time.Duration
}

func (o *Options) defaults() {
	if o.CommitInterval <= 0 {
		o.CommitInterval = 5 * time.Second
	}
	if o.MaxBatchRecords <= 0 {
		o.MaxBatchRecords = 5000
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Retry <= 0 {
		o.Retry = time.Second
	}
}

// stateful is a step (or table) with state in the changelog.
type stateful interface {
	flush(put func(key string, val []byte))
	restore(key string, val []byte) error
}

// input is one partition a task reads.
type input struct {
	p      *commitlog.Partition
	topic  string
	src    *source // a stream's source, or nil
	table  *Table  // a table's source, or nil
	next   int64   // the next offset to process
	buf    []commitlog.Record
	readTo int64           // where the reader's last result ended
	ahead  chan readResult // the reader's results (startReaders)
}

// A Task runs one topology on the log.
type Task struct {
	top   *Topology
	log   *commitlog.Log
	opts  Options
	fp    string
	state []stateNode // every step with state, and the tables

	changelog *commitlog.Partition
	inputs    []*input
	committed map[*commitlog.Partition]int64 // input positions as of the last commit
	outTopics map[string]*commitlog.Topic    // outputs, late and dead-letter topics (restore)
	windows   []*node                        // the window steps, for stream time

	seq        int64
	streamTime int64
	repair     map[string][]byte // changelog keys to write again at the next commit
	hasRepair  map[string]bool

	stop     context.Context // runOnce's: ends a wait for the readers
	scratch  Record          // every input record is decoded into it (decode)
	restored bool            // Start restored: the first runOnce need not
	done     chan struct{}   // closed when a started task stops

	counters  counters
	mu        sync.Mutex
	status    Status
	positions map[*commitlog.Partition]position
}

type stateNode struct {
	id string
	s  stateful
}

type counters struct {
	in, out, late, dead, commits atomic.Int64
}

// NewTask prepares top to run on log; Run runs it.
func NewTask(log *commitlog.Log, top *Topology, opts Options) *Task {
	opts.defaults()
	t := &Task{top: top, log: log, opts: opts, fp: top.fingerprint()}
	for _, tbl := range top.tables {
		t.state = append(t.state, stateNode{tbl.id, tbl})
	}
	for _, n := range top.nodes {
		if s, ok := n.proc.(stateful); ok {
			t.state = append(t.state, stateNode{n.id, s})
		}
		if _, ok := n.proc.(*windowProc); ok {
			t.windows = append(t.windows, n)
		}
	}
	t.status.Name = top.name
	t.status.State = "starting"
	return t
}

// Start restores the pipeline from its changelog at once, so the
// retention holds on its inputs are set when Start returns (the daemon
// resumes retention only then), and runs it in a goroutine until ctx
// ends; Done is closed when it has stopped. A restore that fails is
// retried by the goroutine.
func (t *Task) Start(ctx context.Context) {
	if err := t.restore(ctx); err != nil {
		t.setError(err)
		t.opts.Logger.Warn("stream pipeline could not restore its state; retrying", "pipeline", t.top.name, "err", err)
	} else {
		t.restored = true
	}
	t.done = make(chan struct{})
	go func() {
		defer close(t.done)
		t.Run(ctx)
	}()
}

// Done is closed when a started task has stopped.
func (t *Task) Done() <-chan struct{} { return t.done }

// Run processes until ctx ends. A failure (a write that fails, the
// changelog unreadable) is recorded in the status and the task starts
// over from its changelog after Options.Retry.
func (t *Task) Run(ctx context.Context) {
	for ctx.Err() == nil {
		err := t.runOnce(ctx)
		if ctx.Err() != nil {
			break
		}
		t.setError(err)
		t.opts.Logger.Warn("stream pipeline failed; starting over from its changelog", "pipeline", t.top.name, "err", err)
		t.setState("failed")
		select {
		case <-ctx.Done():
		case <-time.After(t.opts.Retry):
		}
	}
	t.setState("stopped")
}

func (t *Task) runOnce(ctx context.Context) error {
	if t.restored {
		t.restored = false
	} else {
		t.setState("restoring")
		if err := t.restore(ctx); err != nil {
			return err
		}
	}
	t.publish(t.streamTime)
	t.setState("running")
	t.stop = ctx
	stopReaders := t.startReaders(ctx)
	defer stopReaders()
	w := commitlog.NewWatcher()
	defer w.Stop()
	for _, in := range t.inputs {
		w.Watch(in.p)
	}
	c := &pctx{t: t, streamTime: t.streamTime}
	lastCommit := time.Now()
	uncommitted := false
	for {
		n, err := t.processBatch(c)
		if err != nil {
			if ctx.Err() != nil && (uncommitted || n > 0) {
				return t.commit(ctx, c) // a clean stop mid-batch keeps what it processed
			}
			return err
		}
		if n > 0 {
			t.publish(c.streamTime)
			t.scratch = Record{} // it points into the last batch read
		}
		if n > 0 {
			uncommitted = true
		}
		due := time.Since(lastCommit) >= t.opts.CommitInterval
		if len(c.outputs) > 0 || (uncommitted && due) {
			if err := t.commit(ctx, c); err != nil {
				return err
			}
			lastCommit, uncommitted = time.Now(), false
			continue
		}
		if n > 0 {
			continue
		}
		var timer <-chan time.Time
		if uncommitted {
			timer = time.After(t.opts.CommitInterval - time.Since(lastCommit))
		}
		select {
		case <-ctx.Done():
			if uncommitted {
				// A clean stop commits what it processed, so nothing is
				// re-read.
				return t.commit(ctx, c)
			}
			return nil
		case <-w.C():
		case <-timer:
		}
	}
}

// processBatch processes up to MaxBatchRecords records, by timestamp
// order across the inputs, and returns how many.
func (t *Task) processBatch(c *pctx) (int, error) {
	n := 0
	for n < t.opts.MaxBatchRecords {
		in, err := t.nextInput()
		if err != nil {
			return n, err
		}
		if in == nil {
			break
		}
		lr := &in.buf[0]
		in.buf = in.buf[1:]
		if len(in.buf) == 0 {
			in.buf = nil // do not keep the batch read alive while idle
		}
		in.next = lr.Offset + 1
		t.counters.in.Add(1)
		n++
		t.processRecord(c, in, lr)
		if c.outBytes > 512<<10 {
			break // the commit marker holds the outputs; keep it well under a batch
		}
	}
	return n, nil
}

func (t *Task) processRecord(c *pctx, in *input, lr *commitlog.Record) {
	r := decode(&t.scratch, in.topic, in.p.ID(), lr)
	if in.table != nil {
		if err := r.parse(); err != nil {
			c.deadLetter("decode", r, err)
			return
		}
		in.table.update(r)
	} else {
		for _, n := range in.src.children {
			c.run(n, r)
		}
	}
	if r.Timestamp > c.streamTime {
		c.streamTime = r.Timestamp
		for _, n := range t.windows {
			n.proc.(*windowProc).advance(c, n)
		}
	}
}

// pctx is the processing context of one batch: the stream time and the
// outputs waiting for the next commit.
type pctx struct {
	t          *Task
	streamTime int64
	outputs    []output
	outBytes   int
}

// run processes r at n; a step's error sends r to the dead-letter topic.
// The value is parsed first unless the step does not read it.
func (c *pctx) run(n *node, r *Record) {
	if r.pending != nil {
		if f, ok := n.proc.(*filterProc); !ok || !f.lazy {
			if err := r.parse(); err != nil {
				c.deadLetter("decode", r, err)
				return
			}
		}
	}
	if err := n.proc.process(c, n, r); err != nil {
		c.deadLetter(n.id, r, err)
	}
}

// output queues rec for topic, partitioned by key.
func (c *pctx) output(topic string, rec commitlog.Record) {
	top := c.t.outTopics[topic]
	if top == nil {
		c.t.setError(fmt.Errorf("output topic %s: not opened by restore", topic))
		return
	}
	c.outputs = append(c.outputs, output{Topic: topic, Partition: top.PartitionFor(rec.Key),
		Key: rec.Key, Value: rec.Value, Timestamp: rec.Timestamp, Headers: rec.Headers})
	c.outBytes += len(rec.Key) + len(rec.Value) + 64
}

// late keeps a record that came after its windows closed.
func (c *pctx) late(r *Record) {
	c.t.counters.late.Add(1)
	c.output(c.t.top.name+".late", commitlog.Record{Key: r.Key, Value: r.raw, Timestamp: r.Timestamp,
		Headers: append(append([]commitlog.Header(nil), r.Headers...), r.provenanceHeaders()...)})
}

// deadLetter keeps a record a step failed on, with its provenance.
func (c *pctx) deadLetter(step string, r *Record, err error) {
	c.t.counters.dead.Add(1)
	c.t.setError(fmt.Errorf("step %s, %s/%d@%d: %w", step, r.Topic, r.Partition, r.Offset, err))
	hs := append(append([]commitlog.Header(nil), r.Headers...), r.provenanceHeaders()...)
	hs = append(hs, commitlog.Header{Key: "ferry.step", Value: []byte(step)},
		commitlog.Header{Key: "ferry.error", Value: []byte(err.Error())})
	c.output(c.t.top.name+".dlq", commitlog.Record{Key: r.Key, Value: r.raw, Timestamp: r.Timestamp, Headers: hs})
}
