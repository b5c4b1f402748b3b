package kafka

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	flog "github.com/ferry-iot/ferry/broker/log"
)

// batch builds a RecordBatch v2 as a producer sends it.
func batch(pid int64, epoch int16, seq int32, n int, val string) []byte {
	b := kmsg.RecordBatch{
		FirstOffset: 0, PartitionLeaderEpoch: -1, Magic: 2, LastOffsetDelta: int32(n - 1),
		FirstTimestamp: time.Now().UnixMilli(), MaxTimestamp: time.Now().UnixMilli(),
		ProducerID: pid, ProducerEpoch: epoch, FirstSequence: seq, NumRecords: int32(n),
	}
	var recs []byte
	for i := 0; i < n; i++ {
		r := kmsg.Record{OffsetDelta: int32(i), Key: []byte("k"), Value: []byte(val + strconv.Itoa(i))}
		// AppendTo writes the Length varint first: measure with 0 (one byte).
		r.Length = int32(len(r.AppendTo(nil)) - 1)
		recs = r.AppendTo(recs)
	}
	b.Records = recs
	raw := b.AppendTo(nil)
	b.Length = int32(len(raw) - 12)
	raw = b.AppendTo(nil)
	b.CRC = int32(crc32c(raw[21:]))
	return b.AppendTo(nil)
}

func produceReq(topic string, part int32, data []byte) *kmsg.ProduceRequest {
	req := kmsg.NewPtrProduceRequest()
	req.Version, req.Acks, req.TimeoutMillis = 7, -1, 5000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition, rp.Records = part, data
	rt.Partitions = []kmsg.ProduceRequestTopicPartition{rp}
	req.Topics = []kmsg.ProduceRequestTopic{rt}
	return req
}

func produceAnswer(t *testing.T, rc *rawConn, req *kmsg.ProduceRequest) (int64, int16) {
	t.Helper()
	resp := rc.roundTrip(req).(*kmsg.ProduceResponse)
	p := resp.Topics[0].Partitions[0]
	return p.BaseOffset, p.ErrorCode
}

func TestIdempotentSequences(t *testing.T) {
	e := newEnv(t)
	tp := e.topic("idem", flagsTopic(1))
	rc := e.raw()
	ip := kmsg.NewPtrInitProducerIDRequest()
	ip.Version = 2
	ipr := rc.roundTrip(ip).(*kmsg.InitProducerIDResponse)
	if ipr.ErrorCode != 0 || ipr.ProducerID < 1 {
		t.Fatalf("init producer id: %+v", ipr)
	}
	pid := ipr.ProducerID

	steps := []struct {
		name     string
		epoch    int16
		seq      int32
		n        int
		wantOff  int64
		wantCode int16
	}{
		{"first", 0, 0, 3, 0, 0},
		{"next", 0, 3, 2, 3, 0},
		{"retry of first", 0, 0, 3, 0, 0},
		{"retry of next", 0, 3, 2, 3, 0},
		{"gap", 0, 9, 1, -1, kerr.OutOfOrderSequenceNumber.Code},
		{"in order again", 0, 5, 1, 5, 0},
		{"in order once more", 0, 6, 1, 6, 0},
		{"new epoch must start at 0", 1, 4, 1, -1, kerr.OutOfOrderSequenceNumber.Code},
		{"new epoch", 1, 0, 2, 7, 0},
		{"old epoch now fenced", 0, 7, 1, -1, kerr.InvalidProducerEpoch.Code},
	}
	for _, s := range steps {
		off, code := produceAnswer(t, rc, produceReq("idem", 0, batch(pid, s.epoch, s.seq, s.n, s.name)))
		if code != s.wantCode || (code == 0 && off != s.wantOff) {
			t.Fatalf("%s: offset %d code %d, want %d code %d", s.name, off, code, s.wantOff, s.wantCode)
		}
	}
	p, _ := tp.Partition(0)
	if hwm := p.HighWatermark(); hwm != 9 {
		t.Fatalf("log holds %d records, want 9 (no duplicates)", hwm)
	}
	if got := testutil.ToFloat64(e.metrics.Duplicates); got != 2 {
		t.Fatalf("duplicates metric %v, want 2", got)
	}

	// After a restart the state is rebuilt from the log: a retry of the
	// last batch is still recognised, and producer ids are not reused.
	e.restart()
	rc = e.raw()
	off, code := produceAnswer(t, rc, produceReq("idem", 0, batch(pid, 1, 0, 2, "new epoch")))
	if code != 0 || off != 7 {
		t.Fatalf("retry after restart: offset %d code %d", off, code)
	}
	tp, _ = e.log.Topic("idem")
	p, _ = tp.Partition(0)
	if hwm := p.HighWatermark(); hwm != 9 {
		t.Fatalf("after restart the log holds %d records, want 9", hwm)
	}
	ipr2 := rc.roundTrip(ip).(*kmsg.InitProducerIDResponse)
	if ipr2.ProducerID <= pid {
		t.Fatalf("producer id %d reused after restart (had %d)", ipr2.ProducerID, pid)
	}
}

func TestCorruptBatchesRejected(t *testing.T) {
	e := newEnv(t)
	tp := e.topic("bad", flagsTopic(1))
	rc := e.raw()
	good := batch(-1, -1, -1, 3, "x")
	flip := func(i int) []byte { b := append([]byte(nil), good...); b[i] ^= 0x40; return b }
	cases := map[string][]byte{
		"crc":          flip(len(good) - 1),
		"magic":        flip(16),
		"length":       flip(11),
		"truncated":    good[:len(good)-3],
		"two batches":  append(append([]byte(nil), good...), good...),
		"empty":        {},
		"count lies":   recrc(setI32(good, 57, 5)),
		"delta lies":   recrc(setI32(good, 23, 7)),
		"codec 6":      recrc(setI16(good, 21, 6)),
		"bad gzip":     recrc(setI16(good, 21, 1)),
		"control bit":  recrc(setI16(good, 21, 0x20)),
		"header short": good[:40],
	}
	for name, data := range cases {
		_, code := produceAnswer(t, rc, produceReq("bad", 0, data))
		if code == 0 {
			t.Errorf("%s: accepted", name)
		}
	}
	p, _ := tp.Partition(0)
	if p.HighWatermark() != 0 {
		t.Fatalf("%d records stored from corrupt batches", p.HighWatermark())
	}
	if off, code := produceAnswer(t, rc, produceReq("bad", 0, good)); code != 0 || off != 0 {
		t.Fatalf("good batch: %d %d", off, code)
	}
	// Unknown topic and partition.
	if _, code := produceAnswer(t, rc, produceReq("nope", 0, good)); code != kerr.UnknownTopicOrPartition.Code {
		t.Fatalf("unknown topic: %d", code)
	}
	if _, code := produceAnswer(t, rc, produceReq("bad", 4, good)); code != kerr.UnknownTopicOrPartition.Code {
		t.Fatalf("unknown partition: %d", code)
	}
}

// cutProxy forwards TCP to target and can cut every connection.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); io.Copy(s, c); s.Close() }()
			go func() { defer p.wg.Done(); io.Copy(c, s); c.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.cut(); p.wg.Wait() })
	return p
}

func (p *cutProxy) cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.conns)
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	return n
}

// TestIdempotentProducerConnectionCut: a franz-go idempotent producer whose
// connections are cut again and again mid-stream retries its in-flight
// batches; the log ends up with every record exactly once, in order.
func TestIdempotentProducerConnectionCut(t *testing.T) {
	e := newEnv(t, withCfg(func(c *Config) { c.Advertised = "" }))
	tp := e.topic("cut", flog.TopicConfig{Partitions: 1})
	proxy := newCutProxy(t, e.addr())
	// Clients learn the broker address from Metadata: advertise the proxy.
	e.srv.advHost, e.srv.advPort = "127.0.0.1", int32(proxy.ln.Addr().(*net.TCPAddr).Port)

	cl := e.client(kgo.SeedBrokers(proxy.ln.Addr().String()), kgo.DefaultProduceTopic("cut"),
		kgo.ProducerLinger(0), kgo.MaxBufferedRecords(2000), kgo.RecordRetries(1000))
	ctx := ctxT(t, 60*time.Second)
	var failed atomic.Int64
	var cuts atomic.Int64
	// Produce for as long as it takes to cut the connections 15 times.
	n := 0
	next := time.Now().Add(100 * time.Millisecond)
	for cuts.Load() < 15 {
		if ctx.Err() != nil {
			t.Fatal(ctx.Err())
		}
		if time.Now().After(next) {
			cuts.Add(int64(proxy.cut()))
			next = time.Now().Add(100 * time.Millisecond)
		}
		cl.Produce(ctx, &kgo.Record{Key: []byte("k"), Value: []byte(strconv.Itoa(n))}, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Add(1)
			}
		})
		n++
		if n%200 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if failed.Load() != 0 {
		t.Fatalf("%d records failed", failed.Load())
	}
	p, _ := tp.Partition(0)
	recs, _, hwm, err := readAll(p)
	if err != nil {
		t.Fatal(err)
	}
	if hwm != int64(n) || len(recs) != n {
		t.Fatalf("log holds %d records (hwm %d), want %d: duplicates or losses", len(recs), hwm, n)
	}
	for i, r := range recs {
		if string(r.Value) != strconv.Itoa(i) {
			t.Fatalf("offset %d holds %q", i, r.Value)
		}
	}
	t.Logf("%d records, %d connections cut, %d duplicates answered from producer state", n, cuts.Load(), int(testutil.ToFloat64(e.metrics.Duplicates)))
}

func readAll(p *flog.Partition) ([]flog.Record, int64, int64, error) {
	var out []flog.Record
	off := p.StartOffset()
	for off < p.HighWatermark() {
		recs, next, _, err := p.ReadRecords(off, 1<<20)
		if err != nil {
			return nil, 0, 0, err
		}
		for _, r := range recs {
			if r.Offset >= off {
				out = append(out, r)
			}
		}
		off = next
	}
	return out, off, p.HighWatermark(), nil
}

var _ = fmt.Sprint
var _ = context.Background
