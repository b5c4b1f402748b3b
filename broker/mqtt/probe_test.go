package mqtt

import (
	"context"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ferry-iot/ferry/broker/testkit"
)

// TestProbe: the liveness probe completes its round trip on a live broker
// — also when max_connections is reached — is not a device (not counted,
// no rejection), and fails once the broker is closed. Its user name with
// any other password is an ordinary refused login.
func TestProbe(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.MaxConnections = 1 }))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.srv.Probe(ctx); err != nil {
		t.Fatalf("probe of a live broker: %v", err)
	}
	dev := connectToken(t, e, "TOKEN1", 4)
	defer dev.conn.Close()
	for i := range 3 {
		if err := e.srv.Probe(ctx); err != nil {
			t.Fatalf("probe %d at max_connections: %v", i, err)
		}
	}
	if n := e.srv.Connected(); n != 1 {
		t.Fatalf("%d connected, want the one device", n)
	}
	testkit.Eventually(t, 2*time.Second, func() bool {
		n := 0
		e.srv.probes.Range(func(any, any) bool { n++; return true })
		return n == 0
	}, "the probe connections to go after their DISCONNECT")
	for _, r := range []string{"connect_auth", "connect_max_connections"} {
		if v := e.rejected(r); v != 0 {
			t.Fatalf("the probe counted as %s: %v", r, v)
		}
	}

	wrong := "not-the-secret"
	c, ack := dial(t, e.srv.Addr(), connectOpts{version: 4, clientID: "x", username: probeUser, password: &wrong})
	defer c.conn.Close()
	if ack.FixedHeader.Type != packets.Connack || ack.ReasonCode == 0 {
		t.Fatalf("probe user with a wrong password: %+v", ack)
	}

	e.close()
	if err := e.srv.Probe(ctx); err == nil {
		t.Fatal("probe of a closed broker succeeded")
	}
}

// TestProbeDialsTheListenersAddress: a listener bound to one address is
// probed there (127.0.0.2 here, as a board bound to its LAN address), a
// wildcard one on loopback.
func TestProbeDialsTheListenersAddress(t *testing.T) {
	for _, listen := range []string{"127.0.0.2:0", "0.0.0.0:0"} {
		e := newEnv(t, withConfig(func(c *Config) { c.Listen = listen }))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := e.srv.Probe(ctx); err != nil {
			t.Errorf("listen %s: %v", listen, err)
		}
		cancel()
	}
}
