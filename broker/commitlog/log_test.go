package commitlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

func TestAppendReadRoundTrip(t *testing.T) {
	for _, codec := range []Compression{CompressionNone, CompressionGzip, CompressionSnappy, CompressionLz4, CompressionZstd} {
		t.Run(codec.String(), func(t *testing.T) {
			l := openTestLog(t, vfs.NewMem())
			defer l.Close()
			tp := mustTopic(t, l, "t", TopicConfig{Compression: codec})
			p, _ := tp.Partition(0)
			var want []Record
			for i := 0; i < 50; i++ {
				r := Record{Key: []byte(fmt.Sprintf("dev-%d", i%7)), Value: bytes.Repeat([]byte(value(i)), 20),
					Timestamp: 1_700_000_000_000 + int64(i),
					Headers:   []Header{{Key: "device", Value: []byte("d")}, {Key: "null", Value: nil}}}
				if i%10 == 3 {
					r.Key = nil
				}
				want = append(want, r)
			}
			off := mustAppend(t, p, want[:20]...)
			if off != 0 {
				t.Fatalf("first offset %d", off)
			}
			if off := mustAppend(t, p, want[20:]...); off != 20 {
				t.Fatalf("second append offset %d, want 20", off)
			}
			got := readAll(t, p)
			if len(got) != len(want) {
				t.Fatalf("read %d records, want %d", len(got), len(want))
			}
			for i := range want {
				g, w := got[i], want[i]
				if g.Offset != int64(i) || !bytes.Equal(g.Key, w.Key) || (g.Key == nil) != (w.Key == nil) ||
					!bytes.Equal(g.Value, w.Value) || g.Timestamp != w.Timestamp || len(g.Headers) != 2 ||
					g.Headers[0].Key != "device" || string(g.Headers[0].Value) != "d" || g.Headers[1].Value != nil {
					t.Fatalf("record %d: got %+v want %+v", i, g, w)
				}
			}
			if p.HighWatermark() != 50 {
				t.Fatalf("hwm %d", p.HighWatermark())
			}
			// The stored batches carry the codec in their attributes: the
			// records were really compressed with it.
			sl, err := p.Read(0, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := sl.AppendTo(nil)
			sl.Release()
			if err != nil {
				t.Fatal(err)
			}
			batches := 0
			if err := SplitBatches(raw, func(h BatchHeader, b []byte) error {
				batches++
				if h.Codec() != codec {
					t.Errorf("batch at offset %d stored with codec %v, topic asks for %v", h.BaseOffset, h.Codec(), codec)
				}
				return nil
			}); err != nil || batches < 2 {
				t.Fatalf("%d batches: %v", batches, err)
			}
		})
	}
}

// TestBatchesAreKafkaRecordBatches decodes the stored bytes with franz-go's
// kmsg and checks every header field and the CRC independently.
func TestBatchesAreKafkaRecordBatches(t *testing.T) {
	l := openTestLog(t, vfs.NewMem())
	defer l.Close()
	tp := mustTopic(t, l, "t", TopicConfig{Compression: CompressionZstd})
	p, _ := tp.Partition(0)
	long := strings.Repeat(`{"temperature":21.5,"humidity":40}`, 8)
	mustAppend(t, p, rec("k1", long, 1000), rec("k2", long, 1005))
	mustAppend(t, p, rec("k3", long, 990))
	sl, err := p.Read(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := sl.AppendTo(nil)
	sl.Release()
	var offsets []int64
	for len(raw) > 0 {
		var kb kmsg.RecordBatch
		if err := kb.ReadFrom(raw); err != nil {
			t.Fatalf("kmsg: %v", err)
		}
		size := int(kb.Length) + 12
		if kb.Magic != 2 || kb.PartitionLeaderEpoch != 0 || kb.ProducerID != -1 || kb.FirstSequence != -1 {
			t.Fatalf("header %+v", kb)
		}
		if crc := int32(crc32.Checksum(raw[21:size], crc32.MakeTable(crc32.Castagnoli))); crc != kb.CRC {
			t.Fatalf("crc %x, computed %x", kb.CRC, crc)
		}
		if kb.Attributes&7 != 4 {
			t.Fatalf("codec bits %d, want zstd", kb.Attributes&7)
		}
		d, err := kgo.DefaultDecompressor().Decompress(kb.Records, kgo.CodecZstd)
		if err != nil {
			t.Fatalf("franz-go cannot decompress: %v", err)
		}
		for i := 0; i < int(kb.NumRecords); i++ {
			var kr kmsg.Record
			if err := kr.ReadFrom(d); err != nil {
				t.Fatal(err)
			}
			d = d[kr.Length+int32(varintLen(int64(kr.Length))):]
			offsets = append(offsets, kb.FirstOffset+int64(kr.OffsetDelta))
			if kb.FirstTimestamp+kr.TimestampDelta64 > kb.MaxTimestamp {
				t.Fatalf("record timestamp above max")
			}
		}
		raw = raw[size:]
	}
	if fmt.Sprint(offsets) != "[0 1 2]" {
		t.Fatalf("offsets %v", offsets)
	}
}

func TestKeyPartitionMatchesKafka(t *testing.T) {
	// Kafka's UtilsTest.testMurmur2 vectors.
	for key, want := range map[string]int32{
		"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536,
		"a-little-bit-longer-string": -1486304829, "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	} {
		if got := murmur2([]byte(key)); got != want {
			t.Errorf("murmur2(%q) = %d, want %d", key, got, want)
		}
	}
	// franz-go's Kafka-compatible key partitioner must agree for every key.
	kp := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	for _, n := range []int{1, 3, 8, 12} {
		for i := 0; i < 2000; i++ {
			key := []byte(fmt.Sprintf("device-%d", i))
			if got, want := KeyPartition(key, n), kp.Partition(&kgo.Record{Key: key}, n); int(got) != want {
				t.Fatalf("key %s n=%d: %d, franz-go %d", key, n, got, want)
			}
		}
	}
}

func TestTopicAppendRoutesByKeyAndSpreadsNullKeys(t *testing.T) {
	l := openTestLog(t, vfs.NewMem())
	defer l.Close()
	tp := mustTopic(t, l, "t", TopicConfig{Partitions: 4})
	ctx := context.Background()
	for i := 0; i < 40; i++ {
		if _, err := tp.Append(ctx, []Record{rec("device-7", value(i), 0)}).Wait(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := tp.Append(ctx, []Record{rec("", value(i), 0)}).Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	want := KeyPartition([]byte("device-7"), 4)
	for _, p := range tp.Partitions() {
		keyed, null := 0, 0
		for _, r := range readAll(t, p) {
			if r.Key == nil {
				null++
			} else {
				keyed++
			}
		}
		if p.ID() == want && keyed != 40 || p.ID() != want && keyed != 0 {
			t.Fatalf("partition %d has %d keyed records", p.ID(), keyed)
		}
		if null != 10 {
			t.Fatalf("partition %d has %d null-key records, want 10 (even spread)", p.ID(), null)
		}
	}
	// A mixed append spanning partitions completes when all parts do.
	f := tp.Append(ctx, []Record{rec("a", "1", 0), rec("b", "2", 0), rec("c", "3", 0), rec("d", "4", 0)})
	if _, err := f.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

// slowSyncFS delays every fsync, like an SD card, so group commit shows.
type slowSyncFS struct {
	vfs.FS
	delay time.Duration
	mu    sync.Mutex
	syncs int
}

func (s *slowSyncFS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	f, err := s.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &slowSyncFile{File: f, fs: s}, nil
}

type slowSyncFile struct {
	vfs.File
	fs *slowSyncFS
}

func (f *slowSyncFile) Sync() error {
	time.Sleep(f.fs.delay)
	f.fs.mu.Lock()
	f.fs.syncs++
	f.fs.mu.Unlock()
	return f.File.Sync()
}

func TestGroupCommitSharesFsyncs(t *testing.T) {
	fs := &slowSyncFS{FS: vfs.NewMem(), delay: 5 * time.Millisecond}
	l := openTestLog(t, fs)
	defer l.Close()
	tp := mustTopic(t, l, "t", TopicConfig{Partitions: 2})
	fs.mu.Lock()
	fs.syncs = 0
	fs.mu.Unlock()
	const writers, each = 32, 20
	var wg sync.WaitGroup
	ctx := context.Background()
	for w := 0; w < writers; w++ {
		wg.Go(func() {
			for i := 0; i < each; i++ {
				if _, err := tp.Append(ctx, []Record{rec(fmt.Sprintf("w%d", w), value(i), 0)}).Wait(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	fs.mu.Lock()
	syncs := fs.syncs
	fs.mu.Unlock()
	total := 0
	batches := 0
	for _, p := range tp.Partitions() {
		total += len(readAll(t, p))
		sl, _ := p.Read(0, 1<<30)
		b, _ := sl.AppendTo(nil)
		sl.Release()
		_ = SplitBatches(b, func(BatchHeader, []byte) error { batches++; return nil })
	}
	if total != writers*each {
		t.Fatalf("read %d records, want %d", total, writers*each)
	}
	if syncs >= writers*each/4 || batches >= writers*each/4 {
		t.Fatalf("%d appends took %d fsyncs and %d batches: no group commit", writers*each, syncs, batches)
	}
	t.Logf("%d acknowledged appends, %d fsyncs, %d batches", writers*each, syncs, batches)
}

func TestPipelinedAppendsKeepOrder(t *testing.T) {
	l := openTestLog(t, vfs.NewMem())
	defer l.Close()
	p, _ := mustTopic(t, l, "t", TopicConfig{}).Partition(0)
	ctx := context.Background()
	futs := make([]*Future, 2000)
	for i := range futs {
		futs[i] = p.Append(ctx, []Record{rec("k", value(i), 0)})
	}
	for i, f := range futs {
		off, err := f.Wait(ctx)
		if err != nil || off != int64(i) {
			t.Fatalf("append %d: offset %d err %v", i, off, err)
		}
	}
	for i, r := range readAll(t, p) {
		if string(r.Value) != value(i) {
			t.Fatalf("offset %d holds %s", i, r.Value)
		}
	}
}

func TestLongPollWakesOnAppend(t *testing.T) {
	l := openTestLog(t, vfs.NewMem())
	defer l.Close()
	p, _ := mustTopic(t, l, "t", TopicConfig{}).Partition(0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	woke := make(chan error, 1)
	go func() { woke <- p.Wait(ctx, 0) }()
	select {
	case err := <-woke:
		t.Fatalf("Wait returned before any append: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	mustAppend(t, p, rec("k", "v", 0))
	if err := <-woke; err != nil {
		t.Fatal(err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if err := p.Wait(short, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait past the end returned %v", err)
	}
}

func TestReadBoundsAndOffsetForTime(t *testing.T) {
	l := openTestLog(t, vfs.NewMem())
	defer l.Close()
	p, _ := mustTopic(t, l, "t", TopicConfig{SegmentBytes: 4096, IndexIntervalBytes: 256}).Partition(0)
	for i := 0; i < 300; i++ {
		mustAppend(t, p, rec("k", value(i), 1_000_000+int64(i)*10))
	}
	if p.Segments() < 3 {
		t.Fatalf("expected several segments, have %d", p.Segments())
	}
	if _, err := p.Read(301, 100); !errors.Is(err, ErrOffsetOutOfRange) {
		t.Fatalf("read past hwm: %v", err)
	}
	sl, err := p.Read(300, 100)
	if err != nil || sl.Len != 0 {
		t.Fatalf("read at hwm: %+v %v", sl, err)
	}
	for _, off := range []int64{0, 1, 77, 150, 299} {
		recs, _, _, err := p.ReadRecords(off, 1)
		if err != nil || len(recs) == 0 || recs[0].Offset != off {
			t.Fatalf("read at %d: %v %v", off, recs, err)
		}
	}
	for _, c := range []struct{ ts, want int64 }{{0, 0}, {1_000_000, 0}, {1_000_001, 1}, {1_001_500, 150}, {1_002_990, 299}} {
		got, found, ok, err := p.OffsetForTime(c.ts)
		if err != nil || !ok || got != c.want || found != 1_000_000+c.want*10 {
			t.Fatalf("OffsetForTime(%d) = %d at %d %v %v, want %d at %d", c.ts, got, found, ok, err, c.want, 1_000_000+c.want*10)
		}
	}
	if _, _, ok, _ := p.OffsetForTime(2_000_000); ok {
		t.Fatal("OffsetForTime past the newest record found one")
	}
	if m := p.MaxTimestamp(); m != 1_002_990 {
		t.Fatalf("MaxTimestamp %d over %d segments, want 1002990", m, p.Segments())
	}
}

// TestMaxTimestamp: MaxTimestamp is the largest record timestamp readers
// may see, not the last record's (producers' timestamps need not grow),
// -1 for an empty partition; a batch written but not yet readable (its
// fsync held) does not count until it is published. OffsetForTime of it
// finds the first record holding it, with that timestamp.
func TestMaxTimestamp(t *testing.T) {
	var mu sync.Mutex
	var gate chan struct{} // guarded by mu; non-nil: segment fsyncs wait for it
	held := make(chan struct{}, 16)
	efs := vfs.NewErrorFS(vfs.NewMem(), vfs.InjectFunc(func(op vfs.Op, name string) error {
		if op != vfs.OpSync || !strings.HasSuffix(name, ".log") {
			return nil
		}
		mu.Lock()
		g := gate
		mu.Unlock()
		if g != nil {
			held <- struct{}{}
			<-g
		}
		return nil
	}))
	release := func() {
		mu.Lock()
		defer mu.Unlock()
		if gate != nil {
			close(gate)
			gate = nil
		}
	}
	l := openTestLog(t, efs)
	t.Cleanup(func() { l.Close() })
	t.Cleanup(release) // first: a failed check must not leave Close waiting on a held fsync
	p, _ := mustTopic(t, l, "t", TopicConfig{}).Partition(0)
	if m := p.MaxTimestamp(); m != -1 {
		t.Fatalf("MaxTimestamp of an empty partition: %d, want -1", m)
	}
	//           offset: 0     1     2       3     4     5
	mustAppend(t, p, rec("", "a", 1000), rec("", "b", 5000), rec("", "c", 2000))
	mustAppend(t, p, rec("", "d", 3000), rec("", "e", 5000), rec("", "f", 1500))
	check := func(wantMax, wantOff int64) {
		t.Helper()
		m := p.MaxTimestamp()
		off, found, ok, err := p.OffsetForTime(m)
		if m != wantMax || err != nil || !ok || off != wantOff || found != wantMax {
			t.Fatalf("MaxTimestamp %d, OffsetForTime of it %d at %d (%v, %v); want %d at offset %d", m, off, found, ok, err, wantMax, wantOff)
		}
	}
	check(5000, 1)
	if off, found, ok, err := p.OffsetForTime(2500); err != nil || !ok || off != 1 || found != 5000 {
		t.Fatalf("OffsetForTime(2500) = %d at %d %v %v, want the record at 5000, offset 1", off, found, ok, err)
	}

	mu.Lock()
	gate = make(chan struct{})
	mu.Unlock()
	f := p.Append(context.Background(), []Record{rec("", "g", 9000)})
	<-held // written, its fsync waiting: not readable yet
	check(5000, 1)
	release()
	if off, err := f.Wait(context.Background()); err != nil || off != 6 {
		t.Fatalf("append after the held fsync: %d %v", off, err)
	}
	check(9000, 6)
}

func TestRawBatchAppendKeepsBytes(t *testing.T) {
	l := openTestLog(t, vfs.NewMem())
	defer l.Close()
	p, _ := mustTopic(t, l, "t", TopicConfig{}).Partition(0)
	mustAppend(t, p, rec("a", "before", 5))
	// A batch as a Kafka producer would send it: base offset 0, idempotent fields.
	var rb []byte
	rb = appendRecord(rb, 0, 0, &Record{Key: []byte("x"), Value: []byte("1")})
	rb = appendRecord(rb, 1, 3, &Record{Key: []byte("y"), Value: []byte("2")})
	batch := appendBatch(nil, batchFields{lastDelta: 1, firstTs: 100, maxTs: 103, producerID: 42, producerEpoch: 1, baseSequence: 7, count: 2}, rb)
	off, err := p.AppendBatch(context.Background(), batch).Wait(context.Background())
	if err != nil || off != 1 {
		t.Fatalf("raw append: %d %v", off, err)
	}
	sl, _ := p.Read(1, 1<<20)
	stored, _ := sl.AppendTo(nil)
	sl.Release()
	want := append([]byte(nil), batch...)
	setBatchOffset(want, 1)
	if !bytes.Equal(stored, want) {
		t.Fatal("stored batch differs from the produced batch beyond its base offset")
	}
	corrupt := append([]byte(nil), batch...)
	corrupt[len(corrupt)-1] ^= 1
	if _, err := p.AppendBatch(context.Background(), corrupt).Wait(context.Background()); !errors.Is(err, ErrCorruptBatch) {
		t.Fatalf("corrupt batch accepted: %v", err)
	}
	if p.HighWatermark() != 3 {
		t.Fatalf("hwm %d after a refused batch", p.HighWatermark())
	}
}

// TestAppendBatchRefusesOffsetGaps: a raw batch whose last offset delta
// does not match its record count would claim offsets no record holds (or
// records sharing an offset). AppendBatch must refuse it, count it, and
// leave the offsets dense.
func TestAppendBatchRefusesOffsetGaps(t *testing.T) {
	l := openTestLog(t, vfs.NewMem())
	defer l.Close()
	tp := mustTopic(t, l, "t", TopicConfig{})
	p, _ := tp.Partition(0)
	ctx := context.Background()
	mustAppend(t, p, rec("a", "first", 5))
	build := func(count int, lastDelta int32) []byte {
		var rb []byte
		for i := 0; i < count; i++ {
			rb = appendRecord(rb, int32(i), 0, &Record{Key: []byte("k"), Value: []byte(value(i))})
		}
		return appendBatch(nil, batchFields{lastDelta: lastDelta, firstTs: 1, maxTs: 1, producerID: -1,
			producerEpoch: -1, baseSequence: -1, count: int32(count)}, rb)
	}
	for _, c := range []struct {
		count     int
		lastDelta int32
	}{{2, 5}, {3, 1}, {0, 0}, {1, 1}} {
		_, err := p.AppendBatch(ctx, build(c.count, c.lastDelta)).Wait(ctx)
		if !errors.Is(err, ErrInvalidBatch) || !strings.Contains(err.Error(), "topic t partition 0") {
			t.Fatalf("%d records with last offset delta %d: %v", c.count, c.lastDelta, err)
		}
	}
	if st := tp.Stats(); st.InvalidBatches != 4 {
		t.Fatalf("%d refused batches counted, want 4", st.InvalidBatches)
	}
	if off, err := p.AppendBatch(ctx, build(3, 2)).Wait(ctx); err != nil || off != 1 {
		t.Fatalf("a well-formed batch after the refused ones: offset %d, %v", off, err)
	}
	if hwm := p.HighWatermark(); hwm != 4 {
		t.Fatalf("high watermark %d, want 4", hwm)
	}
	for i, r := range readAll(t, p) {
		if r.Offset != int64(i) {
			t.Fatalf("offsets not dense: index %d holds %d", i, r.Offset)
		}
	}
}

// TestCompressionReadableByFranzGo: franz-go (what Kafka clients use)
// decompresses every codec the log writes.
func TestCompressionReadableByFranzGo(t *testing.T) {
	src := []byte(strings.Repeat(`{"ts":1700000000000,"values":{"temperature":21.5}}`, 50))
	c := newCompressor()
	for codec, kc := range map[Compression]kgo.CompressionCodecType{
		CompressionGzip: kgo.CodecGzip, CompressionSnappy: kgo.CodecSnappy, CompressionLz4: kgo.CodecLz4, CompressionZstd: kgo.CodecZstd,
	} {
		for round := 0; round < 2; round++ { // the second round reuses the encoder
			out, used := c.compress(src, codec)
			if used != codec || len(out) >= len(src) {
				t.Fatalf("%v: used %v, %d bytes", codec, used, len(out))
			}
			got, err := kgo.DefaultDecompressor().Decompress(append([]byte(nil), out...), kc)
			if err != nil || !bytes.Equal(got, src) {
				t.Fatalf("%v round %d: franz-go decompression: %v", codec, round, err)
			}
		}
	}
}
