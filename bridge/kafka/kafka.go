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
// An idempotent producer; no upstream checkpoints, the engine's local ones
// rule, and a record whose acknowledgement was lost is sent again (counted
// by the engine as resent). An upstream without InitProducerId (Kafka
// before 0.11, some Kafka-compatible services) is detected on connect and
// logged once; the target then produces without idempotence (acks=all,
// one request in flight per broker so retries keep order), where kgo's
// own retry of a request whose answer was lost can also store a record
// twice, uncounted. Exactly-once against such an upstream is a
// configuration error (bridge.ErrMisconfigured).
//
// # What the upstream takes
//
// Connect asks the upstream for max.message.bytes of the upstream topics
// (message.max.bytes of a broker for topics not created yet) and caps the
// producer's batches below it; the session's bridge.Limits tell the engine
// the largest record that fits, so a larger one is rejected before it is
// sent. A record or batch the upstream refuses for good anyway
// (MESSAGE_TOO_LARGE, INVALID_RECORD, INVALID_TIMESTAMP, ...) is reported
// as a *bridge.RejectedError — exact when it was the only record of its
// upstream partition in the Send, suspect otherwise — after the
// transaction was aborted; the engine passes over it, and the next transaction
// records the rejection in the checkpoint topic (key
// "<node_id>/<topic>/<partition>/<offset>/rejected") with the checkpoint
// that passes it.
//
// # Errors that need an operator
//
// Refused credentials (SASL), an untrusted or refused certificate, denied
// authorizations and missing transactions are wrapped in
// bridge.ErrMisconfigured: the engine retries them at its maximum backoff
// only.
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
	"maps"
	"regexp"
	"slices"
	"strconv"
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
	CheckpointTopic string // default DefaultCheckpointTopic
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
		c.CheckpointTopic = DefaultCheckpointTopic
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
	checkpoints := c.CheckpointTopic
	if checkpoints == "" {
		checkpoints = DefaultCheckpointTopic
	} else if err := ValidTopicName(checkpoints); err != nil {
		errs = append(errs, fmt.Errorf("%w (the checkpoint topic)", err))
	}
	eos := c.Delivery == "" || c.Delivery == ExactlyOnce
	for _, edge := range slices.Sorted(maps.Keys(c.Topics)) {
		switch up := c.Topics[edge]; {
		case up == "":
			errs = append(errs, fmt.Errorf("bridge/kafka: topic %s maps to an empty upstream name", edge))
		case ValidTopicName(up) != nil:
			errs = append(errs, fmt.Errorf("%w (the upstream of edge topic %s)", ValidTopicName(up), edge))
		case eos && up == checkpoints:
			errs = append(errs, fmt.Errorf("bridge/kafka: topic %s maps to the checkpoint topic %s", edge, up))
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

// DefaultCheckpointTopic is the upstream topic of the exactly-once
// checkpoints when Config.CheckpointTopic is empty.
const DefaultCheckpointTopic = "ferry.checkpoints"

// topicNameRE is Kafka's alphabet and length for topic names.
var topicNameRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// ValidTopicName applies Kafka's rule for topic names (1 to 249 of
// [a-zA-Z0-9._-], neither "." nor ".."): the upstream's rule, which
// allows longer names than the edge log (log.ValidTopicName).
func ValidTopicName(name string) error {
	if !topicNameRE.MatchString(name) || name == "." || name == ".." {
		return fmt.Errorf("bridge/kafka: topic %q is not a Kafka topic name (1-249 of [a-zA-Z0-9._-], not . or ..)", name)
	}
	return nil
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

// Target replicates to one Kafka cluster. Connect is called by one
// engine's run goroutine at a time.
type Target struct {
	cfg       Config
	wireBytes atomic.Int64 // bytes written to the upstream's sockets (all requests)

	// shape is what the last probe found: the next client starts with
	// it. Only Connect touches it (one engine's run goroutine at a time).
	shape shape
	// Fixed in New: what Send writes for each edge topic, and the
	// ferry.node header value. Header values are shared by every record
	// (kgo only reads them).
	edges map[string]edgeTopic
	node  []byte

	warnedNoIdempotence atomic.Bool  // logged once per Target
	clients             atomic.Int64 // kgo clients built (tests: one per Connect in the common case)
	saslDropped         atomic.Int64 // SASLAuthenticate answers that never came (OnBrokerRead)
}

// edgeTopic is what Send needs of an edge topic.
type edgeTopic struct {
	upstream string // the upstream topic
	name     []byte // the ferry.topic header value
}

// shape is what the producer client is built for.
type shape struct {
	batchMax   int  // kgo.ProducerBatchMaxBytes
	idempotent bool // false: the upstream lacks InitProducerId (at-least-once only)
}

// kafkaDefaultMaxMessage is Kafka's default message.max.bytes (1 MiB + 12).
const kafkaDefaultMaxMessage = 1<<20 + 12

// defaultBatchMax is the producer's batch limit when the upstream takes
// more: what batchMaxFor gives for Kafka's default message.max.bytes, so
// that against an upstream with the default the first client built is
// the right one (a second one costs a dial, TLS, SASL and a ping).
const defaultBatchMax = kafkaDefaultMaxMessage - 1024

// batchMaxFor is the producer's batch limit for an upstream taking
// batches of maxMessage bytes: kgo bounds a batch's uncompressed size,
// while the broker checks the compressed batch, which for incompressible
// records is a little larger: keep a margin.
func batchMaxFor(maxMessage int) int {
	return min(defaultBatchMax, maxMessage-min(1024, maxMessage/8))
}

// New checks cfg and returns the target.
func New(cfg Config) (*Target, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.ensureDefaults()
	t := &Target{cfg: cfg, node: clipped(cfg.NodeID), edges: make(map[string]edgeTopic, len(cfg.Topics))}
	for edge, up := range cfg.Topics {
		t.edges[edge] = edgeTopic{upstream: up, name: clipped(edge)}
	}
	t.shape = shape{batchMax: defaultBatchMax, idempotent: true}
	return t, nil
}

// clipped is s as bytes with no room to append into.
func clipped(s string) []byte {
	b := []byte(s)
	return b[:len(b):len(b)]
}

// WireBytes is the number of bytes written to the upstream so far
// (requests of every kind, after compression, before TLS); it implements
// bridge.WireCounter.
func (t *Target) WireBytes() int64 { return t.wireBytes.Load() }

// OnBrokerWrite implements kgo.HookBrokerWrite.
func (t *Target) OnBrokerWrite(_ kgo.BrokerMetadata, _ int16, n int, _, _ time.Duration, _ error) {
	t.wireBytes.Add(int64(n))
}

// OnBrokerRead implements kgo.HookBrokerRead. It counts connections the
// upstream closed instead of answering SASLAuthenticate: Kafka before 1.0
// (raw SASL tokens) and kfake refuse credentials that way, not with
// SASL_AUTHENTICATION_FAILED.
func (t *Target) OnBrokerRead(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err != nil && key == int16(kmsg.SASLAuthenticate) {
		t.saslDropped.Add(1)
	}
}

// ping checks the client reaches the upstream. A connection closed while
// authenticating is reported as refused credentials (a link cut at that
// very moment is mistaken for one: it costs one retry at max backoff).
func (t *Target) ping(ctx context.Context, cl *kgo.Client) error {
	dropped := t.saslDropped.Load()
	err := cl.Ping(ctx)
	if err == nil {
		return nil
	}
	if t.cfg.SASL != nil && t.saslDropped.Load() > dropped {
		err = fmt.Errorf("the upstream closed the connection instead of accepting the credentials: %w (%w)", kerr.SaslAuthenticationFailed, err)
	}
	return t.classify(fmt.Errorf("bridge/kafka: %w", err))
}

func (t *Target) eos() bool { return t.cfg.Delivery == ExactlyOnce }

func (t *Target) client(sh shape) (*kgo.Client, error) {
	comp, _ := codec(t.cfg.Compression)
	opts := []kgo.Opt{
		kgo.SeedBrokers(t.cfg.Brokers...),
		kgo.ProducerBatchCompression(comp),
		kgo.AllowAutoTopicCreation(),
		kgo.ProducerLinger(0),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.WithHooks(t),
		kgo.MaxBufferedRecords(1 << 20),
		kgo.ProducerBatchMaxBytes(int32(sh.batchMax)),
		kgo.RecordRetries(5),
	}
	if !sh.idempotent {
		// acks=all stays; without idempotence kgo keeps one produce
		// request in flight per broker, so a retry cannot reorder.
		opts = append(opts, kgo.DisableIdempotentWrite())
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
	t.clients.Add(1)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("bridge/kafka: client: %w", err)
	}
	return cl, nil
}

// Connect opens a client shaped for the upstream (see probe), and for
// exactly-once fences the previous instance and makes sure the checkpoint
// topic exists.
func (t *Target) Connect(ctx context.Context) (bridge.Conn, error) {
	sh := t.shape
	cl, err := t.client(sh)
	if err != nil {
		return nil, err
	}
	if err := t.ping(ctx, cl); err != nil {
		cl.Close()
		return nil, err
	}
	up, err := t.probe(ctx, cl)
	if err != nil {
		cl.Close()
		return nil, t.classify(fmt.Errorf("bridge/kafka: ask the upstream what it supports: %w", err))
	}
	if t.eos() && up.missingTxn != "" {
		cl.Close()
		return nil, fmt.Errorf("bridge/kafka: %w: the upstream does not support transactions (no %s), which exactly_once needs: use delivery at_least_once",
			bridge.ErrMisconfigured, up.missingTxn)
	}
	want := t.shapeFor(up)
	if want != sh {
		cl.Close()
		t.shape = want
		if cl, err = t.client(want); err != nil {
			return nil, err
		}
		if err := t.ping(ctx, cl); err != nil {
			cl.Close()
			return nil, err
		}
	}
	c := &conn{t: t, cl: cl, shape: want}
	if t.eos() {
		if err := c.fence(ctx); err != nil {
			cl.Close()
			return nil, t.classify(err)
		}
		if err := c.ensureCheckpointTopic(ctx); err != nil {
			cl.Close()
			return nil, t.classify(err)
		}
	}
	return c, nil
}

// shapeFor decides the client for what the probe found, logging what
// changes the target's behaviour.
func (t *Target) shapeFor(up upstreamInfo) shape {
	sh := shape{batchMax: defaultBatchMax, idempotent: up.missingIdempotence == ""}
	if up.maxMessage > 0 {
		sh.batchMax = batchMaxFor(up.maxMessage)
	}
	if !sh.idempotent && !t.warnedNoIdempotence.Swap(true) {
		t.cfg.Logger.Warn("bridge/kafka: the upstream does not support idempotent producing; at-least-once without idempotence: "+
			"a produce retried after a lost answer may be stored twice", "missing", up.missingIdempotence)
	}
	if sh.batchMax != t.shape.batchMax {
		t.cfg.Logger.Info("bridge/kafka: producer batches sized to what the upstream takes", "max_message_bytes", up.maxMessage,
			"batch_max_bytes", sh.batchMax)
	}
	return sh
}

type conn struct {
	t     *Target
	cl    *kgo.Client
	shape shape
}

func (c *conn) Close() error {
	c.cl.Close()
	return nil
}

// Limits implements bridge.Limited: the largest record that fits a
// producer batch with its framing and provenance headers.
func (c *conn) Limits() bridge.Limits {
	overhead := 512 + len(c.t.cfg.NodeID)
	for edge := range c.t.cfg.Topics {
		overhead = max(overhead, 512+len(c.t.cfg.NodeID)+len(edge))
	}
	return bridge.Limits{MaxRecordBytes: max(c.shape.batchMax-overhead, 1)}
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

// Checkpoints implements bridge.Checkpointer: it reads the committed
// checkpoints (exactly-once only): the checkpoint topic from its start to
// its last stable offset, skipping aborted transactions, as a
// read_committed consumer does.
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
