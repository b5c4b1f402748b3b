// Package kafka is the bridge target for an upstream Apache Kafka cluster
// (franz-go's kgo): it delivers the engine's batches (package bridge)
// exactly once, or at least once to clusters without transactions.
//
// # Exactly once
//
// One transactional producer per gateway, with the stable transactional id
// "ferry-<node_id>" (config transactional_id overrides it). Connect first
// sends InitProducerId for that id itself: the coordinator bumps the
// epoch, which fences any previous instance (a process that was SIGKILLed
// mid-transaction, a zombie on a flaky link) and aborts or completes its
// open transaction. Then it reads the checkpoint topic (compacted, one
// record per edge partition: key "<node_id>/<topic>/<partition>", value
// the bridge.Progress as JSON) with read_committed up to its last stable
// offset: what is committed there is exactly what is upstream.
//
// Each Send is one transaction: the batch's records, then one checkpoint
// record per partition it advances; commit. A commit error or an
// unconfirmed commit fails the Send; the engine reconnects, re-fences and
// resumes from the checkpoints, so an aborted transaction is re-sent and a
// committed one is not. read_committed consumers upstream see every edge
// record exactly once.
//
// # At least once
//
// An idempotent producer (plain acks=all where the cluster lacks
// InitProducerId); no upstream checkpoints, the engine's local ones rule,
// and a record whose acknowledgement was lost is sent again (counted by
// the engine as resent).
//
// # Records
//
// Key, value, timestamp and headers are preserved; provenance headers are
// appended: ferry.node, ferry.topic, ferry.partition, ferry.offset.
// Records are partitioned upstream by key with Kafka's murmur2 (kgo's
// default), so each device keeps its order within a partition.
package kafka

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"

	"github.com/ferry-iot/ferry/bridge"
)

// Delivery guarantees.
const (
	ExactlyOnce = "exactly_once"
	AtLeastOnce = "at_least_once"
)

// Config configures the target. Zero fields take the defaults noted.
type Config struct {
	Brokers []string          // seed brokers
	Topics  map[string]string // edge topic → upstream topic
	NodeID  string            // this gateway (provenance header, transactional id, checkpoint keys)

	Delivery        string // ExactlyOnce (default) or AtLeastOnce
	TransactionalID string // default "ferry-<NodeID>"
	CheckpointTopic string // default "ferry.checkpoints"
	Compression     string // zstd (default), lz4, snappy, gzip, none

	TLS  *tls.Config
	SASL sasl.Mechanism // nil: none

	// Opts are extra kgo options (tests: a dialer that cuts the link).
	Opts   []kgo.Opt
	Logger *slog.Logger
}

func (c *Config) ensureDefaults() {
	if c.Delivery == "" {
		c.Delivery = ExactlyOnce
	}
	if c.TransactionalID == "" {
		c.TransactionalID = "ferry-" + c.NodeID
	}
	if c.CheckpointTopic == "" {
		c.CheckpointTopic = "ferry.checkpoints"
	}
	if c.Compression == "" {
		c.Compression = "zstd"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every problem with c.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("bridge/kafka: no brokers"))
	}
	if len(c.Topics) == 0 {
		errs = append(errs, errors.New("bridge/kafka: no topics"))
	}
	for edge, up := range c.Topics {
		if up == "" {
			errs = append(errs, fmt.Errorf("bridge/kafka: topic %s maps to an empty upstream name", edge))
		}
	}
	if c.NodeID == "" {
		errs = append(errs, errors.New("bridge/kafka: node id is empty"))
	}
	if c.Delivery != "" && c.Delivery != ExactlyOnce && c.Delivery != AtLeastOnce {
		errs = append(errs, fmt.Errorf("bridge/kafka: delivery %q is not %s or %s", c.Delivery, ExactlyOnce, AtLeastOnce))
	}
	if _, err := codec(c.Compression); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func codec(name string) (kgo.CompressionCodec, error) {
	switch name {
	case "", "zstd":
		return kgo.ZstdCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "none":
		return kgo.NoCompression(), nil
	}
	return kgo.NoCompression(), fmt.Errorf("bridge/kafka: compression %q is not zstd, lz4, snappy, gzip or none", name)
}

// Target replicates to one Kafka cluster.
type Target struct {
	cfg       Config
	wireBytes atomic.Int64 // bytes written to the upstream's sockets (all requests)
}

// New checks cfg and returns the target.
func New(cfg Config) (*Target, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.ensureDefaults()
	return &Target{cfg: cfg}, nil
}

// WireBytes is the number of bytes written to the upstream so far
// (requests of every kind, after compression, before TLS).
func (t *Target) WireBytes() int64 { return t.wireBytes.Load() }

// OnBrokerWrite implements kgo.HookBrokerWrite.
func (t *Target) OnBrokerWrite(_ kgo.BrokerMetadata, _ int16, n int, _, _ time.Duration, _ error) {
	t.wireBytes.Add(int64(n))
}

func (t *Target) eos() bool { return t.cfg.Delivery == ExactlyOnce }

// Connect opens a client; for exactly-once it fences the previous
// instance and makes sure the checkpoint topic exists.
func (t *Target) Connect(ctx context.Context) (bridge.Conn, error) {
	comp, _ := codec(t.cfg.Compression)
	opts := []kgo.Opt{
		kgo.SeedBrokers(t.cfg.Brokers...),
		kgo.ProducerBatchCompression(comp),
		kgo.AllowAutoTopicCreation(),
		kgo.ProducerLinger(0),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.WithHooks(t),
		kgo.MaxBufferedRecords(1 << 20),
		kgo.ProducerBatchMaxBytes(1 << 20),
		kgo.RecordRetries(5),
	}
	if t.cfg.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(t.cfg.TLS.Clone()))
	}
	if t.cfg.SASL != nil {
		opts = append(opts, kgo.SASL(t.cfg.SASL))
	}
	if t.eos() {
		opts = append(opts, kgo.TransactionalID(t.cfg.TransactionalID), kgo.TransactionTimeout(2*time.Minute))
	}
	opts = append(opts, t.cfg.Opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("bridge/kafka: client: %w", err)
	}
	c := &conn{t: t, cl: cl}
	if err := cl.Ping(ctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("bridge/kafka: %w", err)
	}
	if t.eos() {
		if err := c.fence(ctx); err != nil {
			cl.Close()
			return nil, err
		}
		if err := c.ensureCheckpointTopic(ctx); err != nil {
			cl.Close()
			return nil, err
		}
	}
	return c, nil
}

type conn struct {
	t  *Target
	cl *kgo.Client
}

func (c *conn) Close() error {
	c.cl.Close()
	return nil
}

// fence sends InitProducerId for the transactional id: the coordinator
// bumps the epoch, fencing the previous producer and finishing (aborting,
// unless it was already committing) its open transaction. CONCURRENT_TRANSACTIONS
// means that transaction is still being completed: retry.
func (c *conn) fence(ctx context.Context) error {
	for {
		req := kmsg.NewPtrInitProducerIDRequest()
		req.TransactionalID = &c.t.cfg.TransactionalID
		req.TransactionTimeoutMillis = int32((2 * time.Minute).Milliseconds())
		req.ProducerID, req.ProducerEpoch = -1, -1
		resp, err := req.RequestWith(ctx, c.cl)
		if err != nil {
			return fmt.Errorf("bridge/kafka: fence %s: %w", c.t.cfg.TransactionalID, err)
		}
		err = kerr.ErrorForCode(resp.ErrorCode)
		if err == nil {
			return nil
		}
		if !kerr.IsRetriable(err) && !errors.Is(err, kerr.ConcurrentTransactions) {
			return fmt.Errorf("bridge/kafka: fence %s: %w", c.t.cfg.TransactionalID, err)
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *conn) ensureCheckpointTopic(ctx context.Context) error {
	adm := kadm.NewClient(c.cl)
	resp, err := adm.CreateTopic(ctx, 1, -1, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}, c.t.cfg.CheckpointTopic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("bridge/kafka: create checkpoint topic %s: %w", c.t.cfg.CheckpointTopic, err)
	}
	return nil
}

func (c *conn) checkpointKey(tp bridge.TP) string {
	return c.t.cfg.NodeID + "/" + tp.Topic + "/" + strconv.Itoa(int(tp.Partition))
}

// Checkpoints reads the committed checkpoints (exactly-once only): the
// checkpoint topic from its start to its last stable offset, skipping
// aborted transactions, as a read_committed consumer does.
func (c *conn) Checkpoints(ctx context.Context, tps []bridge.TP) (map[bridge.TP]bridge.Progress, error) {
	if !c.t.eos() {
		return nil, nil
	}
	want := map[string]bridge.TP{}
	for _, tp := range tps {
		want[c.checkpointKey(tp)] = tp
	}
	out := map[bridge.TP]bridge.Progress{}
	err := readCommitted(ctx, c.cl, c.t.cfg.CheckpointTopic, func(key, value []byte) {
		if tp, ok := want[string(key)]; ok {
			var p bridge.Progress
			if json.Unmarshal(value, &p) == nil {
				out[tp] = p
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("bridge/kafka: read checkpoints: %w", err)
	}
	return out, nil
}

// Send delivers one batch: a transaction with the records and the
// checkpoints (exactly-once), or the records alone (at-least-once).
func (c *conn) Send(ctx context.Context, b *bridge.Batch) error {
	if c.t.eos() {
		if err := c.cl.BeginTransaction(); err != nil {
			return fmt.Errorf("bridge/kafka: begin transaction: %w", err)
		}
	}
	var (
		mu       sync.Mutex
		firstErr error
	)
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		}
	}
	// The records, their headers and the provenance values are carved out
	// of a few arrays per batch rather than allocated one by one: kgo
	// holds them until Flush returns, and so does this Send.
	node := []byte(c.t.cfg.NodeID)
	recs := make([]kgo.Record, len(b.Items))
	nh := 0
	for i := range b.Items {
		nh += len(b.Items[i].Record.Headers) + 4
	}
	hdrs := make([]kgo.RecordHeader, 0, nh)
	digits := make([]byte, 0, len(b.Items)*16)
	names := map[string][]byte{}
	for i := range b.Items {
		it := &b.Items[i]
		r := &recs[i]
		r.Topic, r.Key, r.Value, r.Timestamp = c.t.cfg.Topics[it.Topic], it.Record.Key, it.Record.Value, time.UnixMilli(it.Record.Timestamp)
		first := len(hdrs)
		for _, h := range it.Record.Headers {
			hdrs = append(hdrs, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		name, ok := names[it.Topic]
		if !ok {
			name = []byte(it.Topic)
			names[it.Topic] = name
		}
		p0 := len(digits)
		digits = strconv.AppendInt(digits, int64(it.Partition), 10)
		p1 := len(digits)
		digits = strconv.AppendInt(digits, it.Record.Offset, 10)
		o1 := len(digits)
		hdrs = append(hdrs,
			kgo.RecordHeader{Key: "ferry.node", Value: node},
			kgo.RecordHeader{Key: "ferry.topic", Value: name},
			kgo.RecordHeader{Key: "ferry.partition", Value: digits[p0:p1:p1]},
			kgo.RecordHeader{Key: "ferry.offset", Value: digits[p1:o1:o1]})
		r.Headers = hdrs[first:len(hdrs):len(hdrs)]
		c.cl.Produce(ctx, r, promise)
	}
	if c.t.eos() {
		for tp, p := range b.Progress {
			v, _ := json.Marshal(p)
			c.cl.Produce(ctx, &kgo.Record{Topic: c.t.cfg.CheckpointTopic, Key: []byte(c.checkpointKey(tp)), Value: v}, promise)
		}
	}
	err := c.cl.Flush(ctx)
	mu.Lock()
	if err == nil {
		err = firstErr
	}
	mu.Unlock()
	if !c.t.eos() {
		if err != nil {
			return fmt.Errorf("bridge/kafka: produce: %w", err)
		}
		return nil
	}
	if err != nil {
		c.abort(ctx)
		return fmt.Errorf("bridge/kafka: produce in transaction: %w", err)
	}
	if err := c.cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		// Unconfirmed or refused: the engine reconnects, and the fence
		// plus the committed checkpoints tell what made it.
		return fmt.Errorf("bridge/kafka: commit: %w", err)
	}
	return nil
}

// abort drops what is buffered and aborts the open transaction, within
// what is left of the Send's deadline: once the engine gave up on the
// Send (stall watchdog, Close) it must not wait for produce requests a
// silent upstream never answers. Errors are moot: the engine closes this
// client, reconnects, and its fence aborts whatever is still open.
func (c *conn) abort(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	_ = c.cl.AbortBufferedRecords(ctx)
	_ = c.cl.EndTransaction(ctx, kgo.TryAbort)
}
