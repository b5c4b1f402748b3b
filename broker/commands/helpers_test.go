package commands

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/state"
	"github.com/ferry-iot/ferry/broker/testkit"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fakeSender answers RPCs as the test programs it: devices can be
// offline or unknown, calls can be held until released, and every call is
// recorded.
type fakeSender struct {
	mu      sync.Mutex
	calls   []Request
	offline map[string]bool
	unknown map[string]bool
	hold    map[string]bool // calls for these devices wait for release (or ctx)
	release chan struct{}   // a receive lets one held call go on
	answer  func(Request) (json.RawMessage, error)
	called  chan Request // every call, if not nil (buffered by the test)
}

func newFakeSender() *fakeSender {
	return &fakeSender{offline: map[string]bool{}, unknown: map[string]bool{}, hold: map[string]bool{},
		release: make(chan struct{})}
}

func (f *fakeSender) RPC(ctx context.Context, r Request) (json.RawMessage, error) {
	f.mu.Lock()
	f.calls = append(f.calls, r)
	offline, unknown, hold, answer, called := f.offline[r.Device], f.unknown[r.Device], f.hold[r.Device] || f.hold["*"], f.answer, f.called
	f.mu.Unlock()
	if called != nil {
		called <- r
	}
	switch {
	case unknown:
		return nil, fmt.Errorf("%w: %s", ErrUnknownDevice, r.Device)
	case offline:
		return nil, fmt.Errorf("%w: %s is not connected", ErrOffline, r.Device)
	}
	if hold {
		select {
		case <-f.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if answer != nil {
		return answer(r)
	}
	return json.RawMessage(fmt.Sprintf(`{"echo":%q}`, r.Method)), nil
}

func (f *fakeSender) set(fn func(f *fakeSender)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeSender) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fakeSender) snapshot() []Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Request(nil), f.calls...)
}

func (f *fakeSender) methods(device string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if c.Device == device {
			out = append(out, c.Method)
		}
	}
	return out
}

// env is a dispatcher over a log and a state store in a temporary
// directory, so that a test can close everything and open it again.
type env struct {
	t       *testing.T
	dir     string
	logOpts []commitlog.Option // more options for the log, each time it opens
	cfg     Config
	log     *commitlog.Log
	st      *state.Store
	d       *Dispatcher
	sender  *fakeSender
	metrics *Metrics
	tune    func(*Dispatcher)
}

func newEnv(t *testing.T, cfg Config, sender *fakeSender, logOpts ...commitlog.Option) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), cfg: cfg, sender: sender, logOpts: logOpts}
	e.open()
	t.Cleanup(e.close)
	return e
}

// open opens the log and the store (not the dispatcher).
func (e *env) open() {
	e.t.Helper()
	var err error
	opts := append([]commitlog.Option{commitlog.WithLogger(quiet()), commitlog.WithMinFreeRatio(0), commitlog.WithRetentionInterval(time.Hour)}, e.logOpts...)
	if e.log, err = commitlog.Open(filepath.Join(e.dir, "log"), opts...); err != nil {
		e.t.Fatal(err)
	}
	if e.st, err = state.Open(filepath.Join(e.dir, "state"), state.WithLogger(quiet())); err != nil {
		e.t.Fatal(err)
	}
}

// start creates and starts a dispatcher with short retry timings (tune
// may change them).
func (e *env) start() {
	e.t.Helper()
	cfg := e.cfg
	cfg.Logger = quiet()
	e.metrics = NewMetrics(prometheus.NewRegistry())
	cfg.Metrics = e.metrics
	d, err := New(cfg, e.log, e.st, e.sender)
	if err != nil {
		e.t.Fatal(err)
	}
	d.retryMin, d.retryMax, d.growthPeriod = 10*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	if e.tune != nil {
		e.tune(d)
	}
	if err := d.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.d = d
}

// stopDispatcher closes the dispatcher only.
func (e *env) stopDispatcher() {
	e.t.Helper()
	if e.d != nil {
		if err := e.d.Close(); err != nil {
			e.t.Errorf("close dispatcher: %v", err)
		}
		e.d = nil
	}
}

func (e *env) close() {
	e.stopDispatcher()
	if e.log != nil {
		if err := e.log.Close(); err != nil {
			e.t.Errorf("close log: %v", err)
		}
		e.log = nil
	}
	if e.st != nil {
		if err := e.st.Close(); err != nil {
			e.t.Errorf("close store: %v", err)
		}
		e.st = nil
	}
}

// restart closes everything and opens it again from the same directories.
func (e *env) restart() {
	e.t.Helper()
	e.close()
	e.open()
	e.start()
}

func (e *env) topic(name string) *commitlog.Topic {
	e.t.Helper()
	tp, err := e.log.Topic(name)
	if err != nil {
		e.t.Fatal(err)
	}
	return tp
}

// produce appends one command record and returns its offset.
func (e *env) produce(key, value string, headers ...commitlog.Header) int64 {
	e.t.Helper()
	rec := commitlog.Record{Value: []byte(value), Headers: headers}
	if key != "" {
		rec.Key = []byte(key)
	}
	return e.produceRecord(rec)
}

func (e *env) produceRecord(rec commitlog.Record) int64 {
	e.t.Helper()
	name := e.cfg.Topic
	if name == "" {
		name = DefaultTopic
	}
	tp, err := ensureTopic(e.log, name) // producing before the dispatcher's New
	if err != nil {
		e.t.Fatal(err)
	}
	off, err := tp.Append(context.Background(), []commitlog.Record{rec}).Wait(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return off
}

// response is a response record with its value decoded.
type response struct {
	Response
	rec commitlog.Record
}

func (r response) header(key string) string {
	for _, h := range r.rec.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// allResponses returns every response record, ordered by request partition
// and offset.
func (e *env) allResponses() []response {
	e.t.Helper()
	name := e.cfg.Responses
	if name == "" {
		name = DefaultResponses
	}
	var out []response
	for _, p := range e.topic(name).Partitions() {
		for off := p.StartOffset(); off < p.HighWatermark(); {
			recs, next, _, err := p.ReadRecords(off, 1<<20)
			if err != nil {
				e.t.Fatal(err)
			}
			for _, rec := range recs {
				var r response
				if err := json.Unmarshal(rec.Value, &r.Response); err != nil {
					e.t.Fatalf("response value %q: %v", rec.Value, err)
				}
				r.rec = rec
				out = append(out, r)
			}
			off = next
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].RequestPartition != out[j].RequestPartition {
			return out[i].RequestPartition < out[j].RequestPartition
		}
		return out[i].RequestOffset < out[j].RequestOffset
	})
	return out
}

// waitResponses waits until there are n response records and returns them.
func (e *env) waitResponses(n int) []response {
	e.t.Helper()
	var rs []response
	testkit.Eventually(e.t, 10*time.Second, func() bool { rs = e.allResponses(); return len(rs) >= n },
		"%d responses (have %+v)", n, &rs)
	return rs
}
