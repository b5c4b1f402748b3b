package kafkaserver

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

// TestProduceConsumeKgo: an idempotent franz-go producer (its default)
// with acks=all writes keyed records; a direct consumer reads every one
// back in per-key order with keys, values, headers and timestamps intact.
func TestProduceConsumeKgo(t *testing.T) {
	e := newEnv(t)
	e.topic("orders", commitlog.TopicConfig{Partitions: 3})
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

// TestFetchServesStoredBytes: Fetch serves batches exactly as stored. A
// franz-go producer writes batches (compressed and not); the bytes a
// Fetch returns are the segment file's own bytes from the batch holding
// the fetch offset on, with sendfile on plain TCP (runs of 16 KiB and
// more) and with the copying path alike.
func TestFetchServesStoredBytes(t *testing.T) {
	for _, copying := range []bool{false, true} {
		t.Run(fmt.Sprintf("copy=%v", copying), func(t *testing.T) {
			e := newEnv(t, withCfg(func(c *Config) { c.DisableSendfile = copying }))
			e.topic("exact", commitlog.TopicConfig{Partitions: 1})
			ctx := ctxT(t, 30*time.Second)
			for i, codec := range []kgo.CompressionCodec{kgo.NoCompression(), kgo.SnappyCompression(), kgo.GzipCompression()} {
				prod := e.client(kgo.DefaultProduceTopic("exact"), kgo.ProducerBatchCompression(codec), kgo.ProducerLinger(50*time.Millisecond))
				var rs []*kgo.Record
				for j := 0; j < 50; j++ {
					rs = append(rs, &kgo.Record{Key: []byte("k"), Value: []byte(fmt.Sprintf("codec %d record %d: %s", i, j, strings.Repeat("x", j*25)))})
				}
				if err := prod.ProduceSync(ctx, rs...).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
			seg, err := os.ReadFile(filepath.Join(e.dir, "log", "exact", "0", "00000000000000000000.log"))
			if err != nil {
				t.Fatal(err)
			}
			// Batch start positions in the file, by the offsets they hold.
			type pos struct{ first, last, at int64 }
			var batches []pos
			at := int64(0)
			if err := commitlog.SplitBatches(seg, func(h commitlog.BatchHeader, b []byte) error {
				batches = append(batches, pos{h.BaseOffset, h.LastOffset(), at})
				at += int64(len(b))
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if at != int64(len(seg)) || len(batches) < 3 {
				t.Fatalf("segment of %d bytes splits into %d batches covering %d", len(seg), len(batches), at)
			}
			rc := e.raw()
			for _, off := range []int64{0, 1, batches[1].first, batches[len(batches)-1].last} {
				var want []byte
				for _, b := range batches {
					if off >= b.first && off <= b.last {
						want = seg[b.at:]
					}
				}
				resp := rc.roundTrip(fetchAt("exact", off, 0, 0)).(*kmsg.FetchResponse)
				got := resp.Topics[0].Partitions[0].RecordBatches
				if !bytes.Equal(got, want) {
					t.Fatalf("fetch at %d: %d bytes served, not the %d stored from the batch holding it", off, len(got), len(want))
				}
			}
			if sent := testutil.ToFloat64(e.metrics.SendfileBytes); (sent > 0) == copying {
				t.Fatalf("copy=%v: %v bytes sent with sendfile", copying, sent)
			}
		})
	}
}
