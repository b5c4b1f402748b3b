package mqtt

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
	"github.com/ferry-iot/ferry/broker/commitlog/vfs/vfstest"
	"github.com/ferry-iot/ferry/broker/testkit"
)

// TestCloseAcknowledgesInFlightPublishes: publishes received before Close
// whose records are still waiting for the fsync get their PUBACK before
// the connection is closed; Close stops accepting connections first.
func TestCloseAcknowledgesInFlightPublishes(t *testing.T) {
	for _, version := range []byte{4, 5} {
		t.Run(fmt.Sprintf("mqtt-v%d", version), func(t *testing.T) {
			fs := vfstest.NewBlockingFS(vfs.NewMem(), "")
			e := newEnv(t, withLogFS(fs))
			c := connectToken(t, e, "TOKEN1", version)
			fs.Block()
			defer fs.Unblock()
			const n = 20
			var ids []uint16
			for i := range n {
				topic := "v1/devices/me/telemetry"
				if i%4 == 3 {
					topic = "v1/devices/me/attributes"
				}
				ids = append(ids, c.publish(topic, fmt.Sprintf(`{"seq":%d}`, i), 1))
			}
			testkit.Eventually(t, 20*time.Second, func() bool {
				return testutil.ToFloat64(e.metrics.Records.WithLabelValues("telemetry"))+
					testutil.ToFloat64(e.metrics.Records.WithLabelValues("attributes")) == n
			}, "the %d publishes' records", n)
			closed := make(chan error, 1)
			go func() { closed <- e.srv.Close() }()
			// Close has begun once the listener refuses connections.
			testkit.Eventually(t, 20*time.Second, func() bool {
				conn, err := net.DialTimeout("tcp", e.srv.Addr().String(), time.Second)
				if err != nil {
					return true
				}
				conn.Close()
				return false
			}, "the listener to refuse connections")
			fs.Unblock()
			for i := range n {
				pk, err := c.read(10 * time.Second)
				if err != nil {
					t.Fatalf("connection ended before PUBACK %d of %d: %v", i+1, n, err)
				}
				if pk.FixedHeader.Type != packets.Puback || pk.PacketID != ids[i] || pk.ReasonCode != 0 {
					t.Fatalf("packet type %d id %d code %#x, want PUBACK %d", pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode, ids[i])
				}
			}
			c.expectClosed()
			if err := <-closed; err != nil {
				t.Fatal(err)
			}
			if got := len(e.records("telemetry")) + len(e.records("attributes")); got != n {
				t.Fatalf("%d records stored, want %d", got, n)
			}
		})
	}
}
