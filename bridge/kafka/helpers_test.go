package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/ferry-iot/ferry/bridge"
	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/state"
	"github.com/ferry-iot/ferry/broker/testkit"
)

func TestMain(m *testing.M) {
	if os.Getenv(childDirEnv) != "" {
		os.Exit(bridgeChild()) // a gateway process for TestSIGKILLMidTransaction
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// quiet is the tests' logger: discarded, or on stderr with
// FERRY_TEST_LOG=1 (debugging).
func quiet() *slog.Logger {
	if os.Getenv("FERRY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// edge is a gateway's log and state store in a directory that survives
// "restarts" of the engine.
type edge struct {
	t   testing.TB
	dir string
	log *commitlog.Log
	st  *state.Store
}

func newEdge(t testing.TB, dir string, logOpts ...commitlog.Option) *edge {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	e := &edge{t: t, dir: dir}
	var err error
	if e.st, err = state.Open(filepath.Join(dir, "state")); err != nil {
		t.Fatal(err)
	}
	if e.log, err = commitlog.Open(filepath.Join(dir, "log"), append([]commitlog.Option{commitlog.WithLogger(quiet())}, logOpts...)...); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *edge) close() {
	if err := e.log.Close(); err != nil {
		e.t.Error(err)
	}
	if err := e.st.Close(); err != nil {
		e.t.Error(err)
	}
}

// produce appends n telemetry-like records keyed by device (devices
// devices) starting at sequence from, and waits until they are durable.
func (e *edge) produce(topic string, from, n, devices int) {
	e.t.Helper()
	if err := e.tryProduce(topic, from, n, devices); err != nil {
		e.t.Fatal(err)
	}
}

// tryProduce is produce returning the error (for other goroutines).
func (e *edge) tryProduce(topic string, from, n, devices int) error {
	tp, err := e.log.EnsureTopic(topic, commitlog.TopicConfig{Partitions: 3, Compression: commitlog.CompressionZstd})
	if err != nil {
		return err
	}
	return appendTelemetry(tp, from, n, devices)
}

// telemetry is the record produce writes for sequence i.
func telemetry(i, devices int) commitlog.Record {
	dev := "dev-" + strconv.Itoa(i%devices)
	return commitlog.Record{Key: []byte(dev), Timestamp: 1_700_000_000_000 + int64(i),
		Value:   []byte(fmt.Sprintf(`{"ts":%d,"values":{"seq":%d,"temperature":21.5}}`, 1_700_000_000_000+i, i)),
		Headers: []commitlog.Header{{Key: "device", Value: []byte(dev)}, {Key: "seq", Value: []byte(strconv.Itoa(i))}}}
}

// appendTelemetry appends records from..from+n-1 to tp in appends of 100
// and waits for all of them.
func appendTelemetry(tp *commitlog.Topic, from, n, devices int) error {
	var fs []*commitlog.Future
	recs := make([]commitlog.Record, 0, 100)
	for i := from; i < from+n; i++ {
		recs = append(recs, telemetry(i, devices))
		if len(recs) == cap(recs) || i == from+n-1 {
			fs = append(fs, tp.Append(context.Background(), recs))
			recs = make([]commitlog.Record, 0, 100)
		}
	}
	var errs []error
	for _, f := range fs {
		if _, err := f.Wait(context.Background()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (e *edge) total(topic string) int64 {
	t, err := e.log.Topic(topic)
	if err != nil {
		return 0
	}
	var n int64
	for _, p := range t.Partitions() {
		n += p.HighWatermark()
	}
	return n
}

func cluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(4)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// upstream reads a topic from the cluster (read_committed) and indexes
// the records by provenance.
type upstream struct {
	recs  []*kgo.Record
	byPos map[string]int // "topic/partition/offset" → copies
}

// readUpstream reads topic until it holds at least want records and
// nothing more comes; opts reach the client (TLS, SASL).
func readUpstream(t *testing.T, addrs []string, topic string, want int, timeout time.Duration, opts ...kgo.Opt) *upstream {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	u := &upstream{byPos: map[string]int{}}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	quietFor := 0
	for ctx.Err() == nil {
		pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		fs := cl.PollFetches(pctx)
		pcancel()
		n := 0
		fs.EachRecord(func(r *kgo.Record) {
			n++
			u.recs = append(u.recs, r)
			u.byPos[prov(r)]++
		})
		if n == 0 && len(u.recs) >= want {
			if quietFor++; quietFor >= 2 {
				break // nothing more is coming
			}
		}
	}
	return u
}

func header(r *kgo.Record, k string) string {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

func prov(r *kgo.Record) string {
	return header(r, "ferry.topic") + "/" + header(r, "ferry.partition") + "/" + header(r, "ferry.offset")
}

// check asserts the upstream holds every edge record of topic exactly
// once (by provenance), each key in one upstream partition, and each
// key's records in edge order; it returns the duplicates.
func (u *upstream) check(t *testing.T, e *edge, topic string, allowDup bool) int {
	t.Helper()
	return u.verify(t, e, topic, allowDup, true)
}

// checkUnordered is check without the per-key order (live_first sends a
// key's newer records before its older ones).
func (u *upstream) checkUnordered(t *testing.T, e *edge, topic string, allowDup bool) int {
	t.Helper()
	return u.verify(t, e, topic, allowDup, false)
}

func (u *upstream) verify(t *testing.T, e *edge, topic string, allowDup, ordered bool) int {
	t.Helper()
	tp, _ := e.log.Topic(topic)
	missing, dups := 0, 0
	for _, p := range tp.Partitions() {
		for off := p.StartOffset(); off < p.HighWatermark(); off++ {
			n := u.byPos[fmt.Sprintf("%s/%d/%d", topic, p.ID(), off)]
			if n == 0 {
				missing++
			}
			if n > 1 {
				dups += n - 1
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d edge records missing upstream (upstream holds %d)", missing, len(u.recs))
	}
	if dups > 0 && !allowDup {
		t.Fatalf("%d edge records duplicated upstream", dups)
	}
	for _, r := range u.recs { // nothing upstream that the edge never had
		p, err := tp.Partition(int32(atoi(header(r, "ferry.partition"))))
		if header(r, "ferry.topic") != topic || err != nil || int64(atoi(header(r, "ferry.offset"))) >= p.HighWatermark() {
			t.Fatalf("upstream record with provenance %s is no edge record", prov(r))
		}
	}
	// Partitioning by key: each key in exactly one upstream partition.
	parts := map[string]map[int32]bool{}
	for _, r := range u.recs {
		k := string(r.Key)
		if parts[k] == nil {
			parts[k] = map[int32]bool{}
		}
		parts[k][r.Partition] = true
	}
	for k, ps := range parts {
		if len(ps) != 1 {
			t.Fatalf("key %s spread over upstream partitions %v", k, ps)
		}
	}
	if !ordered {
		return dups
	}
	// Per key order: upstream partition order must follow edge offsets.
	lastByKey := map[string]int64{}
	seenOnce := map[string]bool{}
	for _, r := range u.recs {
		if seenOnce[prov(r)] {
			continue // a duplicate (at-least-once) may come late
		}
		seenOnce[prov(r)] = true
		off, _ := strconv.ParseInt(header(r, "ferry.offset"), 10, 64)
		k := string(r.Key)
		if prev, ok := lastByKey[k]; ok && off < prev && !allowDup {
			t.Fatalf("key %s: edge offset %d upstream after %d", k, off, prev)
		}
		lastByKey[k] = off
	}
	return dups
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

// edgeRecords reads every record of topic from the edge log, by
// provenance "topic/partition/offset".
func (e *edge) edgeRecords(topic string) map[string]commitlog.Record {
	e.t.Helper()
	tp, err := e.log.Topic(topic)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]commitlog.Record{}
	for _, p := range tp.Partitions() {
		for pos := p.StartOffset(); pos < p.HighWatermark(); {
			recs, next, _, err := p.ReadRecords(pos, 1<<20)
			if err != nil {
				e.t.Fatal(err)
			}
			for _, r := range recs {
				out[fmt.Sprintf("%s/%d/%d", topic, p.ID(), r.Offset)] = r
			}
			if next <= pos {
				break
			}
			pos = next
		}
	}
	return out
}

// syncBuf is a logger's destination tests read.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func engineFor(t *testing.T, e *edge, tg *Target, cfg bridge.Config) *bridge.Engine {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "kafka"
	}
	if cfg.Topics == nil {
		cfg.Topics = []string{"telemetry"}
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = 50 * time.Millisecond
		cfg.MaxBackoff = 500 * time.Millisecond
	}
	en, err := bridge.New(cfg, e.log, e.st, tg)
	if err != nil {
		t.Fatal(err)
	}
	return en
}

func target(t *testing.T, addrs []string, delivery string, opts ...kgo.Opt) *Target {
	t.Helper()
	return targetWith(t, Config{Brokers: addrs, Delivery: delivery, Opts: opts})
}

// targetWith fills in the test defaults (topics, node id, logger).
func targetWith(t *testing.T, cfg Config) *Target {
	t.Helper()
	if cfg.Topics == nil {
		cfg.Topics = map[string]string{"telemetry": "site1.telemetry"}
	}
	if cfg.NodeID == "" {
		cfg.NodeID = "gw-test"
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	tg, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// waitLag waits until the engine has nothing left to send.
func waitLag(t *testing.T, en *bridge.Engine, timeout time.Duration) {
	t.Helper()
	var st bridge.Status
	testkit.Eventually(t, timeout, func() bool { st = en.Status(); return st.Lag == 0 && len(st.Partitions) > 0 },
		"the bridge to catch up (status %+v)", &st)
}

// txnMarkers reads topic read_uncommitted with its control records and
// counts the transactions that ended there: commits
// and aborts (a transaction spanning partitions counts once).
func txnMarkers(t *testing.T, addrs []string, topic string) (commits, aborts int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic), kgo.KeepControlRecords(),
		kgo.FetchIsolationLevel(kgo.ReadUncommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// A transaction's markers (one per partition it wrote) share producer
	// id, epoch and kind. Since KIP-890 every EndTxn bumps the epoch, and a
	// fence's abort takes the epoch the next transaction then commits
	// with, so the kind is part of the key.
	type txn struct {
		pid    int64
		epoch  int16
		commit bool
	}
	ended := map[txn]bool{}
	seen := 0
	for quiet, deadline := 0, time.Now().Add(30*time.Second); quiet < 2 && time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		n := 0
		fs.EachRecord(func(r *kgo.Record) {
			n++
			if r.Attrs.IsControl() && len(r.Key) >= 4 {
				ended[txn{r.ProducerID, r.ProducerEpoch, r.Key[3] == 1}] = true // key: version int16, type int16 (0 abort, 1 commit)
			}
		})
		if seen += n; n == 0 && seen > 0 {
			quiet++
		}
	}
	for k := range ended {
		if k.commit {
			commits++
		} else {
			aborts++
		}
	}
	return commits, aborts
}
