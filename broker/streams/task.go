package streams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
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

// marker is a commit record's value.
type marker struct {
	Seq         int64            `json:"seq"`
	Fingerprint string           `json:"fp"`
	StreamTime  int64            `json:"st"`
	Inputs      map[string]int64 `json:"in"`
	Outputs     []output         `json:"out,omitempty"`
	HWM         map[string]int64 `json:"hwm,omitempty"`
}

// output is one output record of a commit.
type output struct {
	Topic     string             `json:"t"`
	Partition int32              `json:"p"`
	Key       []byte             `json:"k,omitempty"`
	Value     []byte             `json:"v"`
	Timestamp int64              `json:"ts"`
	Headers   []commitlog.Header `json:"h,omitempty"`
}

func tp(topic string, partition int32) string {
	return topic + "/" + strconv.Itoa(int(partition))
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

// nextInput is the input whose next record has the smallest timestamp,
// nil when every input is caught up.
func (t *Task) nextInput() (*input, error) {
	var best *input
	for _, in := range t.inputs {
		if len(in.buf) == 0 {
			if err := t.fill(in); err != nil {
				return nil, err
			}
			if len(in.buf) == 0 {
				continue
			}
		}
		if best == nil || in.buf[0].Timestamp < best.buf[0].Timestamp {
			best = in
		}
	}
	return best, nil
}

func (t *Task) fill(in *input) error {
	if in.next < in.readTo {
		in.next = in.readTo // the rest of the last read was compacted away or damaged
	}
	if in.next >= in.p.HighWatermark() {
		return nil
	}
	var res readResult
	select {
	case res = <-in.ahead: // the reader has it, or is reading it
	case <-t.stop.Done():
		return t.stop.Err()
	}
	if res.err != nil {
		return fmt.Errorf("read %s/%d at %d: %w", in.topic, in.p.ID(), res.from, res.err)
	}
	if res.from > in.next {
		t.opts.Logger.Warn("stream pipeline input lost to retention before it was read", "pipeline", t.top.name,
			"topic", in.topic, "partition", in.p.ID(), "from", in.next, "to", res.from)
		in.next = res.from
	}
	in.buf, in.readTo = res.recs, res.next
	if len(in.buf) == 0 {
		in.buf = nil
		in.next = max(in.next, res.next)
	}
	return nil
}

// readResult is one read of an input partition by its reader.
type readResult struct {
	recs       []commitlog.Record // from offset from on
	from, next int64
	err        error
}

// startReaders starts one goroutine per input that reads its partition
// ahead of processing (a read of 128 KiB, decoded, waiting in a channel),
// so reading and processing use two cores. They stop with ctx; stop
// waits for them.
func (t *Task) startReaders(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, in := range t.inputs {
		in.ahead = make(chan readResult, 1)
		in.readTo = in.next
		wg.Add(1)
		go func() {
			defer wg.Done()
			readAhead(ctx, in.p, in.next, in.ahead)
		}()
	}
	return func() { cancel(); wg.Wait() }
}

func readAhead(ctx context.Context, p *commitlog.Partition, pos int64, out chan<- readResult) {
	for {
		changed := p.Changed()
		if pos >= p.HighWatermark() {
			select {
			case <-changed:
				continue
			case <-ctx.Done():
				return
			}
		}
		pos = max(pos, p.StartOffset())
		recs, next, _, err := p.ReadRecords(pos, 128<<10)
		if errors.Is(err, commitlog.ErrOffsetOutOfRange) {
			continue // retention moved the start: read from there
		}
		i := 0
		for i < len(recs) && recs[i].Offset < pos {
			i++
		}
		select {
		case out <- readResult{recs: recs[i:], from: pos, next: next, err: err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
		pos = max(pos, next)
	}
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

// restore rebuilds the state from the changelog, finishes the last
// commit's outputs and sets the input positions.
func (t *Task) restore(ctx context.Context) error {
	name := t.top.name
	cl, err := topicOrCreate(t.log, name+".changelog", commitlog.TopicConfig{Partitions: 1, Cleanup: commitlog.CleanupCompact,
		MaxBatchBytes: 8 << 20, SegmentBytes: 16 << 20})
	if err != nil {
		return fmt.Errorf("changelog: %w", err)
	}
	if t.changelog, err = cl.Partition(0); err != nil {
		return fmt.Errorf("changelog: %w", err)
	}
	extra := []string{name + ".dlq"}
	if t.top.late {
		extra = append(extra, name+".late")
	}
	for _, topic := range append(t.top.Outputs(), extra...) {
		if _, err := topicOrCreate(t.log, topic, commitlog.TopicConfig{}); err != nil {
			return fmt.Errorf("output topic %s: %w", topic, err)
		}
	}

	committed := map[string][]byte{}
	pending := map[string][]byte{}
	var lastVal []byte
	var lastOff int64
	for off := t.changelog.StartOffset(); off < t.changelog.HighWatermark(); {
		recs, next, _, err := t.changelog.ReadRecords(off, 1<<20)
		if err != nil {
			return fmt.Errorf("changelog at %d: %w", off, err)
		}
		for i := range recs {
			r := &recs[i]
			if r.Offset < off {
				continue
			}
			if string(r.Key) != commitKey {
				pending[string(r.Key)] = r.Value
				continue
			}
			lastVal, lastOff = r.Value, r.Offset // only the last marker is decoded
			for k, v := range pending {
				if v == nil {
					delete(committed, k)
				} else {
					committed[k] = v
				}
			}
			clear(pending)
		}
		if next <= off {
			break
		}
		off = next
	}

	var last *marker
	if lastVal != nil {
		last = &marker{}
		if err := json.Unmarshal(lastVal, last); err != nil {
			return fmt.Errorf("changelog commit at %d: %w", lastOff, err)
		}
	}
	t.seq, t.streamTime = 0, 0
	t.repair, t.hasRepair = map[string][]byte{}, map[string]bool{}
	// Entries after the last marker belong to a commit that did not
	// finish: the next commit writes the committed value over each.
	for k := range pending {
		t.repair[k], t.hasRepair[k] = committed[k], true
	}
	if last != nil {
		t.seq, t.streamTime = last.Seq, last.StreamTime
		if last.Fingerprint != t.fp {
			t.opts.Logger.Warn("stream pipeline changed in a way its stored state does not fit; starting with empty state",
				"pipeline", name, "entries", len(committed))
			for k := range committed {
				t.repair[k], t.hasRepair[k] = nil, true
			}
			committed = map[string][]byte{}
			t.streamTime = 0
		}
	}
	t.resetState()
	for k, v := range committed {
		id, key, ok := strings.Cut(k, "\x00")
		if !ok {
			continue
		}
		for _, sn := range t.state {
			if sn.id == id {
				if err := sn.s.restore(key, v); err != nil {
					return err
				}
			}
		}
	}
	if last != nil {
		if err := t.finishOutputs(ctx, last); err != nil {
			return err
		}
	}

	t.inputs = t.inputs[:0]
	t.committed = map[*commitlog.Partition]int64{}
	add := func(topic string, src *source, tbl *Table) error {
		top, err := topicOrCreate(t.log, topic, commitlog.TopicConfig{})
		if err != nil {
			return fmt.Errorf("input %s: %w", topic, err)
		}
		for _, p := range top.Partitions() {
			in := &input{p: p, topic: topic, src: src, table: tbl}
			if off, ok := lastInput(last, topic, p.ID()); ok {
				in.next = off
			} else if t.opts.StartLatest {
				in.next = p.HighWatermark()
			} else {
				in.next = p.StartOffset()
			}
			t.inputs = append(t.inputs, in)
			t.committed[p] = in.next
		}
		return nil
	}
	for _, s := range t.top.sources {
		for _, topic := range s.topics {
			if err := add(topic, s, nil); err != nil {
				return err
			}
		}
	}
	for _, tbl := range t.top.tables {
		if err := add(tbl.topic, nil, tbl); err != nil {
			return err
		}
	}
	t.hold()
	return nil
}

// hold asks retention to keep what the pipeline has not committed yet.
func (t *Task) hold() {
	for _, in := range t.inputs {
		in.p.SetHold("stream:"+t.top.name, t.committed[in.p])
	}
}

// topicOrCreate is the topic name, created with cfg when it does not
// exist yet (an existing topic keeps its configuration: the daemon's
// log.topics or a Kafka client's CreateTopics made it).
func topicOrCreate(l *commitlog.Log, name string, cfg commitlog.TopicConfig) (*commitlog.Topic, error) {
	t, err := l.Topic(name)
	if errors.Is(err, commitlog.ErrUnknownTopic) {
		t, err = l.CreateTopic(name, cfg)
		if errors.Is(err, commitlog.ErrTopicExists) {
			return l.Topic(name)
		}
	}
	return t, err
}

func lastInput(m *marker, topic string, partition int32) (int64, bool) {
	if m == nil {
		return 0, false
	}
	off, ok := m.Inputs[tp(topic, partition)]
	return off, ok
}

// resetState empties every step's state.
func (t *Task) resetState() {
	for _, tbl := range t.top.tables {
		clear(tbl.rows)
		clear(tbl.dirty)
	}
	for _, n := range t.top.nodes {
		switch p := n.proc.(type) {
		case *windowProc:
			clear(p.wins)
			p.dirty = p.dirty[:0]
			p.nextClose = 0
		case *alertProc:
			clear(p.raised)
			clear(p.dirty)
		}
	}
}

// commit writes the changed state and the marker, then the outputs. A
// commit once begun is finished even when ctx ends (a clean stop must not
// leave outputs for the next start); only waiting out a full topic ends
// with ctx.
func (t *Task) commit(ctx context.Context, c *pctx) error {
	stop := ctx
	ctx = context.WithoutCancel(ctx)
	m := &marker{Seq: t.seq + 1, Fingerprint: t.fp, StreamTime: c.streamTime,
		Inputs: make(map[string]int64, len(t.inputs)), Outputs: c.outputs}
	for _, in := range t.inputs {
		m.Inputs[tp(in.topic, in.p.ID())] = in.next
	}
	var recs []commitlog.Record
	for _, sn := range t.state {
		sn.s.flush(func(key string, val []byte) {
			k := sn.id + "\x00" + key
			delete(t.repair, k)
			delete(t.hasRepair, k)
			recs = append(recs, commitlog.Record{Key: []byte(k), Value: val})
		})
	}
	for k := range t.hasRepair {
		recs = append(recs, commitlog.Record{Key: []byte(k), Value: t.repair[k]})
	}
	if len(m.Outputs) > 0 {
		m.HWM = map[string]int64{}
		for i := range m.Outputs {
			o := &m.Outputs[i]
			o.Headers = append(o.Headers,
				commitlog.Header{Key: "ferry.stream", Value: []byte(t.top.name)},
				commitlog.Header{Key: "ferry.commit", Value: []byte(fmt.Sprintf("%d.%d", m.Seq, i))})
			key := tp(o.Topic, o.Partition)
			if _, ok := m.HWM[key]; !ok {
				p, err := t.partition(o.Topic, o.Partition)
				if err != nil {
					return err
				}
				m.HWM[key] = p.HighWatermark()
			}
		}
	}
	val, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("commit marker: %w", err)
	}
	recs = append(recs, commitlog.Record{Key: []byte(commitKey), Value: val})
	if _, err := t.changelog.Append(ctx, recs).Wait(ctx); err != nil {
		return fmt.Errorf("changelog: %w", err)
	}
	t.seq = m.Seq
	t.streamTime = c.streamTime
	for _, in := range t.inputs {
		t.committed[in.p] = m.Inputs[tp(in.topic, in.p.ID())]
	}
	t.hold()
	clear(t.repair)
	clear(t.hasRepair)
	c.outputs, c.outBytes = nil, 0
	t.counters.commits.Add(1)
	return t.writeOutputs(ctx, stop, m, nil)
}

// finishOutputs appends the outputs of m that are not in their
// partitions yet: each partition is scanned from the high watermark m
// recorded for this pipeline's records of commit m.Seq.
func (t *Task) finishOutputs(ctx context.Context, m *marker) error {
	if len(m.Outputs) == 0 {
		return nil
	}
	present := map[string]int{} // partition → highest output index found
	prefix := strconv.FormatInt(m.Seq, 10) + "."
	for key, from := range m.HWM {
		topic, pstr, _ := cutLast(key, "/")
		id, _ := strconv.Atoi(pstr)
		p, err := t.partition(topic, int32(id))
		if err != nil {
			return err
		}
		present[key] = -1
		from = max(from, p.StartOffset())
		for from < p.HighWatermark() {
			recs, next, _, err := p.ReadRecords(from, 1<<20)
			if err != nil {
				return fmt.Errorf("finish commit %d: read %s: %w", m.Seq, key, err)
			}
			for i := range recs {
				r := &recs[i]
				if header(r.Headers, "ferry.stream") != t.top.name {
					continue
				}
				if idx, ok := strings.CutPrefix(header(r.Headers, "ferry.commit"), prefix); ok {
					if n, err := strconv.Atoi(idx); err == nil && n > present[key] {
						present[key] = n
					}
				}
			}
			if next <= from {
				break
			}
			from = next
		}
	}
	return t.writeOutputs(context.WithoutCancel(ctx), ctx, m, present)
}

// writeOutputs appends m's outputs, per partition in order, skipping
// those at or below present[partition] (nil: none present). A full topic
// (reject_new) is waited out, not dropped, until stop ends.
func (t *Task) writeOutputs(ctx, stop context.Context, m *marker, present map[string]int) error {
	groups := map[string][]int{}
	var order []string
	for i := range m.Outputs {
		key := tp(m.Outputs[i].Topic, m.Outputs[i].Partition)
		if present != nil && i <= present[key] {
			continue
		}
		if _, ok := groups[key]; !ok {
			order = append(order, key)
		}
		groups[key] = append(groups[key], i)
	}
	futures := make([]*commitlog.Future, len(order))
	for j, key := range order {
		idx := groups[key]
		o := &m.Outputs[idx[0]]
		p, err := t.partition(o.Topic, o.Partition)
		if err != nil {
			return err
		}
		recs := make([]commitlog.Record, len(idx))
		for k, i := range idx {
			o := &m.Outputs[i]
			recs[k] = commitlog.Record{Key: o.Key, Value: o.Value, Timestamp: o.Timestamp, Headers: o.Headers}
		}
		futures[j] = p.Append(ctx, recs)
	}
	full := false
	for j, f := range futures {
		if _, err := f.Wait(ctx); err != nil {
			if errors.Is(err, commitlog.ErrLogFull) {
				full = true
				continue
			}
			return fmt.Errorf("output %s: %w", order[j], err)
		}
		t.counters.out.Add(int64(len(groups[order[j]])))
	}
	if !full {
		if t.Status().State == "paused" {
			t.setState("running")
		}
		return nil
	}
	// Some partition is full: wait, then append what is still missing.
	t.setState("paused")
	t.setError(fmt.Errorf("output topic full (on_full: reject_new): paused"))
	select {
	case <-stop.Done():
		return stop.Err()
	case <-time.After(t.opts.Retry):
	}
	return t.finishOutputs(stop, m)
}

func (t *Task) partition(topic string, id int32) (*commitlog.Partition, error) {
	top, err := t.log.Topic(topic)
	if err != nil {
		return nil, fmt.Errorf("output topic %s: %w", topic, err)
	}
	return top.Partition(id)
}

func header(hs []commitlog.Header, key string) string {
	for i := range hs {
		if hs[i].Key == key {
			return string(hs[i].Value)
		}
	}
	return ""
}

func cutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
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
	top, err := c.t.log.Topic(topic)
	if err != nil {
		c.t.setError(fmt.Errorf("output topic %s: %w", topic, err))
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

// Status is a pipeline's state for the API.
type Status struct {
	Name       string           `json:"name"`
	State      string           `json:"state"` // starting, restoring, running, paused, failed, stopped
	RecordsIn  int64            `json:"records_in"`
	RecordsOut int64            `json:"records_out"`
	Late       int64            `json:"late"`
	DeadLetter int64            `json:"dead_letter"`
	Commits    int64            `json:"commits"`
	StreamTime int64            `json:"stream_time"`
	Lag        map[string]int64 `json:"lag"` // input "topic/partition" → records not yet read
	LastError  string           `json:"last_error,omitempty"`
}

// publish makes the input positions and stream time visible to Status.
func (t *Task) publish(streamTime int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.status.StreamTime = streamTime
	if t.positions == nil {
		t.positions = map[*commitlog.Partition]position{}
	}
	for _, in := range t.inputs {
		t.positions[in.p] = position{in.topic, in.next}
	}
}

type position struct {
	topic string
	next  int64
}

// Status reports the pipeline's state.
func (t *Task) Status() Status {
	t.mu.Lock()
	s := t.status
	s.Lag = make(map[string]int64, len(t.positions))
	for p, pos := range t.positions {
		s.Lag[tp(pos.topic, p.ID())] = max(0, p.HighWatermark()-pos.next)
	}
	t.mu.Unlock()
	s.RecordsIn, s.RecordsOut = t.counters.in.Load(), t.counters.out.Load()
	s.Late, s.DeadLetter, s.Commits = t.counters.late.Load(), t.counters.dead.Load(), t.counters.commits.Load()
	return s
}

func (t *Task) setState(state string) {
	t.mu.Lock()
	t.status.State = state
	t.mu.Unlock()
}

func (t *Task) setError(err error) {
	t.mu.Lock()
	t.status.LastError = err.Error()
	t.mu.Unlock()
}
