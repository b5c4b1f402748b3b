package kafkaserver

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

func fetchAt(topic string, offset int64, wait, minBytes int32) *kmsg.FetchRequest {
	req := kmsg.NewPtrFetchRequest()
	req.Version, req.ReplicaID, req.MaxBytes = 11, -1, 1<<20
	req.MaxWaitMillis, req.MinBytes = wait, minBytes
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.FetchOffset, rp.PartitionMaxBytes = offset, 1<<20
	rt.Partitions = []kmsg.FetchRequestTopicPartition{rp}
	req.Topics = []kmsg.FetchRequestTopic{rt}
	return req
}

// TestFetchLongPoll: a Fetch at the end of the log waits; an append wakes
// it at once (no polling interval), and with nothing arriving it answers
// empty after MaxWaitMillis.
func TestFetchLongPoll(t *testing.T) {
	e := newEnv(t)
	tp := e.topic("poll", flagsTopic(1))
	p, _ := tp.Partition(0)
	rc := e.raw()

	start := time.Now()
	resp := rc.roundTrip(fetchAt("poll", 0, 300, 1)).(*kmsg.FetchResponse)
	if el := time.Since(start); el < 250*time.Millisecond || len(resp.Topics[0].Partitions[0].RecordBatches) != 0 {
		t.Fatalf("empty long poll answered after %v with %d bytes", el, len(resp.Topics[0].Partitions[0].RecordBatches))
	}

	go func() {
		time.Sleep(200 * time.Millisecond)
		p.Append(context.Background(), []commitlog.Record{{Value: []byte("wake")}})
	}()
	start = time.Now()
	resp = rc.roundTrip(fetchAt("poll", 0, 10_000, 1)).(*kmsg.FetchResponse)
	el := time.Since(start)
	var fp kgoFetchPart
	if n := fp.count(t, resp.Topics[0].Partitions[0].RecordBatches); n != 1 {
		t.Fatalf("woken fetch returned %d records", n)
	}
	if el > 5*time.Second {
		t.Fatalf("the append did not wake the fetch (answered after %v of a 10 s wait)", el)
	}

	// MinBytes: one small record is not enough for 4 KiB; the answer waits
	// for more data (or the wait).
	go func() {
		time.Sleep(100 * time.Millisecond)
		p.Append(context.Background(), []commitlog.Record{{Value: make([]byte, 10)}})
		time.Sleep(100 * time.Millisecond)
		p.Append(context.Background(), []commitlog.Record{{Value: make([]byte, 8<<10)}})
	}()
	resp = rc.roundTrip(fetchAt("poll", 1, 10_000, 4<<10)).(*kmsg.FetchResponse)
	if n := fp.count(t, resp.Topics[0].Partitions[0].RecordBatches); n != 2 {
		t.Fatalf("MinBytes fetch returned %d records, want both", n)
	}
}

// TestFetchWaitCapped: kafka.max_fetch_wait bounds a long poll that asks
// for more: a Fetch asking to wait a minute is answered, empty, once the
// cap is up.
func TestFetchWaitCapped(t *testing.T) {
	e := newEnv(t, withCfg(func(c *Config) { c.MaxFetchWait = 200 * time.Millisecond }))
	e.topic("capped", flagsTopic(1))
	rc := e.raw()
	done := make(chan *kmsg.FetchResponse, 1)
	go func() { done <- rc.roundTrip(fetchAt("capped", 0, 60_000, 1)).(*kmsg.FetchResponse) }()
	select {
	case resp := <-done:
		if p := resp.Topics[0].Partitions[0]; p.ErrorCode != 0 || len(p.RecordBatches) != 0 {
			t.Fatalf("capped long poll: error %d, %d bytes", p.ErrorCode, len(p.RecordBatches))
		}
	case <-time.After(20 * time.Second): // the default cap, 30 s, would hold it longer
		t.Fatal("a Fetch asking to wait 60 s was held past 20 s with max_fetch_wait 200ms")
	}
}

// TestFetchSendfile: large record runs leave through sendfile on plain TCP
// and arrive intact.
func TestFetchSendfile(t *testing.T) {
	e := newEnv(t)
	tp := e.topic("big", flagsTopic(1))
	appendN(t, tp, 64, 32<<10)
	rc := e.raw()
	var fp kgoFetchPart
	got := 0
	for off := int64(0); off < 64; {
		resp := rc.roundTrip(fetchAt("big", off, 100, 1)).(*kmsg.FetchResponse)
		n := fp.count(t, resp.Topics[0].Partitions[0].RecordBatches)
		if n == 0 {
			t.Fatalf("no records at %d", off)
		}
		got += n
		off = fp.last + 1
	}
	if got != 64 {
		t.Fatalf("%d records", got)
	}
	if sent := testutil.ToFloat64(e.metrics.SendfileBytes); sent < 64*32<<10 {
		t.Fatalf("sendfile sent %v bytes, want all %d", sent, 64*32<<10)
	}
}
