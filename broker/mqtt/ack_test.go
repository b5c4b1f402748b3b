package mqtt

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
	"github.com/ferry-iot/ferry/broker/commitlog/vfs/vfstest"
	"github.com/ferry-iot/ferry/broker/registry"
	"github.com/ferry-iot/ferry/broker/state"
	"github.com/ferry-iot/ferry/broker/testkit"
)

// TestPubackOnlyAfterFsync: with every fsync held, a QoS 1 publish gets no
// PUBACK; once the fsync completes it does, and the record is stored.
func TestPubackOnlyAfterFsync(t *testing.T) {
	for _, version := range []byte{4, 5} {
		t.Run(fmt.Sprintf("mqtt-v%d", version), func(t *testing.T) {
			fs := vfstest.NewBlockingFS(vfs.NewMem(), "")
			e := newEnv(t, withLogFS(fs))
			c := connectToken(t, e, "TOKEN1", version)
			fs.Block()
			defer fs.Unblock()
			id := c.publish("v1/devices/me/telemetry", `{"t":1}`, 1)
			if pk, err := c.read(300 * time.Millisecond); err == nil {
				t.Fatalf("got %v (id %d) before the fsync completed", pk.FixedHeader.Type, pk.PacketID)
			}
			fs.Unblock()
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
// publishes of every kind without waiting: PUBACKs come back in publish
// order, far fewer log fsyncs than publishes were needed, and the
// attribute publishes' registry writes shared a few transactions.
func TestPipelinedPublishesShareCommitsAndAckInOrder(t *testing.T) {
	fs := vfstest.NewBlockingFS(vfs.NewMem(), "")
	e := newEnv(t, withLogFS(fs))
	c := connectToken(t, e, "TOKEN1", 4)
	const n = 200
	fs.Block() // make the first cycle slow so the rest pile up behind it
	defer fs.Unblock()
	release := holdState(t, e.st) // and the registry's first transaction
	var ids []uint16
	kinds := []string{"v1/devices/me/telemetry", "v1/devices/me/attributes/request/7", "v1/devices/me/attributes", "unknown/topic", "v2/a"}
	attrPublishes := 0
	for i := 0; i < n; i++ {
		topic := kinds[i%len(kinds)]
		payload := fmt.Sprintf(`{"seq":%d}`, i)
		switch topic {
		case "v1/devices/me/attributes", "v2/a":
			attrPublishes++
		case "v1/devices/me/telemetry":
		default:
			payload = "{}"
		}
		ids = append(ids, c.publish(topic, payload, 1))
	}
	// Every publish is handled (its records appended, its registry write
	// queued) before anything is released.
	testkit.Eventually(t, 20*time.Second, func() bool {
		return testutil.ToFloat64(e.metrics.Records.WithLabelValues("telemetry")) == float64(n/len(kinds)) &&
			testutil.ToFloat64(e.metrics.Records.WithLabelValues("attributes")) == float64(attrPublishes)
	}, "every publish to be handled")
	syncsBefore, regBefore := e.log.Stats().Syncs, e.reg.Stats()
	fs.Unblock()
	release()
	for i := 0; i < n; i++ {
		pk, err := c.read(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if pk.FixedHeader.Type == packets.Publish { // an attribute response
			i--
			continue
		}
		if pk.FixedHeader.Type != packets.Puback || pk.PacketID != ids[i] {
			t.Fatalf("packet %d id %d arrived in place of PUBACK %d: out of order", pk.FixedHeader.Type, pk.PacketID, ids[i])
		}
	}
	if stored := e.records("telemetry"); len(stored) != n/len(kinds) {
		t.Fatalf("%d telemetry records stored, want %d", len(stored), n/len(kinds))
	}
	if stored := e.records("attributes"); len(stored) != attrPublishes {
		t.Fatalf("%d attribute records stored, want %d", len(stored), attrPublishes)
	}
	if syncs := e.log.Stats().Syncs - syncsBefore; syncs > n/10 {
		t.Fatalf("%d publishes needed %d fsync rounds: no group commit", n, syncs)
	}
	reg := e.reg.Stats()
	if w := reg.Writes - regBefore.Writes; w != uint64(attrPublishes) {
		t.Fatalf("%d registry writes for %d attribute publishes", w, attrPublishes)
	}
	// The first write may have been taken alone before the store was
	// held; all others queued behind it.
	if commits := reg.Commits - regBefore.Commits; commits > 2 {
		t.Fatalf("%d attribute publishes took %d registry transactions: not coalesced", attrPublishes, commits)
	}
	attrs, err := e.reg.Attributes("boiler-1", registry.ScopeClient, []string{"seq"})
	if err != nil || len(attrs) != 1 || string(attrs[0].Value) != fmt.Sprint(n-1) {
		t.Fatalf("latest attribute %+v %v, want seq %d", attrs, err, n-1)
	}
}

// TestAttributePublishDoesNotBlockReadLoop: while the registry cannot
// commit, an attribute publish is not acknowledged, but the connection's
// read loop goes on (a PINGREQ is answered); the PUBACK follows once the
// attribute is durable in the registry.
func TestAttributePublishDoesNotBlockReadLoop(t *testing.T) {
	for _, topic := range []string{"v1/devices/me/attributes", "v1/gateway/attributes"} {
		t.Run(topic, func(t *testing.T) {
			e := newEnv(t)
			c := connectToken(t, e, "GWTOKEN", 4)
			payload := `{"fw":"v2"}`
			device := "gw-1"
			if topic == "v1/gateway/attributes" {
				payload, device = `{"Child":{"fw":"v2"}}`, "Child"
			}
			release := holdState(t, e.st)
			id := c.publish(topic, payload, 1)
			c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
			pk, err := c.read(10 * time.Second)
			if err != nil || pk.FixedHeader.Type != packets.Pingresp {
				t.Fatalf("first packet %v (id %d), %v; want PINGRESP while the registry is held", pk.FixedHeader.Type, pk.PacketID, err)
			}
			release()
			if code := c.expectAck(id); code != 0 {
				t.Fatalf("PUBACK %#x", code)
			}
			attrs, err := e.reg.Attributes(device, registry.ScopeClient, nil)
			if err != nil || len(attrs) != 1 || string(attrs[0].Value) != `"v2"` {
				t.Fatalf("attributes at PUBACK time: %+v %v", attrs, err)
			}
		})
	}
}

// holdState starts a state store transaction that does not commit until
// release: the registry's writes wait behind it.
func holdState(t *testing.T, st *state.Store) (release func()) {
	t.Helper()
	opened, unblock, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		done <- st.Update(func(*state.Txn) error {
			close(opened)
			<-unblock
			return nil
		})
	}()
	<-opened
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(unblock)
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(release)
	return release
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
