package kafkaserver

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/kafkaserver/group"
	"github.com/ferry-iot/ferry/broker/state"
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

// env is a listener over a log and state store in a temporary directory.
type env struct {
	t       *testing.T
	dir     string
	srv     *Server
	log     *commitlog.Log
	st      *state.Store
	groups  *group.Coordinator
	metrics *Metrics
	reg     *prometheus.Registry
	cfg     Config
	logOpts []commitlog.Option
}

type envOpt func(*env)

func withCfg(fn func(*Config)) envOpt { return func(e *env) { fn(&e.cfg) } }

// withLogOpts adds options to the log's Open (a fault-injecting FS).
func withLogOpts(opts ...commitlog.Option) envOpt {
	return func(e *env) { e.logOpts = append(e.logOpts, opts...) }
}

func newEnv(t *testing.T, opts ...envOpt) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), reg: prometheus.NewRegistry()}
	e.metrics = NewMetrics(e.reg)
	e.cfg = Config{Listen: "127.0.0.1:0", Logger: quiet(), Metrics: e.metrics, AutoCreateTopics: true,
		TopicDefaults: commitlog.TopicConfig{Partitions: 3}}
	for _, o := range opts {
		o(e)
	}
	e.open()
	t.Cleanup(e.close)
	return e
}

func (e *env) open() {
	t := e.t
	var err error
	if e.st, err = state.Open(filepath.Join(e.dir, "state")); err != nil {
		t.Fatal(err)
	}
	if e.log, err = commitlog.Open(filepath.Join(e.dir, "log"), append([]commitlog.Option{commitlog.WithLogger(quiet())}, e.logOpts...)...); err != nil {
		t.Fatal(err)
	}
	e.groups = newTestGroups(t, e.st, e.log)
	if e.srv, err = New(e.cfg, e.log, e.groups, e.st); err != nil {
		t.Fatal(err)
	}
	e.srv.Start()
}

func (e *env) close() {
	if e.srv == nil {
		return
	}
	if err := e.srv.Close(); err != nil {
		e.t.Error(err)
	}
	closeTestGroups(e.t, e.groups)
	if err := e.log.Close(); err != nil {
		e.t.Error(err)
	}
	if err := e.st.Close(); err != nil {
		e.t.Error(err)
	}
	e.srv = nil
}

// restart closes everything and opens it again on the same directories.
func (e *env) restart() {
	addr := e.srv.Addr().String()
	e.close()
	e.cfg.Listen = addr
	e.open()
}

func (e *env) addr() string { return e.srv.Addr().String() }

func (e *env) client(opts ...kgo.Opt) *kgo.Client {
	e.t.Helper()
	base := []kgo.Opt{kgo.SeedBrokers(e.addr()), kgo.FetchMaxWait(200 * time.Millisecond), kgo.RetryTimeout(20 * time.Second)}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(cl.Close)
	return cl
}

func (e *env) topic(name string, cfg commitlog.TopicConfig) *commitlog.Topic {
	e.t.Helper()
	t, err := e.log.EnsureTopic(name, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return t
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
