package commitlog

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"path/filepath"
	"testing"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

// seedBatches returns valid batches in every codec plus a control batch.
func seedBatches() [][]byte {
	comp := newCompressor()
	var out [][]byte
	for codec := CompressionNone; codec <= CompressionZstd; codec++ {
		var raw []byte
		for i := 0; i < 3; i++ {
			r := Record{Key: []byte("device-1"), Value: bytes.Repeat([]byte(`{"t":21.5}`), 4+i),
				Headers: []Header{{Key: "type", Value: []byte("sensor")}}}
			raw = appendRecord(raw, int32(i), int64(i*10), &r)
		}
		recs, used := comp.compress(raw, codec)
		out = append(out, appendBatch(nil, batchFields{baseOffset: 7, attributes: int16(used), lastDelta: 2,
			firstTs: 1_700_000_000_000, maxTs: 1_700_000_000_020, producerID: -1, producerEpoch: -1, baseSequence: -1, count: 3}, recs))
	}
	ctl := appendRecord(nil, 0, 0, &Record{Key: []byte{0, 0, 0, 1}, Value: []byte{0, 0, 0, 0, 0, 5}})
	out = append(out, appendBatch(nil, batchFields{attributes: attrControl | attrTransactional, producerID: 9, count: 1}, ctl))
	return out
}

// FuzzDecodeRecords feeds arbitrary bytes to the batch decoder. It must
// never panic or allocate without bound; whatever it accepts must be
// self-consistent and survive re-encoding.
func FuzzDecodeRecords(f *testing.F) {
	for _, b := range seedBatches() {
		f.Add(b, false)
		f.Add(b, true)
		f.Add(b[:len(b)-3], true)
	}
	dec := NewDecompressor(1 << 20)
	comp := newCompressor()
	f.Fuzz(func(t *testing.T, data []byte, fix bool) {
		if fix && len(data) >= BatchHeaderSize {
			// Repair length and CRC so mutations reach the record decoder.
			binary.BigEndian.PutUint32(data[offLength:], uint32(len(data)-batchLogOverhead))
			binary.BigEndian.PutUint32(data[offCRC:], crc32.Checksum(data[offAttributes:], castagnoli))
		}
		h, recs, err := DecodeRecords(data, dec)
		if err != nil {
			return
		}
		if h.Size() != int64(len(data)) || h.Magic != 2 {
			t.Fatalf("accepted a batch whose framing is off: %+v for %d bytes", h, len(data))
		}
		if h.IsControl() {
			return
		}
		if len(recs) != int(h.NumRecords) {
			t.Fatalf("%d records decoded, header says %d", len(recs), h.NumRecords)
		}
		for _, r := range recs {
			if r.Offset < h.BaseOffset || r.Offset > h.LastOffset() {
				t.Fatalf("record offset %d outside %d..%d", r.Offset, h.BaseOffset, h.LastOffset())
			}
		}
		// Re-encode and decode again: the same records come back.
		again := reencodeBatch(nil, h, recs, comp)
		_, recs2, err := DecodeRecords(again, dec)
		if err != nil {
			t.Fatalf("re-encoded batch does not decode: %v", err)
		}
		if len(recs2) != len(recs) {
			t.Fatalf("re-encoded %d records, got %d back", len(recs), len(recs2))
		}
		for i := range recs {
			a, b := recs[i], recs2[i]
			if a.Offset != b.Offset || !bytes.Equal(a.Key, b.Key) || !bytes.Equal(a.Value, b.Value) ||
				(a.Value == nil) != (b.Value == nil) || len(a.Headers) != len(b.Headers) {
				t.Fatalf("record %d changed in re-encoding: %+v vs %+v", i, a, b)
			}
			if !h.LogAppendTime() && a.Timestamp != b.Timestamp {
				t.Fatalf("record %d timestamp %d became %d", i, a.Timestamp, b.Timestamp)
			}
		}
	})
}

// fuzzRecoveryLog builds a log whose active segment holds 40 records in 20
// batches, closed cleanly, and returns the filesystem and the segment path.
func fuzzRecoveryLog(tb testing.TB) (*vfs.Mem, string, []int64) {
	mem := vfs.NewMem()
	l, err := Open(testDir, WithFS(mem), WithLogger(quietLogger()))
	if err != nil {
		tb.Fatal(err)
	}
	tp, err := l.CreateTopic("t", TopicConfig{Compression: CompressionSnappy})
	if err != nil {
		tb.Fatal(err)
	}
	p, _ := tp.Partition(0)
	var ends []int64 // byte position after each batch
	for i := 0; i < 20; i++ {
		if _, err := p.Append(context.Background(), []Record{rec("k", value(2*i), int64(i)), rec("k", value(2*i+1), int64(i))}).Wait(context.Background()); err != nil {
			tb.Fatal(err)
		}
		ends = append(ends, p.Size())
	}
	if err := l.Close(); err != nil {
		tb.Fatal(err)
	}
	return mem, filepath.Join(testDir, "t", "0", segmentName(0, suffixLog)), ends
}

// FuzzRecovery damages the active segment (truncation, a bit flip,
// appended garbage), marks the shutdown unclean and reopens. Open must
// succeed, keep every batch before the first damaged byte, pass over a
// damaged batch that valid ones follow (bit rot, not a torn tail), serve
// no damaged record, and accept appends at the high watermark.
func FuzzRecovery(f *testing.F) {
	f.Add(uint16(0xffff), uint16(0xffff), []byte{})
	f.Add(uint16(500), uint16(0xffff), []byte{})
	f.Add(uint16(0xffff), uint16(300*8+3), []byte{})
	f.Add(uint16(0xffff), uint16(0xffff), []byte("garbage garbage garbage garbage garbage garbage garbage garbage"))
	f.Add(uint16(0xffff), uint16(0xffff), make([]byte, 100))
	f.Add(uint16(1000), uint16(999*8), []byte{0, 0, 0, 0, 0, 0, 0, 40, 0, 0, 0, 200})
	f.Fuzz(func(t *testing.T, cut, flipBit uint16, tail []byte) {
		mem, seg, ends := fuzzRecoveryLog(t)
		f, err := mem.OpenFile(seg, 2, 0)
		if err != nil {
			t.Fatal(err)
		}
		size, _ := f.Size()
		intact := size // bytes before the first damaged one
		if int64(cut) < size {
			f.Truncate(int64(cut))
			intact = int64(cut)
		}
		if pos := int64(flipBit) / 8; pos < intact {
			b := []byte{0}
			f.ReadAt(b, pos)
			b[0] ^= 1 << (flipBit % 8)
			f.WriteAt(b, pos)
			intact = pos
		}
		cur, _ := f.Size()
		if len(tail) > 0 {
			f.WriteAt(tail, cur)
		}
		before, _ := f.Size()
		f.Close()
		// The shutdown was unclean: state.json as Open leaves it.
		stPath := filepath.Join(testDir, "t", "0", stateFile)
		st, _ := vfs.ReadFile(mem, stPath)
		vfs.WriteFileAtomic(mem, stPath, bytes.Replace(st, []byte(`"clean":true`), []byte(`"clean":false`), 1))

		l, err := Open(testDir, WithFS(mem), WithLogger(quietLogger()))
		if err != nil {
			t.Fatalf("open after damage: %v", err)
		}
		defer l.Close()
		tp, _ := l.Topic("t")
		p, _ := tp.Partition(0)
		keep := 0 // records in batches that end before the damage
		for i, end := range ends {
			if end <= intact {
				keep = 2 * (i + 1)
			}
		}
		// The report says what was cut, and the cut is what the file lost.
		rep := p.Recovery()
		after, err := vfs.ReadFile(mem, seg)
		if err != nil {
			t.Fatal(err)
		}
		if rep.TruncatedBytes != before-int64(len(after)) {
			t.Fatalf("report says %d bytes cut, the file went from %d to %d bytes", rep.TruncatedBytes, before, len(after))
		}
		if (rep.TruncatedBytes > 0) != (rep.TruncateReason != "") {
			t.Fatalf("%d bytes cut with reason %q", rep.TruncatedBytes, rep.TruncateReason)
		}
		if rep.ScannedBytes != int64(len(after)) {
			t.Fatalf("scanned %d valid bytes, kept %d", rep.ScannedBytes, len(after))
		}
		got := readAll(t, p)
		if len(got) < keep {
			t.Fatalf("%d records survive, %d batches before byte %d were intact", len(got), keep/2, intact)
		}
		// What must be read: every batch before the cut (or before the
		// garbage) but the one a flipped bit damaged. A flip in a batch's
		// base offset (outside the CRC) breaks the dense offsets there: the
		// tail is cut from it. One in its leader epoch (outside the CRC,
		// not checked) harms nothing.
		want := map[int64]bool{}
		lost := -1
		cutFrom := len(ends)
		limit := min(int64(cut), size) // the original bytes left
		if pos := int64(flipBit) / 8; pos < limit {
			start := int64(0)
			for i, end := range ends {
				if pos < end {
					switch off := pos - start; {
					case off >= 12 && off < 16:
					case off < 8:
						cutFrom = i
					default:
						lost = i
					}
					break
				}
				start = end
			}
		}
		for i, end := range ends {
			if end > limit || i >= cutFrom {
				break
			}
			if i != lost {
				want[int64(2*i)], want[int64(2*i+1)] = true, true
			}
		}
		var next int64
		read := map[int64]bool{}
		for _, r := range got {
			if r.Offset >= 40 || string(r.Value) != value(int(r.Offset)) {
				t.Fatalf("offset %d holds %q: not an intact record of the original batches", r.Offset, r.Value)
			}
			if r.Offset < next {
				t.Fatalf("offset %d after %d", r.Offset, next-1)
			}
			next = r.Offset + 1
			read[r.Offset] = true
		}
		for off := range want { // more may survive: garbage that happens to restore a cut byte
			if !read[off] {
				t.Fatalf("offset %d of an intact batch was not read (flip in batch %d, cut from batch %d; read %d records)", off, lost, cutFrom, len(got))
			}
		}
		if p.HighWatermark() != next {
			t.Fatalf("hwm %d after the last record %d", p.HighWatermark(), next-1)
		}
		if off, err := p.Append(context.Background(), []Record{rec("k", "after", 0)}).Wait(context.Background()); err != nil || off != next {
			t.Fatalf("append after recovery: %d %v", off, err)
		}
	})
}
