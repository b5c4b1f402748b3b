package netguard

import (
	"container/list"
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-iot/ferry/broker/ratelog"
)

// Config configures one guarded listener. Zero caps are unlimited.
type Config struct {
	// Name labels the listener in metrics, logs and Status ("mqtt",
	// "mqtt-tls", "mqtt-ws", "kafka", "http").
	Name string
	// MaxConns caps the open sockets, pending or authenticated.
	MaxConns int
	// MaxPending caps the sockets that have not authenticated yet.
	MaxPending int
	// AuthTimeout is the deadline (read and write) a socket has to
	// authenticate; 0: none (the owner sets its own deadlines).
	AuthTimeout time.Duration

	Logger  *slog.Logger // nil: discarded
	Metrics *Metrics     // nil: kept but not registered
}

// Backoff bounds of a failing Accept.
const (
	minBackoff = 5 * time.Millisecond
	maxBackoff = time.Second
)

// Listener is a guarded net.Listener (see the package doc).
type Listener struct {
	inner   net.Listener
	cfg     Config
	logger  *slog.Logger
	limiter *ratelog.Limiter
	m       labelled

	closed    chan struct{}
	closeOnce sync.Once

	mu           sync.Mutex
	open         int        // guarded by mu: sockets accepted and not yet closed
	pending      *list.List // guarded by mu: *Conn not yet authenticated, oldest first
	failing      error      // guarded by mu: the last Accept error, nil once one succeeds
	failingSince time.Time  // guarded by mu
	failures     int        // guarded by mu: failed accepts since the last success
}

// Wrap guards ln. Closing the returned Listener closes ln.
func Wrap(ln net.Listener, cfg Config) *Listener {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	l := &Listener{
		inner: ln, cfg: cfg, logger: cfg.Logger, limiter: ratelog.New(),
		m: cfg.Metrics.forListener(cfg.Name), closed: make(chan struct{}), pending: list.New(),
	}
	l.m.accepting.Set(1)
	return l
}

// Addr is the listening address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// Close stops accepting. Sockets already accepted stay open: their owners
// close them.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.inner.Close()
}

// Accept returns the next admitted socket. It returns an error only once
// the listener is closed.
func (l *Listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		nc, err := l.inner.Accept()
		if err != nil {
			select {
			case <-l.closed:
				return nil, err
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return nil, err
			}
			l.noteFailure(err)
			delay = min(max(2*delay, minBackoff), maxBackoff)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-l.closed:
				t.Stop()
				return nil, net.ErrClosed
			}
			continue
		}
		delay = 0
		l.noteSuccess()
		if c := l.admit(nc); c != nil {
			return c, nil
		}
	}
}

func (l *Listener) noteFailure(err error) {
	l.m.acceptErrors.Inc()
	l.m.accepting.Set(0)
	l.mu.Lock()
	if l.failing == nil {
		l.failingSince = time.Now()
	}
	l.failing = err
	l.failures++
	l.mu.Unlock()
	l.limiter.Warn(l.logger, "accept", "listener: accept failed, retrying", "listener", l.cfg.Name,
		"addr", l.Addr().String(), "err", err)
}

func (l *Listener) noteSuccess() {
	l.mu.Lock()
	failed, n, since := l.failing, l.failures, l.failingSince
	l.failing, l.failures = nil, 0
	l.mu.Unlock()
	if failed != nil {
		l.m.accepting.Set(1)
		l.logger.Info("listener: accepting again", "listener", l.cfg.Name, "addr", l.Addr().String(),
			"failed_accepts", n, "for", time.Since(since).Round(time.Millisecond).String(), "last_err", failed)
	}
}

// admit counts nc against the caps, closing the oldest pending sockets to
// make room, or refuses it (nil) when only authenticated sockets fill the
// connection cap.
func (l *Listener) admit(nc net.Conn) *Conn {
	var victims []*Conn
	l.mu.Lock()
	for l.cfg.MaxConns > 0 && l.open-len(victims) >= l.cfg.MaxConns ||
		l.cfg.MaxPending > 0 && l.pending.Len() >= l.cfg.MaxPending {
		v := l.evictOldestLocked()
		if v == nil {
			break
		}
		victims = append(victims, v)
	}
	if l.cfg.MaxConns > 0 && l.open-len(victims) >= l.cfg.MaxConns {
		l.mu.Unlock()
		l.closeVictims(victims)
		l.m.refused.Inc()
		l.limiter.Warn(l.logger, "max_connections", "listener: connection limit reached, refusing",
			"listener", l.cfg.Name, "limit", l.cfg.MaxConns)
		_ = nc.Close()
		return nil
	}
	c := &Conn{Conn: nc, l: l}
	l.open++
	c.elem = l.pending.PushBack(c)
	l.m.open.Set(float64(l.open))
	l.m.pending.Set(float64(l.pending.Len()))
	l.mu.Unlock()
	l.closeVictims(victims)
	if l.cfg.AuthTimeout > 0 {
		_ = nc.SetDeadline(time.Now().Add(l.cfg.AuthTimeout))
	}
	return c
}

// evictOldestLocked takes the oldest pending socket off the pending list
// (it still counts as open until closed) and returns it, or nil.
func (l *Listener) evictOldestLocked() *Conn {
	e := l.pending.Front()
	if e == nil {
		return nil
	}
	v := e.Value.(*Conn)
	l.pending.Remove(e)
	v.elem = nil
	v.evicted.Store(true)
	return v
}

func (l *Listener) closeVictims(victims []*Conn) {
	for _, v := range victims {
		l.m.evicted.Inc()
		_ = v.Close()
	}
	if len(victims) > 0 {
		l.limiter.Warn(l.logger, "evicted", "listener: too many connections waiting to authenticate, closed the oldest",
			"listener", l.cfg.Name, "max_pending", l.cfg.MaxPending, "max_connections", l.cfg.MaxConns)
	}
}

// release is called once per socket, when it closes.
func (l *Listener) release(c *Conn) {
	l.mu.Lock()
	l.open--
	if c.elem != nil {
		l.pending.Remove(c.elem)
		c.elem = nil
	}
	l.m.open.Set(float64(l.open))
	l.m.pending.Set(float64(l.pending.Len()))
	l.mu.Unlock()
}

func (l *Listener) authenticated(c *Conn) {
	l.mu.Lock()
	if c.elem != nil {
		l.pending.Remove(c.elem)
		c.elem = nil
	}
	l.m.pending.Set(float64(l.pending.Len()))
	l.mu.Unlock()
}

// Status is a listener's state for health checks.
type Status struct {
	Name      string    `json:"name"`
	Addr      string    `json:"addr"`
	Accepting bool      `json:"accepting"`
	Error     string    `json:"error,omitempty"` // the last accept error while not accepting
	Since     time.Time `json:"failing_since,omitzero"`
	Open      int       `json:"connections"`
	Pending   int       `json:"pending"`
}

// Status reports whether the listener is accepting and what it holds.
func (l *Listener) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := Status{Name: l.cfg.Name, Addr: l.Addr().String(), Accepting: l.failing == nil,
		Open: l.open, Pending: l.pending.Len()}
	if l.failing != nil {
		st.Error, st.Since = l.failing.Error(), l.failingSince
	}
	return st
}

// Conn is an admitted socket.
type Conn struct {
	net.Conn
	l         *Listener
	elem      *list.Element // guarded by l.mu: in l.pending while pending
	authed    atomic.Bool
	evicted   atomic.Bool
	timedOut  atomic.Bool
	closeOnce sync.Once
}

// NetConn is the underlying socket.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// Read counts a pending socket's deadline passing.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && !c.authed.Load() && c.l.cfg.AuthTimeout > 0 && isTimeout(err) && c.timedOut.CompareAndSwap(false, true) {
		c.l.m.authTimeouts.Inc()
	}
	return n, err
}

// Close closes the socket and gives its place back.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() { c.l.release(c) })
	return err
}

// Authenticated marks the socket as authenticated: it no longer counts as
// pending and its authentication deadline is lifted (the owner sets its
// own). It reports false for a socket already evicted (closed to make
// room), which the caller should then drop.
func (c *Conn) Authenticated() bool {
	if c.evicted.Load() {
		return false
	}
	if c.authed.CompareAndSwap(false, true) {
		c.l.authenticated(c)
		if c.l.cfg.AuthTimeout > 0 {
			_ = c.Conn.SetDeadline(time.Time{})
		}
	}
	return !c.evicted.Load()
}

// Authenticated marks the guarded socket under nc as authenticated,
// looking through wrappers that expose their socket with a NetConn method
// (*tls.Conn, a WebSocket stream). It reports false when nc is not a
// guarded socket or was evicted.
func Authenticated(nc net.Conn) bool {
	for nc != nil {
		if c, ok := nc.(*Conn); ok {
			return c.Authenticated()
		}
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			return false
		}
		nc = u.NetConn()
	}
	return false
}

type connKey struct{}

// WithConn returns ctx carrying nc, for http.Server.ConnContext: a handler
// can then mark its connection authenticated (AuthenticatedContext).
func WithConn(ctx context.Context, nc net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, nc)
}

// AuthenticatedContext marks the connection WithConn stored in ctx as
// authenticated.
func AuthenticatedContext(ctx context.Context) {
	if nc, ok := ctx.Value(connKey{}).(net.Conn); ok {
		Authenticated(nc)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
