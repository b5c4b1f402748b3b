package streams

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
)

// A Topology is a built pipeline: its sources, steps and sinks. It is
// immutable; a Task runs it.
type Topology struct {
	name    string
	sources []*source
	tables  []*Table
	nodes   []*node // every step, in the order built
	sinks   map[string]bool
	late    bool // a windowed step: the pipeline has a late topic
}

// Name is the pipeline's name, which its internal topics carry.
func (t *Topology) Name() string { return t.name }

// Inputs are the topics the pipeline reads (streams, then tables).
func (t *Topology) Inputs() []string {
	var out []string
	for _, s := range t.sources {
		out = append(out, s.topics...)
	}
	for _, tb := range t.tables {
		out = append(out, tb.topic)
	}
	return out
}

// Outputs are the topics the pipeline's sinks write.
func (t *Topology) Outputs() []string {
	var out []string
	for name := range t.sinks {
		out = append(out, name)
	}
	return out
}

// fingerprint identifies the topology's shape and settings: state stored
// by a different fingerprint is not this pipeline's and is not restored.
func (t *Topology) fingerprint() string {
	var b strings.Builder
	for _, s := range t.sources {
		fmt.Fprintf(&b, "source%v;", s.topics)
	}
	for _, tb := range t.tables {
		fmt.Fprintf(&b, "table(%s);", tb.topic)
	}
	for _, n := range t.nodes {
		fmt.Fprintf(&b, "%s=%s;", n.id, n.proc.describe())
	}
	h := fnv.New64a()
	h.Write([]byte(b.String()))
	return fmt.Sprintf("%016x", h.Sum64())
}

// A Builder builds a Topology, as Kafka Streams' StreamsBuilder does.
type Builder struct {
	t   *Topology
	err error
}

// New starts a topology for the pipeline name (a topic-name-safe word:
// letters, digits, '.', '_', '-').
func New(name string) *Builder {
	b := &Builder{t: &Topology{name: name, sinks: map[string]bool{}}}
	if err := checkName(name); err != nil {
		b.err = err
	}
	return b
}

func checkName(name string) error {
	if name == "" || len(name) > 200 {
		return errors.New("a pipeline name is 1 to 200 characters")
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("pipeline name %q: only letters, digits, '.', '_' and '-'", name)
		}
	}
	return nil
}

// Build returns the topology, or the first error a step reported.
func (b *Builder) Build() (*Topology, error) {
	if b.err != nil {
		return nil, b.err
	}
	if len(b.t.sources) == 0 {
		return nil, errors.New("a pipeline needs a source (Stream)")
	}
	if len(b.t.sinks) == 0 {
		return nil, errors.New("a pipeline needs a sink (To)")
	}
	for out := range b.t.sinks {
		for _, in := range b.t.Inputs() {
			if in == out {
				return nil, fmt.Errorf("topic %s is both read and written: a pipeline that reads its own output never ends", out)
			}
		}
	}
	return b.t, nil
}

// Stream reads topics (every partition of each).
func (b *Builder) Stream(topics ...string) *Stream {
	if len(topics) == 0 {
		b.fail(errors.New("Stream needs at least one topic"))
	}
	s := &source{topics: topics}
	b.t.sources = append(b.t.sources, s)
	return &Stream{b: b, attach: func(n *node) { s.children = append(s.children, n) }}
}

// Table reads topic as a table: for each key, the latest value of each
// field (ThingsBoard's attributes: a record updates the fields it has).
func (b *Builder) Table(topic string) *Table {
	t := &Table{topic: topic, rows: map[string]*row{}, dirty: map[string]bool{}}
	t.id = b.nextID("table")
	b.t.tables = append(b.t.tables, t)
	return t
}

func (b *Builder) fail(err error) {
	if b.err == nil {
		b.err = err
	}
}

func (b *Builder) nextID(kind string) string {
	return fmt.Sprintf("%d-%s", len(b.t.nodes)+len(b.t.tables), kind)
}

// A Stream is a record stream in a topology under construction; each
// step returns the stream of its output.
type Stream struct {
	b      *Builder
	attach func(*node)
}

// node is a step of a built topology.
type node struct {
	id       string
	proc     processor
	children []*node
}

// processor is a step's behaviour.
type processor interface {
	// process handles one record and forwards what it produces.
	process(c *pctx, n *node, r *Record) error
	// describe is the step's kind and settings, for the fingerprint.
	describe() string
}

// forward passes r to n's children.
func (n *node) forward(c *pctx, r *Record) {
	for _, ch := range n.children {
		c.run(ch, r)
	}
}

func (s *Stream) add(kind string, p processor) *Stream {
	n := &node{id: s.b.nextID(kind), proc: p}
	s.b.t.nodes = append(s.b.t.nodes, n)
	s.attach(n)
	return &Stream{b: s.b, attach: func(c *node) { n.children = append(n.children, c) }}
}

// Filter keeps the records pred accepts. pred must not keep r: it is
// valid only during the call.
func (s *Stream) Filter(pred func(*Record) (bool, error)) *Stream {
	return s.add("filter", &filterProc{pred: pred})
}

// Map replaces each record by fn's result (fn gets a copy it may change);
// a nil result drops the record.
func (s *Stream) Map(fn func(*Record) (*Record, error)) *Stream {
	return s.add("map", &mapProc{fn: fn})
}

// FlatMap replaces each record by any number of records.
func (s *Stream) FlatMap(fn func(*Record) ([]*Record, error)) *Stream {
	return s.add("flatmap", &flatMapProc{fn: fn})
}

// SelectKey re-keys each record (fn must not keep r). Sinks partition by key, so the output is
// repartitioned by the new key, and keyed steps after it (windows,
// alerts, joins) group by it.
func (s *Stream) SelectKey(fn func(*Record) ([]byte, error)) *Stream {
	return s.add("selectkey", &selectKeyProc{fn: fn})
}

// To writes the stream to topic, partitioned by key.
func (s *Stream) To(topic string) {
	if topic == "" {
		s.b.fail(errors.New("To needs a topic"))
		return
	}
	s.b.t.sinks[topic] = true
	s.add("sink", &sinkProc{topic: topic})
}

type source struct {
	topics   []string
	children []*node
}

type filterProc struct {
	pred func(*Record) (bool, error)
	lazy bool // pred reads no values: they need not be parsed for it
}

func (p *filterProc) describe() string { return "filter" }
func (p *filterProc) process(c *pctx, n *node, r *Record) error {
	ok, err := p.pred(r)
	if err != nil {
		return err
	}
	if ok {
		n.forward(c, r)
	}
	return nil
}

type mapProc struct {
	fn func(*Record) (*Record, error)
}

func (p *mapProc) describe() string { return "map" }
func (p *mapProc) process(c *pctx, n *node, r *Record) error {
	out, err := p.fn(r.clone())
	if err != nil {
		return err
	}
	if out != nil {
		n.forward(c, out)
	}
	return nil
}

type flatMapProc struct {
	fn func(*Record) ([]*Record, error)
}

func (p *flatMapProc) describe() string { return "flatmap" }
func (p *flatMapProc) process(c *pctx, n *node, r *Record) error {
	outs, err := p.fn(r.clone())
	if err != nil {
		return err
	}
	for _, o := range outs {
		n.forward(c, o)
	}
	return nil
}

type selectKeyProc struct {
	fn func(*Record) ([]byte, error)
}

func (p *selectKeyProc) describe() string { return "selectkey" }
func (p *selectKeyProc) process(c *pctx, n *node, r *Record) error {
	key, err := p.fn(r)
	if err != nil {
		return err
	}
	out := *r
	out.Key = key
	n.forward(c, &out)
	return nil
}

type sinkProc struct {
	topic string
}

func (p *sinkProc) describe() string { return "sink(" + p.topic + ")" }
func (p *sinkProc) process(c *pctx, n *node, r *Record) error {
	c.output(p.topic, r.encode())
	return nil
}
