package mqtt

import (
	"errors"
	"fmt"
	"net"

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

// connectListener hands mochi connections whose first packet is checked
// before mochi reads it (connectConn).
type connectListener struct{ net.Listener }

func (l connectListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &connectConn{Conn: c}, nil
}

// connectConn watches the bytes of a connection's first packet's fixed
// header as mochi reads them: anything but a CONNECT, or a CONNECT that
// declares more than maxConnectBytes, fails the read before mochi has
// seen the length, so it allocates nothing for it. Only mochi's read loop
// reads, so the state needs no lock.
type connectConn struct {
	net.Conn
	hdr  int  // fixed-header bytes seen
	size int  // remaining length decoded so far
	mult int  // weight of the next length byte
	done bool // the first packet's header passed
}

// NetConn is the wrapped connection (netguard.Authenticated looks through it).
func (c *connectConn) NetConn() net.Conn { return c.Conn }

func (c *connectConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.done {
		if ferr := c.check(p[:n]); ferr != nil {
			return 0, ferr
		}
	}
	return n, err
}

// check feeds bytes of the first packet through the fixed-header decoder:
// type byte, then a variable-length remaining length of up to 4 bytes.
func (c *connectConn) check(b []byte) error {
	for _, x := range b {
		switch {
		case c.hdr == 0:
			if x>>4 != 1 { // CONNECT
				return errNotConnect
			}
			c.mult = 1
		default:
			c.size += int(x&0x7f) * c.mult
			c.mult *= 128
			if c.size > maxConnectBytes {
				return errConnectTooLong
			}
			if x&0x80 == 0 || c.hdr == 4 {
				c.done = true
				return nil
			}
		}
		c.hdr++
	}
	return nil
}
