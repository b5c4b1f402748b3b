package commitlog

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

// TestBatchRefusalKinds: every refusal of a raw batch wraps ErrCorruptBatch
// (stored data: damage), and says which kind of problem it is as Kafka
// tells them apart: damaged bytes wrap nothing else; well-framed data that
// breaks the rules wraps ErrInvalidBatch; a batch above MaxBatchSize wraps
// ErrInvalidBatch and ErrRecordTooLarge. AppendBatch stores none of them.
func TestBatchRefusalKinds(t *testing.T) {
	l := openTestLog(t, vfs.NewMem())
	defer l.Close()
	tp := mustTopic(t, l, "t", TopicConfig{})
	p, _ := tp.Partition(0)
	ctx := context.Background()

	good := rawBatch(rec("a", "1", 1), rec("b", "2", 2), rec("c", "3", 3))
	edit := func(crc bool, f func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		f(b)
		if crc {
			binary.BigEndian.PutUint32(b[offCRC:], crc32.Checksum(b[offAttributes:], castagnoli))
		}
		return b
	}
	put32 := func(at int, v int32) func([]byte) {
		return func(b []byte) { binary.BigEndian.PutUint32(b[at:], uint32(v)) }
	}
	huge := make([]byte, MaxBatchSize+1)
	copy(huge, good)
	binary.BigEndian.PutUint32(huge[offLength:], uint32(len(huge)-batchLogOverhead))

	const corrupt, invalid, tooLarge = "corrupt", "invalid", "too large"
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"crc", edit(false, func(b []byte) { b[len(b)-1] ^= 0x40 }), corrupt},
		{"magic 0x42", edit(false, func(b []byte) { b[offMagic] = 0x42 }), corrupt},
		{"magic 1", edit(false, func(b []byte) { b[offMagic] = 1 }), invalid},
		{"length below a header", edit(false, put32(offLength, 13)), corrupt},
		{"negative length", edit(false, put32(offLength, -5)), corrupt},
		{"length past the data", edit(false, put32(offLength, int32(len(good))+52)), invalid},
		{"truncated", good[:len(good)-3], invalid},
		{"header cut short", good[:40], invalid},
		{"sixteen bytes", good[:16], invalid},
		{"empty", nil, invalid},
		{"two batches", append(append([]byte(nil), good...), good...), invalid},
		{"above MaxBatchSize", huge, tooLarge},
		{"count above the offset range", edit(true, put32(offNumRecords, 5)), invalid},
		{"offset range above the count", edit(true, put32(offLastOffsetDelta, 7)), invalid},
		{"negative offset range", edit(true, put32(offLastOffsetDelta, -1)), invalid},
		{"negative count", edit(true, put32(offNumRecords, -1)), invalid},
		{"zero records", edit(true, func(b []byte) { put32(offNumRecords, 0)(b); put32(offLastOffsetDelta, 0)(b) }), invalid},
		{"codec 6", edit(true, func(b []byte) { b[offAttributes+1] |= 6 }), corrupt},
		{"control batch", edit(true, func(b []byte) { b[offAttributes+1] |= attrControl }), invalid},
	}
	for _, c := range cases {
		_, err := p.AppendBatch(ctx, c.data).Wait(ctx)
		got := "accepted"
		switch {
		case err == nil:
		case !errors.Is(err, ErrCorruptBatch):
			got = "not ErrCorruptBatch"
		case errors.Is(err, ErrRecordTooLarge) && errors.Is(err, ErrInvalidBatch):
			got = tooLarge
		case errors.Is(err, ErrRecordTooLarge):
			got = "ErrRecordTooLarge without ErrInvalidBatch"
		case errors.Is(err, ErrInvalidBatch):
			got = invalid
		default:
			got = corrupt
		}
		if got != c.want {
			t.Errorf("%s: %s (%v), want %s", c.name, got, err, c.want)
		}
	}
	if hwm := p.HighWatermark(); hwm != 0 {
		t.Fatalf("%d records stored from refused batches", hwm)
	}
	if st := tp.Stats(); st.InvalidBatches != int64(len(cases)) {
		t.Fatalf("%d refused batches counted, want %d", st.InvalidBatches, len(cases))
	}
	if _, err := p.AppendBatch(ctx, good).Wait(ctx); err != nil {
		t.Fatalf("the good batch: %v", err)
	}
}

// TestValidateProduced: ValidateProduced checks a producer's batch
// completely — beyond AppendBatch's checks, every record decodes and sits
// at its own offset — and says which kind of problem it found; the batch
// it accepts is stored by AppendValidatedBatch byte for byte but for its
// base offset, held only against the topic's max_batch_bytes. A zero
// ValidBatch is refused.
func TestValidateProduced(t *testing.T) {
	l := openTestLog(t, vfs.NewMem())
	defer l.Close()
	tp := mustTopic(t, l, "t", TopicConfig{MaxBatchBytes: 1024})
	p, _ := tp.Partition(0)
	ctx := context.Background()
	mustAppend(t, p, rec("a", "before", 5))

	withDeltas := func(deltas ...int32) []byte { // records at the given offset deltas
		var raw []byte
		for i, d := range deltas {
			raw = appendRecord(raw, d, 0, &Record{Key: []byte("k"), Value: []byte(value(i))})
		}
		return appendBatch(nil, batchFields{lastDelta: int32(len(deltas) - 1), firstTs: 1, maxTs: 1,
			producerID: 42, producerEpoch: 1, baseSequence: 7, count: int32(len(deltas))}, raw)
	}
	good := withDeltas(0, 1, 2)
	vb, err := ValidateProduced(good, defaultDecompressor)
	if err != nil {
		t.Fatalf("a good batch: %v", err)
	}
	if h := vb.Header(); h.NumRecords != 3 || h.ProducerID != 42 || h.BaseSequence != 7 || h.Size() != int64(len(good)) {
		t.Fatalf("header %+v", h)
	}
	if off, err := p.AppendValidatedBatch(ctx, vb).Wait(ctx); err != nil || off != 1 {
		t.Fatalf("append: offset %d, %v", off, err)
	}
	sl, err := p.Read(1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := sl.AppendTo(nil)
	sl.Release()
	want := append([]byte(nil), good...)
	setBatchOffset(want, 1)
	if !bytes.Equal(stored, want) {
		t.Fatal("stored batch differs from the produced batch beyond its base offset")
	}

	garbage := append([]byte(nil), good...)
	for i := BatchHeaderSize; i < len(garbage); i++ {
		garbage[i] = 0xff
	}
	binary.BigEndian.PutUint32(garbage[offCRC:], crc32.Checksum(garbage[offAttributes:], castagnoli))
	for _, c := range []struct {
		name    string
		data    []byte
		invalid bool
	}{
		{"records sharing an offset", withDeltas(0, 0, 2), true},
		{"records out of order", withDeltas(0, 2, 1), true},
		{"records that do not decode", garbage, false},
		{"cut short", good[:len(good)-1], true},
		{"a bad crc", append(good[:len(good)-1:len(good)-1], good[len(good)-1]^1), false},
	} {
		_, err := ValidateProduced(c.data, defaultDecompressor)
		if !errors.Is(err, ErrCorruptBatch) || errors.Is(err, ErrInvalidBatch) != c.invalid {
			t.Errorf("%s: %v, want ErrCorruptBatch with ErrInvalidBatch %v", c.name, err, c.invalid)
		}
	}

	big := rawBatch(Record{Key: []byte("k"), Value: bytes.Repeat([]byte("v"), 2000)})
	vb, err = ValidateProduced(big, defaultDecompressor)
	if err != nil {
		t.Fatalf("a good large batch: %v", err)
	}
	if _, err := p.AppendValidatedBatch(ctx, vb).Wait(ctx); !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("a batch above max_batch_bytes: %v", err)
	}
	if _, err := p.AppendValidatedBatch(ctx, ValidBatch{}).Wait(ctx); !errors.Is(err, ErrInvalidBatch) {
		t.Fatalf("a zero ValidBatch: %v", err)
	}
	if hwm := p.HighWatermark(); hwm != 4 {
		t.Fatalf("high watermark %d, want 4", hwm)
	}
}
