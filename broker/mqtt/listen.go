package mqtt

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ferry-iot/ferry/broker/netguard"
)

// maxConnectBytes bounds the first packet of a connection, read before
// anything is known about the client: a CONNECT carries a client id, a
// user name (the access token), a password, MQTT 5 properties and perhaps
// a will message — a few hundred bytes in practice. mochi allocates a
// packet's declared size at once (and copies it), so without this bound
// every socket that has not authenticated could cost the broker up to
// twice the largest packet.
const maxConnectBytes = 16 << 10

var (
	errNotConnect     = errors.New("mqtt: the first packet is not CONNECT")
	errConnectTooLong = fmt.Errorf("mqtt: CONNECT larger than %d bytes", maxConnectBytes)
	errPacketTooLarge = errors.New("mqtt: packet larger than the Maximum Packet Size")
)

// guard wraps a raw listening socket (netguard: accept that survives
// errors, caps, the connect deadline) and remembers it for Status.
func (s *Server) guard(name string, ln net.Listener) *netguard.Listener {
	// Sockets: every authenticated client could be on this listener, plus
	// the pending ones; a client past MaxConnections is refused with a
	// CONNACK code by OnConnect rather than a closed socket.
	maxConns := 0
	if s.cfg.MaxConnections > 0 {
		maxConns = s.cfg.MaxConnections + s.cfg.MaxPending
	}
	g := netguard.Wrap(ln, netguard.Config{
		Name: name, MaxConns: maxConns, MaxPending: s.cfg.MaxPending,
		AuthTimeout: s.cfg.ConnectTimeout, Logger: s.logger, Metrics: s.cfg.Listeners,
	})
	s.guards = append(s.guards, g)
	return g
}

// ListenerStatus reports each listener's state (health checks).
func (s *Server) ListenerStatus() []netguard.Status {
	out := make([]netguard.Status, 0, len(s.guards))
	for _, g := range s.guards {
		out = append(out, g.Status())
	}
	return out
}

// packetListener hands mochi connections whose packet headers are checked
// before mochi reads them (packetConn).
type packetListener struct {
	net.Listener
	srv *Server
}

func (l packetListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.srv.packetConn(c), nil
}

func (s *Server) packetConn(c net.Conn) *packetConn {
	return &packetConn{Conn: c, srv: s, max: int(s.mochi.Options.Capabilities.MaximumPacketSize)}
}

// packetConn follows the fixed header of every packet in the byte stream
// mochi reads, before mochi reads it:
//
//   - the first packet must be a CONNECT of at most maxConnectBytes;
//   - no packet may be larger than the Maximum Packet Size the broker
//     advertises: MQTT 5 clients get DISCONNECT 0x95 (Packet too large),
//     MQTT 3.1.1 clients have no server DISCONNECT and are just closed.
//
// A refused header fails the read before mochi has seen its length, so
// mochi allocates nothing for it. Only mochi's read loop reads, so the
// parser state needs no lock.
type packetConn struct {
	net.Conn
	srv *Server
	max int // the Maximum Packet Size (whole packet)

	cl atomic.Pointer[mochi.Client] // set by OnConnect: the client, for DISCONNECT

	first bool // past the first packet's header
	hdr   int  // bytes of the current fixed header seen (0: at a packet start)
	size  int  // its remaining length, decoded so far
	mult  int  // weight of the next length byte
	skip  int  // bytes of the current packet's body still to pass
}

// NetConn is the wrapped connection (netguard.Authenticated looks through it).
func (c *packetConn) NetConn() net.Conn { return c.Conn }

func (c *packetConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if ferr := c.check(p[:n]); ferr != nil {
		return 0, ferr
	}
	return n, err
}

// check feeds bytes through the fixed-header decoder: type byte, then a
// variable-length remaining length of up to 4 bytes, then the body.
func (c *packetConn) check(b []byte) error {
	for len(b) > 0 {
		if c.skip > 0 {
			n := min(c.skip, len(b))
			c.skip -= n
			b = b[n:]
			continue
		}
		x := b[0]
		b = b[1:]
		if c.hdr == 0 {
			if !c.first && x>>4 != packets.Connect {
				return errNotConnect
			}
			c.hdr, c.size, c.mult = 1, 0, 1
			continue
		}
		c.size += int(x&0x7f) * c.mult
		c.mult *= 128
		c.hdr++
		if err := c.checkSize(); err != nil {
			return err
		}
		if x&0x80 == 0 || c.hdr == 5 { // a fifth length byte is mochi's to refuse (malformed)
			c.first, c.hdr, c.skip = true, 0, c.size
		}
	}
	return nil
}

// checkSize refuses a packet whose declared size is over the limit.
func (c *packetConn) checkSize() error {
	switch {
	case !c.first && c.size > maxConnectBytes:
		return errConnectTooLong
	case c.first && c.max > 0 && c.hdr+c.size > c.max:
		c.srv.packetTooLarge(c.cl.Load(), c.hdr+c.size)
		return errPacketTooLarge
	}
	return nil
}

// packetTooLarge answers a packet over the Maximum Packet Size: counted,
// logged, and DISCONNECT 0x95 for MQTT 5 (mochi's own check would only
// close the socket).
func (srv *Server) packetTooLarge(cl *mochi.Client, size int) {
	srv.metrics.Rejected.WithLabelValues(reasonPacketTooLarge).Inc()
	device := "unknown"
	if s := srv.session(cl); s != nil {
		device = s.device.Name
	}
	srv.logLimited(device, reasonPacketTooLarge, "packet larger than the advertised Maximum Packet Size: disconnected",
		"declared_bytes", size, "maximum_packet_size", srv.mochi.Options.Capabilities.MaximumPacketSize)
	if cl != nil {
		srv.closeClient(cl, packets.ErrPacketTooLarge)
	}
}

// findPacketConn returns the packetConn under nc, if any.
func findPacketConn(nc net.Conn) *packetConn {
	for nc != nil {
		if pc, ok := nc.(*packetConn); ok {
			return pc
		}
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		nc = u.NetConn()
	}
	return nil
}
