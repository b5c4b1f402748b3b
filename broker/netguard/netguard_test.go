package netguard

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func listen(t *testing.T, cfg Config) *Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	l := Wrap(ln, cfg)
	t.Cleanup(func() { l.Close() })
	return l
}

// acceptor accepts in the background and hands the sockets over.
func acceptor(t *testing.T, l *Listener) <-chan net.Conn {
	t.Helper()
	ch := make(chan net.Conn, 64)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(ch)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			ch <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
		for c := range ch {
			c.Close()
		}
	})
	return ch
}

func dial(t *testing.T, l *Listener) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func next(t *testing.T, ch <-chan net.Conn) *Conn {
	t.Helper()
	select {
	case c := <-ch:
		return c.(*Conn)
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted")
		return nil
	}
}

// closedByServer reports whether the server closed c (the client reads EOF
// or a reset) within the wait.
func closedByServer(c net.Conn, wait time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(wait))
	_, err := c.Read(make([]byte, 1))
	return err != nil && !isTimeout(err)
}

// TestPendingEvictedOldestFirst: past MaxPending the oldest pending socket
// is closed; an authenticated one never is, and once authenticated sockets
// fill MaxConns a new socket is refused.
func TestPendingEvictedOldestFirst(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	l := listen(t, Config{MaxConns: 3, MaxPending: 2, Metrics: m})
	ch := acceptor(t, l)

	c1 := dial(t, l)
	s1 := next(t, ch)
	c2 := dial(t, l)
	s2 := next(t, ch)
	if st := l.Status(); st.Open != 2 || st.Pending != 2 {
		t.Fatalf("status %+v, want 2 open, 2 pending", st)
	}
	c3 := dial(t, l) // a third pending socket: c1, the oldest, goes
	s3 := next(t, ch)
	if !closedByServer(c1, 2*time.Second) {
		t.Fatal("the oldest pending socket was not closed")
	}
	if s1.Authenticated() {
		t.Fatal("an evicted socket reported itself authenticated")
	}
	if !s2.Authenticated() || !s3.Authenticated() {
		t.Fatal("authenticating a live socket failed")
	}
	if closedByServer(c2, 100*time.Millisecond) || closedByServer(c3, 100*time.Millisecond) {
		t.Fatal("a live socket was closed")
	}
	c4 := dial(t, l) // third open socket: fits MaxConns 3
	s4 := next(t, ch)
	s4.Authenticated()
	c5 := dial(t, l) // all three open sockets are authenticated: refused
	if !closedByServer(c5, 2*time.Second) {
		t.Fatal("a socket past the cap of authenticated ones was not refused")
	}
	for _, c := range []net.Conn{c2, c3, c4} {
		if closedByServer(c, 50*time.Millisecond) {
			t.Fatal("an authenticated socket was closed to make room")
		}
	}
	if got := testutil.ToFloat64(m.Evicted.WithLabelValues("test")); got != 1 {
		t.Fatalf("evicted = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.Refused.WithLabelValues("test")); got != 1 {
		t.Fatalf("refused = %v, want 1", got)
	}
	// A closed socket gives its place back.
	s2.Close()
	c6 := dial(t, l)
	s6 := next(t, ch)
	if closedByServer(c6, 100*time.Millisecond) {
		t.Fatal("a socket was refused after a place was given back")
	}
	if st := l.Status(); st.Open != 3 || st.Pending != 1 {
		t.Fatalf("status %+v, want 3 open, 1 pending", st)
	}
	s6.Close()
	s3.Close()
	s4.Close()
	if got := testutil.ToFloat64(m.Open.WithLabelValues("test")); got != 0 {
		t.Fatalf("open gauge %v after every socket closed, want 0", got)
	}
}

// TestAuthTimeout: a pending socket that does not authenticate in time is
// cut by its deadline (counted); an authenticated one has no deadline.
func TestAuthTimeout(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	l := listen(t, Config{AuthTimeout: 200 * time.Millisecond, Metrics: m})
	ch := acceptor(t, l)
	dial(t, l)
	s := next(t, ch)
	start := time.Now()
	_, err := s.Read(make([]byte, 1))
	if !isTimeout(err) {
		t.Fatalf("pending read: %v, want a timeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("deadline took %v", d)
	}
	if got := testutil.ToFloat64(m.AuthTimeouts.WithLabelValues("test")); got != 1 {
		t.Fatalf("auth timeouts = %v, want 1", got)
	}
	s.Close()

	c2 := dial(t, l)
	s2 := next(t, ch)
	if !s2.Authenticated() {
		t.Fatal("authenticate failed")
	}
	go func() {
		time.Sleep(400 * time.Millisecond)
		c2.Write([]byte("x"))
	}()
	b := make([]byte, 1)
	if _, err := io.ReadFull(s2, b); err != nil {
		t.Fatalf("authenticated read past the auth deadline: %v", err)
	}
	s2.Close()
}

// errListener fails Accept with errs, in turn, before handing out conns.
type errListener struct {
	net.Listener
	mu   sync.Mutex
	errs []error
}

func (e *errListener) Accept() (net.Conn, error) {
	e.mu.Lock()
	if len(e.errs) > 0 {
		err := e.errs[0]
		e.errs = e.errs[1:]
		e.mu.Unlock()
		return nil, err
	}
	e.mu.Unlock()
	return e.Listener.Accept()
}

// TestAcceptSurvivesErrors: errors from accept (any but a closed
// listener) are retried with backoff and counted, and Status says the
// listener is not accepting until one succeeds.
func TestAcceptSurvivesErrors(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	el := &errListener{Listener: inner, errs: []error{emfile, emfile, errors.New("weird"), emfile}}
	m := NewMetrics(prometheus.NewRegistry())
	l := Wrap(el, Config{Name: "test", Metrics: m})
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept gave up: %v", err)
	}
	s.Close()
	if got := testutil.ToFloat64(m.AcceptErrors.WithLabelValues("test")); got != 4 {
		t.Fatalf("accept errors = %v, want 4", got)
	}
	if st := l.Status(); !st.Accepting || st.Error != "" {
		t.Fatalf("status after a successful accept: %+v", st)
	}
	l.Close()
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept on a closed listener: %v, want net.ErrClosed", err)
	}
}

// TestAcceptOutOfDescriptors runs the process out of file descriptors
// for real (a lowered RLIMIT_NOFILE): accepts fail with EMFILE, the
// listener says so and keeps trying, and the waiting client is accepted
// once descriptors are free again.
func TestAcceptOutOfDescriptors(t *testing.T) {
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	l := listen(t, Config{})
	c := dial(t, l) // in the kernel's backlog, waiting for accept

	low := orig
	low.Cur = 256
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	var files []*os.File
	release := func() {
		for _, f := range files {
			f.Close()
		}
		files = nil
	}
	defer func() {
		release()
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig)
	}()
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			if !errors.Is(err, syscall.EMFILE) {
				t.Fatalf("exhausting descriptors: %v", err)
			}
			break
		}
		files = append(files, f)
	}
	got := make(chan net.Conn, 1)
	go func() {
		s, err := l.Accept()
		if err == nil {
			got <- s
		}
		close(got)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for l.Status().Accepting {
		if time.Now().After(deadline) {
			release()
			t.Fatal("the listener never reported failing accepts while out of descriptors")
		}
		time.Sleep(5 * time.Millisecond)
	}
	st := l.Status()
	release()
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.Error, "too many open files") {
		t.Fatalf("status error %q, want EMFILE", st.Error)
	}
	select {
	case s, ok := <-got:
		if !ok {
			t.Fatal("Accept gave up")
		}
		s.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting client was not accepted once descriptors were free")
	}
	if !l.Status().Accepting {
		t.Fatal("still not accepting after a successful accept")
	}
	_ = c
}
