package kafkaserver

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/netguard"
)

// conn is one client connection: a reader goroutine (serve) that decodes
// and handles requests one at a time, as a Kafka broker does, and a writer
// goroutine that writes the answers in request order. Produce answers are
// built by the writer once their appends are durable, so one connection's
// pipelined Produce requests share commit cycles instead of each waiting
// for its own fsync.
type conn struct {
	s      *Server
	nc     net.Conn
	tcp    *net.TCPConn // nil under TLS: no sendfile
	remote string
	ctx    context.Context   // ends when the connection or the server closes
	src    *commitlog.Source // the connection as a producer to the log's commit policy
	cancel context.CancelFunc
	br     *bufio.Reader
	out    chan *outbound // reader → writer, in request order
	wdone  chan struct{}  // closed when the writer exits

	// Reader-only state.
	clientID string
	authed   bool      // SASL done, or not required
	admitted bool      // authenticated, and told the listener (netguard): no longer pending
	authBy   time.Time // while not admitted: the deadline to authenticate by
	saslMech string    // mechanism chosen by SaslHandshake
	saslRaw  bool      // SaslHandshake v0: the next frame is a bare token
	decomp   *commitlog.Decompressor

	closeOnce sync.Once
}

// outbound is one answer waiting for the writer.
type outbound struct {
	corr  int32
	key   int16
	resp  kmsg.Response        // encoded by the writer
	build func() kmsg.Response // or built by it, after blocking (Produce)
	fetch *fetchAnswer         // or written by hand (Fetch)
	raw   []byte               // or written as a bare frame (SASL v0 tokens)
	bare  bool                 // raw without a correlation id (SASL v0 token answers)
	none  bool                 // no answer at all (acks=0), only build's wait
	close bool                 // close the connection after writing
	errc  int16                // error code for metrics, when not derivable
	start time.Time
}

func (s *Server) newConn(nc net.Conn) *conn {
	c := &conn{
		s: s, nc: nc, remote: nc.RemoteAddr().String(),
		out: make(chan *outbound, 64), wdone: make(chan struct{}),
		authed: len(s.sasl) == 0, authBy: time.Now().Add(s.cfg.AuthTimeout),
		decomp: commitlog.NewDecompressor(s.cfg.MaxRequestBytes * 4),
	}
	c.src = new(commitlog.Source)
	c.ctx, c.cancel = context.WithCancel(commitlog.WithSource(s.ctx, c.src)) // one producer to the commit policy
	if s.cfg.TLS != nil {
		c.nc = tls.Server(nc, s.cfg.TLS)
	} else {
		c.tcp = tcpConn(nc)
	}
	c.br = bufio.NewReaderSize(c.nc, 16<<10)
	return c
}

// stopReading makes the reader return at its next frame boundary (the
// server is closing); answers already queued are still written. It
// cancels before moving the deadline, and serve sets the idle deadline
// before checking ctx, so a reader between two frames either sees the
// cancellation or has its deadline moved after it set it: never a read
// that waits out the idle timeout.
func (c *conn) stopReading() {
	c.cancel()
	c.nc.SetReadDeadline(time.Now())
}

func (c *conn) serve() {
	c.s.metrics.Connections.Inc()
	defer c.s.metrics.Connections.Dec()
	go c.writeLoop()
	defer func() {
		close(c.out)
		<-c.wdone
		c.cancel()
		c.nc.Close()
		c.src.Close()
	}()
	for {
		deadline := time.Now().Add(c.s.cfg.IdleTimeout)
		if !c.admitted && c.authBy.Before(deadline) {
			deadline = c.authBy
		}
		c.nc.SetReadDeadline(deadline)
		if c.ctx.Err() != nil { // after the deadline: see stopReading
			return
		}
		frame, held, err := c.readFrame()
		if err != nil {
			c.s.frames.Release(held)
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isTimeout(err) {
				c.s.limiter.Warn(c.s.logger, c.remote+"read", "kafkaserver: closing connection", "remote", c.remote, "err", err)
			}
			return
		}
		o := c.handleFrame(frame)
		c.s.frames.Release(held) // the log holds what it keeps, under its own bounds
		if o == nil {
			return
		}
		if !c.admitted && c.authed {
			// SASL done, or without SASL a first well-formed request: the
			// connection no longer counts as pending.
			c.admitted = true
			netguard.Authenticated(c.nc)
		}
		select {
		case c.out <- o:
		case <-c.wdone:
			return
		}
		if o.close {
			return
		}
	}
}

// tcpConn finds the TCP socket under nc (the listener's guard wraps it),
// for sendfile; nil when there is none.
func tcpConn(nc net.Conn) *net.TCPConn {
	for {
		switch c := nc.(type) {
		case *net.TCPConn:
			return c
		case interface{ NetConn() net.Conn }:
			nc = c.NetConn()
		default:
			return nil
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// preAuthFrameBytes bounds a frame before SASL authentication: the only
// requests allowed then (ApiVersions, SaslHandshake, SaslAuthenticate with
// PLAIN) are a few hundred bytes, so an unauthenticated connection cannot
// make the listener buffer more.
const preAuthFrameBytes = 16 << 10

// bufferWait is how long a frame may wait for room under MaxBufferedBytes
// before its connection is closed.
const bufferWait = 30 * time.Second

var errBufferFull = errors.New("kafkaserver: no room for the request under kafka.max_buffered_bytes")

// readFrame reads one size-prefixed frame. The buffer grows as bytes
// arrive, so a declared size costs memory only once it is actually sent,
// and every byte of it is taken from the server's budget (MaxBufferedBytes)
// first; held is what the frame took, to give back when it is done.
func (c *conn) readFrame() (frame []byte, held int64, err error) {
	var size [4]byte
	if _, err := io.ReadFull(c.br, size[:]); err != nil {
		return nil, 0, err
	}
	n := int32(binary.BigEndian.Uint32(size[:]))
	limit := c.s.cfg.MaxRequestBytes
	if !c.authed {
		limit = preAuthFrameBytes
	}
	if n < 0 || int(n) > limit {
		c.s.metrics.Malformed.WithLabelValues("frame_size").Inc()
		return nil, 0, fmt.Errorf("kafkaserver: frame of %d bytes, limit %d", n, limit)
	}
	var buf []byte
	for len(buf) < int(n) {
		step := min(int(n)-len(buf), max(len(buf), 64<<10))
		if cap(buf)-len(buf) < step {
			if err := c.reserve(int64(step)); err != nil {
				return nil, held, err
			}
			held += int64(step)
			nb := make([]byte, len(buf), len(buf)+step)
			copy(nb, buf)
			buf = nb
		}
		m, err := io.ReadFull(c.br, buf[len(buf):len(buf)+step])
		buf = buf[:len(buf)+m]
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, held, err
		}
	}
	return buf, held, nil
}

// reserve takes n bytes from the server's frame budget, waiting up to
// bufferWait for other frames to finish.
func (c *conn) reserve(n int64) error {
	if c.s.frames.TryAcquire(n) {
		return nil
	}
	ctx, cancel := context.WithTimeout(c.ctx, bufferWait)
	defer cancel()
	if err := c.s.frames.Acquire(ctx, n); err != nil {
		c.s.metrics.BufferFull.Inc()
		return fmt.Errorf("%w (%d bytes): %w", errBufferFull, n, err)
	}
	return nil
}

// request is a decoded request with its header.
type request struct {
	key, version int16
	corr         int32
	clientID     string
	kreq         kmsg.Request
}

// handleFrame decodes one request and handles it. nil closes the
// connection (a frame that cannot be parsed, or a request before SASL).
func (c *conn) handleFrame(frame []byte) *outbound {
	start := time.Now()
	if c.saslRaw {
		return c.saslRawToken(frame, start)
	}
	rd := kbin.Reader{Src: frame}
	key, version, corr := rd.Int16(), rd.Int16(), rd.Int32()
	var cid *string
	if hasClientID(key, version) {
		cid = rd.NullableString()
	}
	if rd.Complete() != nil {
		c.s.metrics.Malformed.WithLabelValues("header").Inc()
		return nil
	}
	if cid != nil {
		c.clientID = *cid
	}
	if !c.authed && key != kmsg.ApiVersions.Int16() && key != kmsg.SASLHandshake.Int16() && key != kmsg.SASLAuthenticate.Int16() {
		c.s.metrics.Malformed.WithLabelValues("unauthenticated").Inc()
		c.s.limiter.Warn(c.s.logger, c.remote+"auth", "kafkaserver: request before SASL authentication, closing", "remote", c.remote, "api", kmsg.NameForKey(key))
		return nil
	}
	if key == kmsg.ApiVersions.Int16() {
		return c.handleAPIVersions(corr, version, rd.Src, start)
	}
	api, ok := apiFor(key)
	if !ok || version < api.min || version > api.max {
		return c.unsupported(key, version, corr, rd.Src, start)
	}
	kreq := kmsg.RequestForKey(key)
	kreq.SetVersion(version)
	if kreq.IsFlexible() {
		kmsg.SkipTags(&rd)
		if rd.Complete() != nil {
			c.s.metrics.Malformed.WithLabelValues("header").Inc()
			return nil
		}
	}
	if err := kreq.ReadFrom(rd.Src); err != nil {
		c.s.metrics.Malformed.WithLabelValues("body").Inc()
		c.s.limiter.Warn(c.s.logger, c.remote+"body", "kafkaserver: malformed request, closing", "remote", c.remote, "api", kmsg.NameForKey(key), "version", version, "err", err)
		return nil
	}
	r := &request{key: key, version: version, corr: corr, clientID: c.clientID, kreq: kreq}
	o := api.handle(c, r)
	if o != nil {
		o.corr, o.key, o.start = corr, key, start
	}
	return o
}

// hasClientID: every request header has a client id but ControlledShutdown
// v0's (request header v0).
func hasClientID(key, version int16) bool {
	return key != kmsg.ControlledShutdown.Int16() || version != 0
}

// writeLoop writes answers in order, waiting for each Produce's appends.
// It flushes whenever no further answer is queued, so pipelined answers
// share a write.
func (c *conn) writeLoop() {
	defer close(c.wdone)
	w := bufio.NewWriterSize(c.nc, 32<<10)
	var werr error
	for o := range c.out {
		resp := o.resp
		if o.build != nil {
			resp = o.build()
		}
		if o.none || werr != nil {
			continue
		}
		c.nc.SetWriteDeadline(time.Now().Add(2 * time.Minute))
		var n int
		switch {
		case o.fetch != nil:
			n, werr = c.writeFetch(w, o)
		case resp != nil:
			n, werr = writeResponse(w, o.corr, resp)
			o.errc = firstErrorCode(resp)
		default:
			n, werr = writeRaw(w, o.corr, o.raw, o.bare)
		}
		c.s.metrics.observe(o.key, o.errc, n, time.Since(o.start))
		if werr == nil && (len(c.out) == 0 || o.close) {
			werr = w.Flush()
		}
		if werr != nil {
			c.nc.Close() // unblocks the reader
		}
	}
	if werr == nil {
		w.Flush()
	}
}

// writeResponse frames resp: size, correlation id, the response header's
// empty tag buffer for flexible versions (never for ApiVersions, whose
// response header is always v0), body.
func writeResponse(w *bufio.Writer, corr int32, resp kmsg.Response) (int, error) {
	buf := make([]byte, 8, 256)
	binary.BigEndian.PutUint32(buf[4:], uint32(corr))
	if resp.IsFlexible() && resp.Key() != kmsg.ApiVersions.Int16() {
		buf = append(buf, 0)
	}
	buf = resp.AppendTo(buf)
	binary.BigEndian.PutUint32(buf, uint32(len(buf)-4))
	return w.Write(buf)
}

// writeRaw writes body after the size and correlation id, or (bare) after
// the size only: a SASL v0 token answer has no Kafka header.
func writeRaw(w *bufio.Writer, corr int32, body []byte, bare bool) (int, error) {
	hdr := make([]byte, 8)
	n := len(body)
	if bare {
		hdr = hdr[:4]
	} else {
		binary.BigEndian.PutUint32(hdr[4:], uint32(corr))
		n += 4
	}
	binary.BigEndian.PutUint32(hdr, uint32(n))
	if _, err := w.Write(hdr); err != nil {
		return 0, err
	}
	m, err := w.Write(body)
	return len(hdr) + m, err
}
