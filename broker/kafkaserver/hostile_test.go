package kafkaserver

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/broker/testkit"
)

// Deterministic companions of FuzzRequest: hostile clients that must cost
// the listener neither unbounded memory nor unbounded CPU.

// liveHeap is the heap still reachable after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// stillOpen reports whether the server has neither answered nor closed rc
// within d.
func (r *rawConn) stillOpen(d time.Duration) bool {
	r.c.SetReadDeadline(time.Now().Add(d))
	var b [1]byte
	_, err := r.br.Read(b[:])
	return isTimeout(err)
}

// TestHostileDeclaredSize: a declared frame size costs memory only as its
// bytes arrive. Over MaxRequestBytes the connection is closed at once;
// under it, connections that declare 1 GiB, send 10 bytes and stall stay
// open (waiting, as for a slow client) holding a few KiB each.
func TestHostileDeclaredSize(t *testing.T) {
	const conns = 8
	stall := func(t *testing.T, e *env, declared uint32) []*rawConn {
		var rcs []*rawConn
		for range conns {
			rc := e.raw()
			frame := binary.BigEndian.AppendUint32(nil, declared)
			frame = append(frame, 0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff) // a Metadata v1 header
			rc.writeFrame(frame)
			rcs = append(rcs, rc)
		}
		return rcs
	}
	t.Run("over the limit", func(t *testing.T) {
		e := newEnv(t) // MaxRequestBytes: 16 MiB
		for _, rc := range stall(t, e, 1<<30) {
			rc.expectClosed()
		}
		if got := testutil.ToFloat64(e.metrics.Malformed.WithLabelValues("frame_size")); got != conns {
			t.Fatalf("%v frames refused for their size, want %d", got, conns)
		}
	})
	t.Run("under the limit", func(t *testing.T) {
		e := newEnv(t, withCfg(func(c *Config) { c.MaxRequestBytes = 1<<30 + 1 }))
		before := liveHeap()
		rcs := stall(t, e, 1<<30)
		testkit.Eventually(t, 10*time.Second, func() bool { return testutil.ToFloat64(e.metrics.Connections) == conns }, "connections")
		for _, rc := range rcs {
			if !rc.stillOpen(100 * time.Millisecond) {
				t.Fatal("a stalled frame under the limit closed the connection")
			}
		}
		// Allocating the declared size would be 8 GiB; growing as bytes
		// arrive costs the read buffers (16 KiB + 64 KiB per connection).
		grew := int64(liveHeap()) - int64(before)
		t.Logf("heap grew by %d KiB for %d stalled 1 GiB frames", grew>>10, conns)
		if grew > 8<<20 {
			t.Fatalf("heap grew by %d MiB for %d stalled 1 GiB frames", grew>>20, conns)
		}
		for _, rc := range rcs {
			rc.c.Close()
		}
		testkit.Eventually(t, 10*time.Second, func() bool { return testutil.ToFloat64(e.metrics.Connections) == 0 }, "connections to close")
	})
}

// TestHostileNoReader: a client that pipelines requests and never reads
// the answers. The writer blocks on TCP backpressure, the reader stops at
// the bounded queue of answers, so memory stays bounded; once the client
// reads, every answer arrives, in order.
func TestHostileNoReader(t *testing.T) {
	e := newEnv(t)
	e.topic("wide", flagsTopic(32))
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 1
	for range 10 { // each answer lists the topic 10 times: about 8 KiB
		md.Topics = append(md.Topics, kmsg.MetadataRequestTopic{Topic: kmsg.StringPtr("wide")})
	}
	const n = 6000 // about 50 MB of answers: far more than socket buffers hold
	fm := kmsg.NewRequestFormatter(kmsg.FormatterClientID("hostile"))
	var reqs []byte
	for i := range n {
		reqs = append(reqs, fm.AppendRequest(nil, md, int32(i))...)
	}
	answered := func() float64 { return testutil.ToFloat64(e.metrics.Requests.WithLabelValues("Metadata", "NONE")) }

	before := liveHeap()
	rc := e.raw()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		rc.c.SetWriteDeadline(time.Now().Add(time.Minute))
		if _, err := rc.c.Write(reqs); err != nil {
			t.Errorf("write requests: %v", err)
		}
	})
	// Wait until the server stops making progress.
	var last float64 = -1
	for stable := 0; stable < 5; {
		time.Sleep(100 * time.Millisecond)
		if a := answered(); a == last {
			stable++
		} else {
			last, stable = a, 0
		}
	}
	if last >= n/2 {
		t.Fatalf("%v of %d answers written to a client that reads nothing: no backpressure", last, n)
	}
	grew := int64(liveHeap()) - int64(before)
	t.Logf("stalled after %v answers; heap grew by %d KiB", last, grew>>10)
	if grew > 32<<20 {
		t.Fatalf("heap grew by %d MiB while the client read nothing", grew>>20)
	}

	// Now read: every answer, in order.
	for i := range n {
		b, err := rc.readFrame()
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		if corr := int32(binary.BigEndian.Uint32(b)); corr != int32(i) {
			t.Fatalf("answer %d has correlation id %d", i, corr)
		}
	}
}

// countHandler counts log records at Warn and above.
type countHandler struct{ n *atomic.Int64 }

func (h countHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h countHandler) Handle(context.Context, slog.Record) error    { h.n.Add(1); return nil }
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h countHandler) WithGroup(string) slog.Handler                { return h }

// TestProduceManyBadPartitions: one Produce request carrying 1,000
// partitions of bad batches is answered partition by partition, stores
// nothing, logs a handful of lines (rate-limited), and leaves the
// connection usable.
func TestProduceManyBadPartitions(t *testing.T) {
	var warnings atomic.Int64
	e := newEnv(t, withCfg(func(c *Config) { c.Logger = slog.New(countHandler{&warnings}) }))
	tp := e.topic("bad", flagsTopic(3))
	good := batch(-1, -1, -1, 3, "x")
	flip := func(i int) []byte { b := append([]byte(nil), good...); b[i] ^= 0x40; return b }
	bad := [][]byte{
		flip(len(good) - 1),              // CRC
		flip(16),                         // magic
		good[:len(good)-3],               // truncated
		{},                               // empty
		recrc(setI32(good, 57, 5)),       // record count lies
		recrc(setI16(good, 21, 1)),       // gzip that is not
		append(bytesOf(good), good...),   // two batches
		recrc(setI16(good, 21, 0x20)),    // control batch
		batch(7, 0, 0, 2, "no such pid"), // idempotent, fine but for the partition
	}
	req := kmsg.NewPtrProduceRequest()
	req.Version, req.Acks, req.TimeoutMillis = 7, -1, 5000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = "bad"
	const parts = 1000
	for i := range parts {
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition = int32(i % 4) // 3 does not exist
		rp.Records = bad[i%len(bad)]
		if rp.Partition != 3 && i%len(bad) == len(bad)-1 {
			rp.Records = bad[0] // keep every existing partition's data bad
		}
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = []kmsg.ProduceRequestTopic{rt}
	rc := e.raw()
	resp := rc.roundTrip(req).(*kmsg.ProduceResponse)
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != parts {
		t.Fatalf("answer has %d topics", len(resp.Topics))
	}
	for i, p := range resp.Topics[0].Partitions {
		switch {
		case p.Partition != int32(i%4):
			t.Fatalf("answer %d is for partition %d", i, p.Partition)
		case p.Partition == 3 && p.ErrorCode != kerr.UnknownTopicOrPartition.Code:
			t.Fatalf("partition 3 (unknown): error %d", p.ErrorCode)
		case p.ErrorCode == 0:
			t.Fatalf("answer %d (partition %d): a bad batch accepted", i, p.Partition)
		}
	}
	for _, p := range tp.Partitions() {
		if hwm := p.HighWatermark(); hwm != 0 {
			t.Fatalf("partition %d holds %d records from bad batches", p.ID(), hwm)
		}
	}
	if n := warnings.Load(); n > 3 {
		t.Fatalf("%d warnings logged for one request's bad batches: not rate-limited", n)
	}
	if off, code := produceAnswer(t, rc, produceReq("bad", 1, good)); code != 0 || off != 0 {
		t.Fatalf("good batch after the bad ones: offset %d, error %d", off, code)
	}
}

func bytesOf(b []byte) []byte { return append([]byte(nil), b...) }

// TestHostileTagCounts: a tagged-field count far larger than the frame
// (uvarint 0xffffffff) in a request header or body is refused at once.
// franz-go's kmsg before v1.15.1 looped over the whole count, about a
// minute of CPU per 30-byte frame, reachable before SASL authentication
// through ApiVersions v3.
func TestHostileTagCounts(t *testing.T) {
	e := newEnv(t, withCfg(func(c *Config) { c.SASLUsers = []SASLUser{{Username: "u", Password: "p"}} }))
	huge := []byte{0xff, 0xff, 0xff, 0xff, 0x0f}
	header := func(key, version int16) []byte {
		b := binary.BigEndian.AppendUint16(nil, uint16(key))
		b = binary.BigEndian.AppendUint16(b, uint16(version))
		b = binary.BigEndian.AppendUint32(b, 9)
		return binary.BigEndian.AppendUint16(b, 0xffff) // null client id
	}
	frame := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
	}
	cases := map[string]struct {
		frame  []byte
		answer bool // answered (ApiVersions is, as Kafka does), else closed
	}{
		"ApiVersions v3 header tags": {frame(header(18, 3), huge), true},
		"ApiVersions v3 body tags":   {frame(header(18, 3), []byte{0, 1, 1}, huge), true},
		"SaslAuthenticate v2 header": {frame(header(36, 2), huge), false},
		"SaslAuthenticate v2 body":   {frame(header(36, 2), []byte{0, 1}, huge), false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			rc := e.raw()
			rc.writeFrame(c.frame)
			b, err := rc.readFrame() // 10 s deadline
			var ne net.Error
			switch {
			case err != nil && errors.As(err, &ne) && ne.Timeout():
				t.Fatal("neither answered nor closed within 10 s")
			case c.answer && err != nil:
				t.Fatalf("not answered: %v", err)
			case c.answer:
				resp := kmsg.NewPtrApiVersionsResponse() // v0: the answer to an undecodable request
				if err := resp.ReadFrom(b[4:]); err != nil || resp.ErrorCode != kerr.InvalidRequest.Code {
					t.Fatalf("answer: error %d, %v", resp.ErrorCode, err)
				}
			case err == nil:
				t.Fatalf("answered % x, want the connection closed", b)
			}
		})
	}
}
