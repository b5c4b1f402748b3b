package kafkaserver

import (
	"bufio"
	"encoding/binary"
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

	"github.com/ferry-iot/ferry/broker/commitlog"
)

// batch builds a RecordBatch v2 as a producer sends it.
func batch(pid int64, epoch int16, seq int32, n int, val string) []byte {
	deltas := make([]int32, n)
	for i := range deltas {
		deltas[i] = int32(i)
	}
	return batchDeltas(pid, epoch, seq, deltas, val)
}

// batchDeltas is batch with the records at the given offset deltas (the
// header claims one offset per record all the same).
func batchDeltas(pid int64, epoch int16, seq int32, deltas []int32, val string) []byte {
	n := len(deltas)
	b := kmsg.RecordBatch{
		FirstOffset: 0, PartitionLeaderEpoch: -1, Magic: 2, LastOffsetDelta: int32(n - 1),
		FirstTimestamp: time.Now().UnixMilli(), MaxTimestamp: time.Now().UnixMilli(),
		ProducerID: pid, ProducerEpoch: epoch, FirstSequence: seq, NumRecords: int32(n),
	}
	var recs []byte
	for i, d := range deltas {
		r := kmsg.Record{OffsetDelta: d, Key: []byte("k"), Value: []byte(val + strconv.Itoa(i))}
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

// TestIdempotentWindow: the producer state keeps the last five batches.
// A retry of one of them is answered with its original offset; a retry of
// an older one has no offset to answer with and is refused with
// DUPLICATE_SEQUENCE_NUMBER (which producers take as "already written");
// a retry cut differently but wholly stored is a duplicate too, and one
// that is stored only in part is OUT_OF_ORDER_SEQUENCE_NUMBER. None of it
// is stored twice.
func TestIdempotentWindow(t *testing.T) {
	e := newEnv(t)
	tp := e.topic("window", flagsTopic(1))
	rc := e.raw()
	const pid = 42
	// Seven batches of two records: sequences 0-1, 2-3, … 12-13 at the
	// same offsets. The window holds the last five: 4-5 … 12-13.
	for seq := int32(0); seq < 14; seq += 2 {
		if off, code := produceAnswer(t, rc, produceReq("window", 0, batch(pid, 0, seq, 2, "w"))); code != 0 || off != int64(seq) {
			t.Fatalf("batch at %d: offset %d error %d", seq, off, code)
		}
	}
	steps := []struct {
		name        string
		first       int32
		n           int
		wantOff     int64
		wantCode    int16
		storedAfter int64
	}{
		{"retry of the oldest in the window", 4, 2, 4, 0, 14},
		{"retry of the newest", 12, 2, 12, 0, 14},
		{"retry just older than the window", 2, 2, -1, kerr.DuplicateSequenceNumber.Code, 14},
		{"retry of the first batch", 0, 2, -1, kerr.DuplicateSequenceNumber.Code, 14},
		{"retry spanning two retained batches", 6, 4, -1, kerr.DuplicateSequenceNumber.Code, 14},
		{"retry spanning the window's start", 2, 4, -1, kerr.DuplicateSequenceNumber.Code, 14},
		{"stored only in part", 12, 4, -1, kerr.OutOfOrderSequenceNumber.Code, 14},
		{"the next batch", 14, 2, 14, 0, 16},
		{"now 4-5 left the window", 4, 2, -1, kerr.DuplicateSequenceNumber.Code, 16},
		{"and 6-7 is still in it", 6, 2, 6, 0, 16},
	}
	p, _ := tp.Partition(0)
	for _, s := range steps {
		off, code := produceAnswer(t, rc, produceReq("window", 0, batch(pid, 0, s.first, s.n, "w")))
		if code != s.wantCode || (code == 0 && off != s.wantOff) {
			t.Fatalf("%s: offset %d error %d, want offset %d error %d", s.name, off, code, s.wantOff, s.wantCode)
		}
		if hwm := p.HighWatermark(); hwm != s.storedAfter {
			t.Fatalf("%s: the log holds %d records, want %d", s.name, hwm, s.storedAfter)
		}
	}
}

// TestCorruptBatchesRejected: every bad batch is refused with the code
// Kafka gives for it, and nothing is stored. Corruption (CRC, a magic no
// format has, a size field below the smallest batch, an unknown codec,
// records that do not decompress or decode) is CORRUPT_MESSAGE, which
// producers retry; well-framed data that breaks the rules (not exactly
// one whole v2 batch, record count against offset range, records not at
// their own offsets, a control batch, an idempotent batch without a
// sequence) is INVALID_RECORD, which they do not (Kafka's
// ProduceRequest.validateRecords and LogValidator.validateBatch); a batch
// above the topic's max_batch_bytes is MESSAGE_TOO_LARGE.
func TestCorruptBatchesRejected(t *testing.T) {
	e := newEnv(t)
	tp := e.topic("bad", flagsTopic(1))
	rc := e.raw()
	good := batch(-1, -1, -1, 3, "x")
	length := int32(len(good) - 12)
	flip := func(i int) []byte { b := append([]byte(nil), good...); b[i] ^= 0x40; return b }
	garbage := append([]byte(nil), good...)
	for i := commitlog.BatchHeaderSize; i < len(garbage); i++ {
		garbage[i] = 0xff
	}
	corrupt, invalid := kerr.CorruptMessage.Code, kerr.InvalidRecord.Code
	cases := []struct {
		name string
		data []byte
		want int16
	}{
		{"crc", flip(len(good) - 1), corrupt},
		{"crc field", flip(18), corrupt},
		{"magic 0x42", flip(16), corrupt},
		{"magic 1", setI8(good, 16, 1), invalid}, // a real old format, not allowed in Produce v3+
		{"length below the smallest batch", setI32(good, 8, 13), corrupt},
		{"length past the data", setI32(good, 8, length+64), invalid},
		{"truncated", good[:len(good)-3], invalid},
		{"header cut short", good[:40], invalid},
		{"eleven bytes", good[:11], invalid},
		{"empty", []byte{}, invalid},
		{"two batches", append(append([]byte(nil), good...), good...), invalid},
		{"trailing bytes", append(append([]byte(nil), good...), 0, 0, 0), invalid},
		{"count above the offset range", recrc(setI32(good, 57, 5)), invalid},
		{"count below the offset range", recrc(setI32(good, 57, 2)), invalid},
		{"offset range above the count", recrc(setI32(good, 23, 7)), invalid},
		{"negative offset range", recrc(setI32(good, 23, -1)), invalid},
		{"zero records", recrc(setI32(recrc(setI32(good, 57, 0)), 23, -1)), invalid},
		{"codec 6", recrc(setI16(good, 21, 6)), corrupt},
		{"gzip that is not", recrc(setI16(good, 21, 1)), corrupt},
		{"records that do not decode", recrc(garbage), corrupt},
		{"records sharing an offset", batchDeltas(-1, -1, -1, []int32{0, 0, 2}, "x"), invalid},
		{"records out of order", batchDeltas(-1, -1, -1, []int32{0, 2, 1}, "x"), invalid},
		{"control batch", recrc(setI16(good, 21, 0x20)), invalid},
		{"idempotent without a sequence", batch(1, 0, -1, 2, "s"), invalid},
	}
	for _, c := range cases {
		if _, code := produceAnswer(t, rc, produceReq("bad", 0, c.data)); code != c.want {
			t.Errorf("%s: error %d (%v), want %d (%v)", c.name, code, kerr.ErrorForCode(code), c.want, kerr.ErrorForCode(c.want))
		}
	}
	p, _ := tp.Partition(0)
	if p.HighWatermark() != 0 {
		t.Fatalf("%d records stored from bad batches", p.HighWatermark())
	}
	small := e.topic("small", commitlog.TopicConfig{Partitions: 1, MaxBatchBytes: 1024})
	for _, big := range [][]byte{batch(-1, -1, -1, 200, "big"), batch(1, 0, 0, 200, "big")} {
		if len(big) <= 1024 {
			t.Fatalf("a %d-byte batch is not above max_batch_bytes", len(big))
		}
		if _, code := produceAnswer(t, rc, produceReq("small", 0, big)); code != kerr.MessageTooLarge.Code {
			t.Errorf("producer %d, a batch above max_batch_bytes: error %d (%v), want MESSAGE_TOO_LARGE", int64(binary.BigEndian.Uint64(big[43:])), code, kerr.ErrorForCode(code))
		}
	}
	// The idempotent one was not taken into the producer's sequence.
	if off, code := produceAnswer(t, rc, produceReq("small", 0, batch(1, 0, 0, 3, "s"))); code != 0 || off != 0 {
		t.Fatalf("after the refused idempotent batch, its sequence again: offset %d error %d", off, code)
	}
	if sp, _ := small.Partition(0); sp.HighWatermark() != 3 {
		t.Fatalf("%d records stored in the small topic, want 3", sp.HighWatermark())
	}
	if off, code := produceAnswer(t, rc, produceReq("bad", 0, good)); code != 0 || off != 0 {
		t.Fatalf("good batch: %d %d", off, code)
	}
	// Unknown topic and partition, also for a topic named with several
	// partitions in one request (each is answered, none is written).
	if _, code := produceAnswer(t, rc, produceReq("nope", 0, good)); code != kerr.UnknownTopicOrPartition.Code {
		t.Fatalf("unknown topic: %d", code)
	}
	if _, code := produceAnswer(t, rc, produceReq("bad", 4, good)); code != kerr.UnknownTopicOrPartition.Code {
		t.Fatalf("unknown partition: %d", code)
	}
	req := produceReq("nope", 0, good)
	req.Topics[0].Partitions = append(req.Topics[0].Partitions, req.Topics[0].Partitions[0], req.Topics[0].Partitions[0])
	req.Topics[0].Partitions[1].Partition, req.Topics[0].Partitions[2].Partition = 1, 2
	for i, sp := range rc.roundTrip(req).(*kmsg.ProduceResponse).Topics[0].Partitions {
		if sp.Partition != int32(i) || sp.ErrorCode != kerr.UnknownTopicOrPartition.Code {
			t.Fatalf("unknown topic, partition %d: answered %+v", i, sp)
		}
	}
}

// cutProxy forwards Kafka connections to target, frame by frame, and can
// cut every connection (cut), or cut a connection exactly when the answer
// to a Produce comes back from the listener, dropping that answer
// (swallowProduceAnswer): the listener stored the batches, the client
// never hears so and must retry them.
type cutProxy struct {
	ln        net.Listener
	target    string
	swallow   atomic.Int64 // Produce answers still to drop
	swallowed atomic.Int64 // Produce answers dropped
	mu        sync.Mutex
	conns     []net.Conn // guarded by mu
	wg        sync.WaitGroup
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
			var keys sync.Map // correlation id → api key of the requests in flight
			p.wg.Add(2)
			go func() { // client → listener
				defer p.wg.Done()
				defer s.Close()
				p.forward(c, s, func(frame []byte) bool {
					if len(frame) >= 8 {
						keys.Store(int32(binary.BigEndian.Uint32(frame[4:])), int16(binary.BigEndian.Uint16(frame)))
					}
					return true
				})
			}()
			go func() { // listener → client
				defer p.wg.Done()
				defer c.Close()
				p.forward(s, c, func(frame []byte) bool {
					if len(frame) < 4 {
						return true
					}
					key, _ := keys.LoadAndDelete(int32(binary.BigEndian.Uint32(frame)))
					if key != kmsg.Produce.Int16() || !p.takeSwallow() {
						return true
					}
					p.swallowed.Add(1)
					s.Close() // and c, by the defer
					return false
				})
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.cut(); p.wg.Wait() })
	return p
}

// forward copies size-prefixed frames from src to dst while pass says so.
func (p *cutProxy) forward(src, dst net.Conn, pass func(frame []byte) bool) {
	br := bufio.NewReader(src)
	for {
		var size [4]byte
		if _, err := io.ReadFull(br, size[:]); err != nil {
			return
		}
		frame := make([]byte, binary.BigEndian.Uint32(size[:]))
		if _, err := io.ReadFull(br, frame); err != nil {
			return
		}
		if !pass(frame) {
			return
		}
		if _, err := dst.Write(append(size[:], frame...)); err != nil {
			return
		}
	}
}

func (p *cutProxy) takeSwallow() bool {
	for {
		n := p.swallow.Load()
		if n <= 0 {
			return false
		}
		if p.swallow.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// swallowProduceAnswer arms the proxy to drop the next Produce answer and
// cut its connection.
func (p *cutProxy) swallowProduceAnswer() { p.swallow.Add(1) }

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
// batches; the log ends up with every record exactly once, in order. Half
// of the cuts drop a Produce answer the listener had already written, so
// the retry of those batches must be recognised as a duplicate and
// answered from the producer state: at least one duplicate per dropped
// answer.
func TestIdempotentProducerConnectionCut(t *testing.T) {
	e := newEnv(t, withCfg(func(c *Config) { c.Advertised = "" }))
	tp := e.topic("cut", commitlog.TopicConfig{Partitions: 1})
	proxy := newCutProxy(t, e.addr())
	// Clients learn the broker address from Metadata: advertise the proxy.
	e.srv.advHost, e.srv.advPort = "127.0.0.1", int32(proxy.ln.Addr().(*net.TCPAddr).Port)

	cl := e.client(kgo.SeedBrokers(proxy.ln.Addr().String()), kgo.DefaultProduceTopic("cut"),
		kgo.ProducerLinger(0), kgo.MaxBufferedRecords(2000), kgo.RecordRetries(1000))
	ctx := ctxT(t, 60*time.Second)
	var failed atomic.Int64
	const rounds = 16
	// Produce for as long as it takes to cut the connections 8 times and
	// drop 8 Produce answers.
	n, round := 0, 0
	next := time.Now().Add(100 * time.Millisecond)
	for round < rounds || proxy.swallowed.Load() < rounds/2 {
		if ctx.Err() != nil {
			t.Fatalf("%v after %d rounds, %d answers dropped", ctx.Err(), round, proxy.swallowed.Load())
		}
		if round < rounds && time.Now().After(next) {
			if round%2 == 0 {
				proxy.cut()
			} else {
				proxy.swallowProduceAnswer()
			}
			round++
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
	dups, dropped := int64(testutil.ToFloat64(e.metrics.Duplicates)), proxy.swallowed.Load()
	t.Logf("%d records, %d Produce answers dropped, %d duplicates answered from producer state", n, dropped, dups)
	if dups < dropped {
		t.Fatalf("%d duplicates answered from producer state for %d dropped Produce answers: the retries were not deduplicated", dups, dropped)
	}
}

func readAll(p *commitlog.Partition) ([]commitlog.Record, int64, int64, error) {
	var out []commitlog.Record
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
