package kafka

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	flog "github.com/ferry-iot/ferry/broker/log"
)

// TestProduceConsumeKgo: an idempotent franz-go producer (its default)
// with acks=all writes keyed records; a direct consumer reads every one
// back in per-key order with keys, values, headers and timestamps intact.
func TestProduceConsumeKgo(t *testing.T) {
	e := newEnv(t)
	e.topic("orders", flog.TopicConfig{Partitions: 3})
	prod := e.client(kgo.DefaultProduceTopic("orders"), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	ctx := ctxT(t, 30*time.Second)
	const n = 3000
	ts := time.UnixMilli(1_700_000_000_000)
	for i := 0; i < n; i++ {
		r := &kgo.Record{Key: []byte("dev-" + strconv.Itoa(i%7)), Value: []byte(fmt.Sprintf("v%d", i)),
			Headers: []kgo.RecordHeader{{Key: "i", Value: []byte(strconv.Itoa(i))}}, Timestamp: ts.Add(time.Duration(i) * time.Millisecond)}
		prod.Produce(ctx, r, func(r *kgo.Record, err error) {
			if err != nil {
				t.Errorf("produce: %v", err)
			}
		})
	}
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, p := range e.log.Topics() {
		if p.Name() == "orders" {
			for _, pp := range p.Partitions() {
				total += pp.HighWatermark()
			}
		}
	}
	if total != n {
		t.Fatalf("log holds %d records, want %d", total, n)
	}

	cons := e.client(kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	last := map[string]int{}
	got := 0
	for got < n {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d: %v", got, n, err)
		}
		fs.EachError(func(tp string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", tp, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			got++
			i, _ := strconv.Atoi(string(r.Headers[0].Value))
			if string(r.Value) != fmt.Sprintf("v%d", i) || string(r.Key) != "dev-"+strconv.Itoa(i%7) {
				t.Fatalf("record %d: key %q value %q", i, r.Key, r.Value)
			}
			if !r.Timestamp.Equal(ts.Add(time.Duration(i) * time.Millisecond)) {
				t.Fatalf("record %d: timestamp %v", i, r.Timestamp)
			}
			if prev, ok := last[string(r.Key)]; ok && prev >= i {
				t.Fatalf("key %s: record %d after %d", r.Key, i, prev)
			}
			last[string(r.Key)] = i
		})
	}
}
