package kafka

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/bridge"
)

// link is the uplink between the gateway and the upstream, as a kgo
// dialer: while it is down dials are refused, and cutting it closes every
// live connection.
type link struct {
	mu struct {
		sync.Mutex
		down  bool
		conns map[*linkConn]struct{}
	}
	refused atomic.Int64 // dials refused while down
	severed atomic.Int64 // live connections closed by cuts
}

func newLink() *link {
	l := &link{}
	l.mu.conns = map[*linkConn]struct{}{}
	return l
}

var errLinkDown = errors.New("test link: down")

func (l *link) dial(ctx context.Context, network, host string) (net.Conn, error) {
	if l.isDown() {
		l.refused.Add(1)
		return nil, errLinkDown
	}
	c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, network, host)
	if err != nil {
		return nil, err
	}
	lc := &linkConn{Conn: c, l: l}
	l.mu.Lock()
	down := l.mu.down
	if !down {
		l.mu.conns[lc] = struct{}{}
	}
	l.mu.Unlock()
	if down { // cut while dialling
		c.Close()
		l.refused.Add(1)
		return nil, errLinkDown
	}
	return lc, nil
}

func (l *link) isDown() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.down
}

// cut takes the link down and closes the live connections.
func (l *link) cut() {
	l.mu.Lock()
	l.mu.down = true
	conns := make([]*linkConn, 0, len(l.mu.conns))
	for c := range l.mu.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.Close()
		l.severed.Add(1)
	}
}

func (l *link) restore() {
	l.mu.Lock()
	l.mu.down = false
	l.mu.Unlock()
}

type linkConn struct {
	net.Conn
	l    *link
	once sync.Once
}

func (c *linkConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.mu.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// dropNext makes the cluster swallow the next request with this key: it
// is never handled nor answered, and its connection processes nothing
// more (kfake answers a connection's requests in order), so the client
// sees an upstream that is up but silent.
func dropNext(c *kfake.Cluster, key kmsg.Key) {
	c.ControlKey(int16(key), func(kmsg.Request) (kmsg.Response, error, bool) {
		return nil, nil, true // handled, no answer: dropped
	})
}

// delayNext holds the next request with this key for d, then lets the
// cluster handle it normally: the answer comes late, after the client may
// have given up on it (a delayed EndTxn may commit after the bridge
// abandoned the transaction).
func delayNext(c *kfake.Cluster, key kmsg.Key, d time.Duration) {
	var once atomic.Bool
	c.ControlKey(int16(key), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.DropControl()
		if once.Swap(true) {
			return nil, nil, false
		}
		c.SleepControl(func() { time.Sleep(d) })
		return nil, nil, false
	})
}

// ingester appends live records while the test runs: every, n records.
type ingester struct {
	e    *edge
	next int // owned by the ingest goroutine until halt
	err  error
	stop chan struct{}
	wg   sync.WaitGroup
}

func startIngest(e *edge, from, n, devices int, every time.Duration) *ingester {
	in := &ingester{e: e, next: from, stop: make(chan struct{})}
	in.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-in.stop:
				return
			case <-t.C:
			}
			if in.err = in.e.tryProduce("telemetry", in.next, n, devices); in.err != nil {
				return
			}
			in.next += n
		}
	})
	return in
}

// halt stops the ingest and returns the next sequence number.
func (in *ingester) halt(t *testing.T) int {
	t.Helper()
	close(in.stop)
	in.wg.Wait()
	if in.err != nil {
		t.Fatalf("live ingest: %v", in.err)
	}
	return in.next
}

func counter(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }

func failures(m *bridge.Metrics, kind string) float64 {
	return counter(m.Failures.WithLabelValues("kafka", kind))
}
