package kafkaserver

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
	"github.com/ferry-iot/ferry/broker/commitlog/vfs/vfstest"
	"github.com/ferry-iot/ferry/broker/testkit"
)

// answer reads the answer to the request sent with correlation id corr.
func (r *rawConn) answer(req kmsg.Request, corr int32) kmsg.Response {
	r.t.Helper()
	b, err := r.readFrame()
	if err != nil {
		r.t.Fatalf("%s: read: %v", kmsg.NameForKey(req.Key()), err)
	}
	if got := int32(binary.BigEndian.Uint32(b)); got != corr {
		r.t.Fatalf("correlation id %d, want %d", got, corr)
	}
	resp := req.ResponseKind()
	b = b[4:]
	if resp.IsFlexible() {
		rd := kbin.Reader{Src: b}
		kmsg.SkipTags(&rd)
		b = rd.Src
	}
	if err := resp.ReadFrom(b); err != nil {
		r.t.Fatal(err)
	}
	return resp
}

// TestProduceAcks: what each acks value waits for, shown with a
// filesystem whose segment fsyncs are held until the test releases them.
//
//   - acks=-1 on a flush=always topic is answered only after the fsync:
//     while it is held, no answer; once released, the answer.
//   - acks=1 waits the same (one node: the leader's log is every replica,
//     and a record is in it, readable and counted, once the flush policy
//     holds; see 00_produce.go).
//   - On a flush=interval topic acks=-1 is answered with the fsync still
//     held (none is even due within the hour).
//   - acks=0 stores the records and sends nothing: the next answer on the
//     connection is the next request's.
//   - Any other acks value is INVALID_REQUIRED_ACKS, nothing stored.
func TestProduceAcks(t *testing.T) {
	fs := vfstest.NewBlockingFS(vfs.OS, ".log") // the segment files
	e := newEnv(t, withLogOpts(commitlog.WithFS(fs)))
	always := e.topic("always", commitlog.TopicConfig{Partitions: 1, Flush: commitlog.FlushAlways})
	interval := e.topic("interval", commitlog.TopicConfig{Partitions: 1, Flush: commitlog.FlushInterval, FlushInterval: time.Hour})
	defer fs.Unblock() // before the log closes, which syncs
	rc := e.raw()
	hwm := func(tp *commitlog.Topic) int64 { p, _ := tp.Partition(0); return p.HighWatermark() }

	for i, acks := range []int16{-1, 1} {
		fs.Block()
		req := produceReq("always", 0, batch(-1, -1, -1, 2, "a"))
		req.Acks = acks
		corr := rc.send(req)
		name := <-fs.Held() // the append's fsync has begun and is held
		if !rc.stillOpen(200 * time.Millisecond) {
			t.Fatalf("acks=%d: answered (or closed) while the fsync of %s was held", acks, name)
		}
		if n := hwm(always); n != int64(2*i) {
			t.Fatalf("acks=%d: high watermark %d before the fsync, want %d", acks, n, 2*i)
		}
		fs.Unblock()
		sp := rc.answer(req, corr).(*kmsg.ProduceResponse).Topics[0].Partitions[0]
		if sp.ErrorCode != 0 || sp.BaseOffset != int64(2*i) {
			t.Fatalf("acks=%d: offset %d error %d", acks, sp.BaseOffset, sp.ErrorCode)
		}
	}

	fs.Block() // stays blocked: flush=interval answers without an fsync
	req := produceReq("interval", 0, batch(-1, -1, -1, 3, "i"))
	sp := rc.roundTrip(req).(*kmsg.ProduceResponse).Topics[0].Partitions[0]
	if sp.ErrorCode != 0 || sp.BaseOffset != 0 || hwm(interval) != 3 {
		t.Fatalf("flush=interval: offset %d error %d, high watermark %d", sp.BaseOffset, sp.ErrorCode, hwm(interval))
	}
	select {
	case name := <-fs.Held():
		t.Fatalf("flush=interval: an fsync of %s was started for acks=-1", name)
	default:
	}
	fs.Unblock()

	// acks=0: no answer; the records are stored.
	req = produceReq("always", 0, batch(-1, -1, -1, 4, "z"))
	req.Acks = 0
	rc.send(req)
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 1
	rc.roundTrip(md) // fails on a Produce answer's correlation id
	testkit.Eventually(t, 10*time.Second, func() bool { return hwm(always) == 8 }, "the acks=0 records")

	// Invalid acks: refused per partition, nothing stored.
	for _, acks := range []int16{2, -2, 100} {
		req := produceReq("always", 0, batch(-1, -1, -1, 1, "x"))
		req.Acks = acks
		sp := rc.roundTrip(req).(*kmsg.ProduceResponse).Topics[0].Partitions[0]
		if sp.ErrorCode != kerr.InvalidRequiredAcks.Code {
			t.Fatalf("acks=%d: error %d, want INVALID_REQUIRED_ACKS", acks, sp.ErrorCode)
		}
	}
	if n := hwm(always); n != 8 {
		t.Fatalf("high watermark %d after refused produces, want 8", n)
	}
}
