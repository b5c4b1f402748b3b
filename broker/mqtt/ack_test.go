package mqtt

import (
	"fmt"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-iot/ferry/broker/log/vfs"
)

// TestPubackOnlyAfterFsync: with every fsync held, a QoS 1 publish gets no
// PUBACK; once the fsync completes it does, and the record is stored.
func TestPubackOnlyAfterFsync(t *testing.T) {
	for _, version := range []byte{4, 5} {
		t.Run(fmt.Sprintf("mqtt-v%d", version), func(t *testing.T) {
			fs := newBlockingFS()
			e := newEnv(t, withLogFS(fs))
			c := connectToken(t, e, "TOKEN1", version)
			fs.block()
			defer fs.unblock()
			id := c.publish("v1/devices/me/telemetry", `{"t":1}`, 1)
			if pk, err := c.read(300 * time.Millisecond); err == nil {
				t.Fatalf("got %v (id %d) before the fsync completed", pk.FixedHeader.Type, pk.PacketID)
			}
			fs.unblock()
			ack := c.expect(packets.Puback)
			if ack.PacketID != id || ack.ReasonCode != 0 {
				t.Fatalf("PUBACK %+v", ack)
			}
			if recs := e.records("telemetry"); len(recs) != 1 {
				t.Fatalf("%d records stored", len(recs))
			}
		})
	}
}

// TestPipelinedPublishesShareCommitsAndAckInOrder sends many QoS 1
// publishes without waiting: PUBACKs come back in publish order, and far
// fewer fsyncs than publishes were needed.
func TestPipelinedPublishesShareCommitsAndAckInOrder(t *testing.T) {
	fs := newBlockingFS()
	e := newEnv(t, withLogFS(fs))
	c := connectToken(t, e, "TOKEN1", 4)
	const n = 200
	fs.block() // make the first cycle slow so the rest pile up behind it
	var ids []uint16
	kinds := []string{"v1/devices/me/telemetry", "v1/devices/me/attributes/request/7", "v1/devices/me/telemetry", "unknown/topic"}
	for i := 0; i < n; i++ {
		topic := kinds[i%len(kinds)]
		payload := fmt.Sprintf(`{"seq":%d}`, i)
		if topic != "v1/devices/me/telemetry" {
			payload = "{}"
		}
		ids = append(ids, c.publish(topic, payload, 1))
	}
	time.Sleep(50 * time.Millisecond)
	syncsBefore := e.log.Stats().Syncs
	fs.unblock()
	for i := 0; i < n; i++ {
		var ack = c.expect(packets.Puback)
		if ack.PacketID != ids[i] {
			t.Fatalf("PUBACK %d arrived in place of %d: out of order", ack.PacketID, ids[i])
		}
	}
	stored := e.records("telemetry")
	if len(stored) != n/2 {
		t.Fatalf("%d telemetry records stored, want %d", len(stored), n/2)
	}
	if syncs := e.log.Stats().Syncs - syncsBefore; syncs > n/10 {
		t.Fatalf("%d publishes needed %d fsync rounds: no group commit", n/2, syncs)
	}
}

// TestStorageFailureNeverAcknowledges fails every fsync: MQTT 5 clients get
// PUBACK 0x80, MQTT 3.1.1 clients are disconnected, nobody gets a success.
func TestStorageFailureNeverAcknowledges(t *testing.T) {
	for _, version := range []byte{4, 5} {
		t.Run(fmt.Sprintf("mqtt-v%d", version), func(t *testing.T) {
			inj := &vfs.InjectAt{Index: -1}
			e := newEnv(t, withLogFS(vfs.NewErrorFS(vfs.NewMem(), inj)))
			c := connectToken(t, e, "TOKEN1", version)
			if code := c.publishAck("v1/devices/me/telemetry", `{"ok":1}`); code != 0 {
				t.Fatalf("healthy publish: code %#x", code)
			}
			inj.Only = func(op vfs.Op) bool { return op == vfs.OpSync }
			inj.Index, inj.Sticky = inj.Count(), true
			id := c.publish("v1/devices/me/telemetry", `{"lost":1}`, 1)
			if version == 5 {
				ack := c.expect(packets.Puback)
				if ack.PacketID != id || ack.ReasonCode != packets.ErrUnspecifiedError.Code {
					t.Fatalf("MQTT 5 PUBACK after a failed fsync: %+v", ack)
				}
			} else {
				c.expectClosed()
			}
			if got := testutil.ToFloat64(e.metrics.StorageErrors); got < 1 {
				t.Fatalf("storage errors counted: %v", got)
			}
			if recs := e.records("telemetry"); len(recs) != 1 {
				t.Fatalf("%d records readable, want only the acknowledged one", len(recs))
			}
		})
	}
}
