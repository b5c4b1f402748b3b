package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
)

// probeUser is the user name of the liveness probe's connection; its
// password is a random secret made at New that never leaves the process.
const probeUser = "$ferry-probe"

// isProbe reports whether a CONNECT's credentials are this process's probe.
func (s *Server) isProbe(user string, pass []byte) bool {
	return user == probeUser && subtle.ConstantTimeCompare(pass, s.probeSecret) == 1
}

// isProbeClient reports whether cl is an admitted probe connection.
func (s *Server) isProbeClient(cl *mochi.Client) bool {
	_, ok := s.probes.Load(cl)
	return ok
}

// Probe proves the MQTT server serves connections: it does CONNECT → CONNACK, PINGREQ → PINGRESP and
// DISCONNECT as an MQTT 3.1.1 client on the listener's address (loopback
// for a wildcard one), so the accept loop, mochi's client
// goroutines, the connect hook and the packet writer all had to run. The
// probe's identity is a secret of this process; it is admitted outside
// mqtt.max_connections and the disk-full refusal (a full broker is alive),
// is never a device, and is neither counted as one nor logged. Without a
// plain TCP listener (mqtt.listen off) there is nothing to dial and Probe
// returns nil. The systemd watchdog (gateway) calls it.
func (s *Server) Probe(ctx context.Context) error {
	ta, ok := s.Addr().(*net.TCPAddr)
	if !ok {
		return nil
	}
	// The listener's own address; a wildcard one is reached on loopback.
	target := *ta
	switch {
	case !ta.IP.IsUnspecified():
	case ta.IP.To4() != nil:
		target.IP = net.IPv4(127, 0, 0, 1)
	default:
		target.IP = net.IPv6loopback
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", target.String())
	if err != nil {
		return fmt.Errorf("mqtt probe: %w", err)
	}
	defer conn.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(5 * time.Second)
	}
	_ = conn.SetDeadline(deadline)
	r := bufio.NewReader(conn)
	if _, err := conn.Write(probeConnect(s.probeSecret)); err != nil {
		return fmt.Errorf("mqtt probe: connect: %w", err)
	}
	if err := expectPacket(r, []byte{0x20, 0x02, 0x00, 0x00}); err != nil {
		return fmt.Errorf("mqtt probe: connack: %w", err)
	}
	if _, err := conn.Write([]byte{0xC0, 0x00}); err != nil {
		return fmt.Errorf("mqtt probe: pingreq: %w", err)
	}
	if err := expectPacket(r, []byte{0xD0, 0x00}); err != nil {
		return fmt.Errorf("mqtt probe: pingresp: %w", err)
	}
	_, _ = conn.Write([]byte{0xE0, 0x00})
	return nil
}

// probeConnect is an MQTT 3.1.1 CONNECT with a clean session, a 10 s keep
// alive, an empty client id (the server assigns one) and the probe's
// credentials.
func probeConnect(secret []byte) []byte {
	var body bytes.Buffer
	str := func(b []byte) { body.WriteByte(byte(len(b) >> 8)); body.WriteByte(byte(len(b))); body.Write(b) }
	str([]byte("MQTT"))
	body.Write([]byte{4, 0xC2, 0, 10}) // level 4; user name, password, clean session; keep alive
	str(nil)
	str([]byte(probeUser))
	str(secret)
	// The body stays under 128 bytes, so its length is one byte.
	return append([]byte{0x10, byte(body.Len())}, body.Bytes()...)
}

var errProbeAnswer = errors.New("unexpected answer")

func expectPacket(r io.Reader, want []byte) error {
	got := make([]byte, len(want))
	if _, err := io.ReadFull(r, got); err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%w % x, want % x", errProbeAnswer, got, want)
	}
	return nil
}
