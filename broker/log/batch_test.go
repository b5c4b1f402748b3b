package log

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"

	"github.com/ferry-iot/ferry/broker/log/vfs"
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
