package commitlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Byte offsets of the RecordBatch v2 header fields (see the package doc).
const (
	offBaseOffset      = 0
	offLength          = 8
	offLeaderEpoch     = 12
	offMagic           = 16
	offCRC             = 17
	offAttributes      = 21
	offLastOffsetDelta = 23
	offBaseTimestamp   = 27
	offMaxTimestamp    = 35
	offProducerID      = 43
	offProducerEpoch   = 51
	offBaseSequence    = 53
	offNumRecords      = 57

	// BatchHeaderSize is the size of a RecordBatch v2 header.
	BatchHeaderSize = 61
	// batchLogOverhead is the part of the header outside Length.
	batchLogOverhead = 12
	// MaxBatchSize bounds a single batch on disk and on the wire; anything
	// larger is treated as corruption.
	MaxBatchSize = 64 << 20
)

// Attribute bits.
const (
	attrCodecMask     = 0x07
	attrTimestampType = 0x08
	attrTransactional = 0x10
	attrControl       = 0x20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Batch validation errors. Every refusal wraps ErrCorruptBatch, so a
// reader of stored data takes any of them for damage; for a batch a
// producer sends they say which kind of problem it is, as Kafka tells
// CORRUPT_MESSAGE (which producers retry) from INVALID_RECORD (which they
// do not) and MESSAGE_TOO_LARGE.
var (
	// ErrCorruptBatch is wrapped by every batch validation failure. Alone
	// it means damaged bytes: a length field below a batch header, a
	// magic byte no record format has, a CRC mismatch, an unknown codec,
	// records that do not decompress or decode.
	ErrCorruptBatch = errors.New("commitlog: corrupt record batch")
	// ErrInvalidBatch is wrapped by the refusals of well-framed data that
	// breaks the rules: not exactly one whole batch, an older record
	// format (magic 0 or 1), a negative record count or offset range, a
	// count that does not match the offset range, a control batch. A
	// batch above MaxBatchSize wraps it and ErrRecordTooLarge. It matches
	// ErrCorruptBatch with errors.Is.
	ErrInvalidBatch error = invalidBatchError{}
)

type invalidBatchError struct{}

func (invalidBatchError) Error() string { return "commitlog: invalid record batch" }

// Is makes every invalid batch a corrupt one too.
func (invalidBatchError) Is(target error) bool { return target == ErrCorruptBatch }

// BatchHeader is the decoded fixed part of a RecordBatch v2.
type BatchHeader struct {
	BaseOffset      int64
	Length          int32 // bytes after the Length field
	LeaderEpoch     int32
	Magic           int8
	CRC             uint32
	Attributes      int16
	LastOffsetDelta int32
	BaseTimestamp   int64
	MaxTimestamp    int64
	ProducerID      int64
	ProducerEpoch   int16
	BaseSequence    int32
	NumRecords      int32
}

// Size is the batch's total size in bytes.
func (h BatchHeader) Size() int64 { return int64(h.Length) + batchLogOverhead }

// LastOffset is the offset of the batch's last record.
func (h BatchHeader) LastOffset() int64 { return h.BaseOffset + int64(h.LastOffsetDelta) }

// NextOffset is the offset after the batch.
func (h BatchHeader) NextOffset() int64 { return h.LastOffset() + 1 }

// Codec is the compression codec of the records.
func (h BatchHeader) Codec() Compression { return Compression(h.Attributes & attrCodecMask) }

// IsControl reports a transaction marker batch.
func (h BatchHeader) IsControl() bool { return h.Attributes&attrControl != 0 }

// IsTransactional reports a batch written inside a transaction.
func (h BatchHeader) IsTransactional() bool { return h.Attributes&attrTransactional != 0 }

// LogAppendTime reports a batch whose records carry the broker's time.
func (h BatchHeader) LogAppendTime() bool { return h.Attributes&attrTimestampType != 0 }

// ParseBatchHeader decodes the first BatchHeaderSize bytes of b without
// validating anything but the length of b.
func ParseBatchHeader(b []byte) (BatchHeader, error) {
	if len(b) < BatchHeaderSize {
		return BatchHeader{}, fmt.Errorf("%w: %d bytes, need %d for a header", ErrCorruptBatch, len(b), BatchHeaderSize)
	}
	be := binary.BigEndian
	return BatchHeader{
		BaseOffset:      int64(be.Uint64(b[offBaseOffset:])),
		Length:          int32(be.Uint32(b[offLength:])),
		LeaderEpoch:     int32(be.Uint32(b[offLeaderEpoch:])),
		Magic:           int8(b[offMagic]),
		CRC:             be.Uint32(b[offCRC:]),
		Attributes:      int16(be.Uint16(b[offAttributes:])),
		LastOffsetDelta: int32(be.Uint32(b[offLastOffsetDelta:])),
		BaseTimestamp:   int64(be.Uint64(b[offBaseTimestamp:])),
		MaxTimestamp:    int64(be.Uint64(b[offMaxTimestamp:])),
		ProducerID:      int64(be.Uint64(b[offProducerID:])),
		ProducerEpoch:   int16(be.Uint16(b[offProducerEpoch:])),
		BaseSequence:    int32(be.Uint32(b[offBaseSequence:])),
		NumRecords:      int32(be.Uint32(b[offNumRecords:])),
	}, nil
}

// checkFraming validates what can be checked from the 61-byte header alone:
// the length, the magic byte and the counts: ValidateBatch's rules but the
// CRC and whether the data holds exactly the batch.
func (h BatchHeader) checkFraming() error {
	if err := checkPrefix(h.Length, h.Magic); err != nil {
		return err
	}
	if err := checkFormat(h.Size(), h.Magic); err != nil {
		return err
	}
	return h.checkCounts()
}

// checkPrefix checks the length field and the magic byte, which Kafka
// checks before it knows whether the data holds the whole batch. A break
// is corruption.
func checkPrefix(length int32, magic int8) error {
	switch {
	case length < BatchHeaderSize-batchLogOverhead:
		return fmt.Errorf("%w: length %d below the header size", ErrCorruptBatch, length)
	case magic < 0 || magic > 2:
		return fmt.Errorf("%w: magic %d is no record format", ErrCorruptBatch, magic)
	}
	return nil
}

// checkFormat checks that a batch of size bytes with magic is one the log
// stores: at most MaxBatchSize, RecordBatch v2.
func checkFormat(size int64, magic int8) error {
	switch {
	case size > MaxBatchSize:
		return fmt.Errorf("%w: %w: batch of %d bytes, above the %d byte limit", ErrInvalidBatch, ErrRecordTooLarge, size, MaxBatchSize)
	case magic != 2:
		return fmt.Errorf("%w: magic %d, only 2 (RecordBatch v2) is supported", ErrInvalidBatch, magic)
	}
	return nil
}

// checkCounts checks the record count, the offset range and the codec.
func (h BatchHeader) checkCounts() error {
	switch {
	case h.LastOffsetDelta < 0:
		return fmt.Errorf("%w: negative last offset delta %d", ErrInvalidBatch, h.LastOffsetDelta)
	case h.NumRecords < 0:
		return fmt.Errorf("%w: negative record count %d", ErrInvalidBatch, h.NumRecords)
	case h.Codec() > CompressionZstd:
		return fmt.Errorf("%w: unknown compression codec %d", ErrCorruptBatch, h.Codec())
	}
	return nil
}

// ValidateBatch checks that b holds exactly one well-formed batch: framing,
// magic, CRC-32C and counts. It does not decompress the records. The
// checks run in the order Kafka makes them for a Produce
// (ByteBufferLogInputStream, ProduceRequest.validateRecords,
// DefaultRecordBatch.ensureValid, LogValidator), so a refusal wraps what
// Kafka would answer (see ErrInvalidBatch). Unlike Kafka, which trims
// bytes after the first batch and calls an unknown codec a server error,
// trailing bytes are a second batch and an unknown codec is corruption.
func ValidateBatch(b []byte) (BatchHeader, error) {
	if len(b) <= offMagic {
		return BatchHeader{}, fmt.Errorf("%w: %d bytes hold no whole batch", ErrInvalidBatch, len(b))
	}
	length, magic := int32(binary.BigEndian.Uint32(b[offLength:])), int8(b[offMagic])
	if err := checkPrefix(length, magic); err != nil {
		return BatchHeader{}, err
	}
	size := int64(length) + batchLogOverhead
	if int64(len(b)) < size {
		return BatchHeader{}, fmt.Errorf("%w: length field says %d bytes, have %d: no whole batch", ErrInvalidBatch, size, len(b))
	}
	if err := checkFormat(size, magic); err != nil {
		return BatchHeader{}, err
	}
	if int64(len(b)) > size {
		return BatchHeader{}, fmt.Errorf("%w: %d bytes after the batch: exactly one is allowed", ErrInvalidBatch, int64(len(b))-size)
	}
	h, err := ParseBatchHeader(b) // checkPrefix: b holds a whole header
	if err != nil {
		return h, err
	}
	if got := crc32.Checksum(b[offAttributes:], castagnoli); got != h.CRC {
		return h, fmt.Errorf("%w: crc %08x, computed %08x", ErrCorruptBatch, h.CRC, got)
	}
	return h, h.checkCounts()
}

// setBatchOffset rewrites the base offset and leader epoch of an encoded
// batch; both lie outside the CRC.
func setBatchOffset(b []byte, base int64) {
	binary.BigEndian.PutUint64(b[offBaseOffset:], uint64(base))
	binary.BigEndian.PutUint32(b[offLeaderEpoch:], 0)
}

// batchBuilder accumulates encoded records for one batch. It is filled by
// appenders (under the partition lock) and sealed by the committer.
type batchBuilder struct {
	records []byte // encoded records, uncompressed
	count   int32
	firstTs int64
	maxTs   int64
}

func (b *batchBuilder) reset() {
	b.records = b.records[:0]
	b.count = 0
	b.firstTs, b.maxTs = 0, 0
}

// add encodes one record. The offset delta is the record's index in the
// batch and the timestamp delta is relative to the first record's.
func (b *batchBuilder) add(r *Record, ts int64) {
	if b.count == 0 {
		b.firstTs, b.maxTs = ts, ts
	}
	if ts > b.maxTs {
		b.maxTs = ts
	}
	b.records = appendRecord(b.records, b.count, ts-b.firstTs, r)
	b.count++
}

func varintLen(v int64) int {
	u := uint64(v<<1) ^ uint64(v>>63)
	n := 1
	for u >= 0x80 {
		u >>= 7
		n++
	}
	return n
}

func bytesFieldLen(b []byte, isNil bool) int {
	if isNil {
		return varintLen(-1)
	}
	return varintLen(int64(len(b))) + len(b)
}

func appendBytesField(dst, b []byte, isNil bool) []byte {
	if isNil {
		return binary.AppendVarint(dst, -1)
	}
	dst = binary.AppendVarint(dst, int64(len(b)))
	return append(dst, b...)
}

// appendRecord encodes r in the v2 record format:
//
//	length varint | attributes int8 | timestampDelta varlong | offsetDelta varint |
//	keyLength varint | key | valueLength varint | value |
//	headerCount varint | (headerKeyLength varint | headerKey | headerValueLength varint | headerValue)*
func appendRecord(dst []byte, offsetDelta int32, tsDelta int64, r *Record) []byte {
	body := 1 + varintLen(tsDelta) + varintLen(int64(offsetDelta)) +
		bytesFieldLen(r.Key, r.Key == nil) + bytesFieldLen(r.Value, r.Value == nil) +
		varintLen(int64(len(r.Headers)))
	for i := range r.Headers {
		h := &r.Headers[i]
		body += varintLen(int64(len(h.Key))) + len(h.Key) + bytesFieldLen(h.Value, h.Value == nil)
	}
	dst = binary.AppendVarint(dst, int64(body))
	dst = append(dst, 0)
	dst = binary.AppendVarint(dst, tsDelta)
	dst = binary.AppendVarint(dst, int64(offsetDelta))
	dst = appendBytesField(dst, r.Key, r.Key == nil)
	dst = appendBytesField(dst, r.Value, r.Value == nil)
	dst = binary.AppendVarint(dst, int64(len(r.Headers)))
	for i := range r.Headers {
		h := &r.Headers[i]
		dst = binary.AppendVarint(dst, int64(len(h.Key)))
		dst = append(dst, h.Key...)
		dst = appendBytesField(dst, h.Value, h.Value == nil)
	}
	return dst
}

// batchFields are the header fields the writer chooses for a new batch.
type batchFields struct {
	baseOffset    int64
	attributes    int16
	lastDelta     int32
	firstTs       int64
	maxTs         int64
	producerID    int64
	producerEpoch int16
	baseSequence  int32
	count         int32
}

// appendBatch appends a complete batch (header, CRC) around records, which
// are already compressed as f.attributes says.
func appendBatch(dst []byte, f batchFields, records []byte) []byte {
	start := len(dst)
	dst = binary.BigEndian.AppendUint64(dst, uint64(f.baseOffset))
	dst = binary.BigEndian.AppendUint32(dst, uint32(BatchHeaderSize-batchLogOverhead+len(records)))
	dst = binary.BigEndian.AppendUint32(dst, 0) // partition leader epoch
	dst = append(dst, 2)                        // magic
	dst = binary.BigEndian.AppendUint32(dst, 0) // crc, patched below
	dst = binary.BigEndian.AppendUint16(dst, uint16(f.attributes))
	dst = binary.BigEndian.AppendUint32(dst, uint32(f.lastDelta))
	dst = binary.BigEndian.AppendUint64(dst, uint64(f.firstTs))
	dst = binary.BigEndian.AppendUint64(dst, uint64(f.maxTs))
	dst = binary.BigEndian.AppendUint64(dst, uint64(f.producerID))
	dst = binary.BigEndian.AppendUint16(dst, uint16(f.producerEpoch))
	dst = binary.BigEndian.AppendUint32(dst, uint32(f.baseSequence))
	dst = binary.BigEndian.AppendUint32(dst, uint32(f.count))
	dst = append(dst, records...)
	crc := crc32.Checksum(dst[start+offAttributes:], castagnoli)
	binary.BigEndian.PutUint32(dst[start+offCRC:], crc)
	return dst
}

// DecodeRecords validates batch (exactly one batch), decompresses it and
// returns its records with absolute offsets and timestamps. The returned
// records alias the decompressed buffer. Control batches yield no records.
func DecodeRecords(batch []byte, d *Decompressor) (BatchHeader, []Record, error) {
	h, err := ValidateBatch(batch)
	if err != nil {
		return h, nil, err
	}
	if h.IsControl() {
		return h, nil, nil
	}
	recs, err := decodeBody(h, batch, d)
	return h, recs, err
}

// decodeBody decompresses and decodes the records of a validated batch.
func decodeBody(h BatchHeader, batch []byte, d *Decompressor) ([]Record, error) {
	raw, err := d.Decompress(batch[BatchHeaderSize:], h.Codec())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorruptBatch, err)
	}
	return decodeRecordSet(h, raw)
}

// ValidBatch is a raw batch checked as the log requires (ValidateBatch,
// then checkProduced), for Partition.AppendValidatedBatch, which checks
// nothing again. Only this package makes one: ValidateProduced for a
// caller, AppendBatch for itself.
type ValidBatch struct {
	h BatchHeader
	b []byte
}

// Header returns the batch's header.
func (v ValidBatch) Header() BatchHeader { return v.h }

// ValidateProduced validates a batch as a producer sends it, completely and
// in Kafka's order: exactly one well-formed batch with a good CRC
// (ValidateBatch), offsets dense and no control batch (checkProduced),
// every record decompressed (with d) and decoded, and each record's
// offset its index in the batch. Errors are classified as ValidateBatch's.
// The result aliases batch: append it while batch is unchanged.
func ValidateProduced(batch []byte, d *Decompressor) (ValidBatch, error) {
	h, err := ValidateBatch(batch)
	if err == nil {
		err = checkProduced(h)
	}
	if err != nil {
		return ValidBatch{}, err
	}
	recs, err := decodeBody(h, batch, d)
	if err != nil {
		return ValidBatch{}, err
	}
	for i := range recs {
		if delta := recs[i].Offset - h.BaseOffset; delta != int64(i) {
			return ValidBatch{}, fmt.Errorf("%w: record %d has offset delta %d: offsets would not be dense", ErrInvalidBatch, i, delta)
		}
	}
	return ValidBatch{h: h, b: batch}, nil
}

// checkProduced checks what the log relies on in a raw batch's header
// beyond ValidateBatch. Its offsets are dense: it claims exactly one
// offset per record (base..base+n-1), so it can never open a gap in the
// partition's offsets (the records' own deltas are checked by whoever
// decodes them: ValidateProduced; readers refuse deltas outside the
// batch). And it is no control batch: those are a transaction
// coordinator's, which Ferry does not have.
func checkProduced(h BatchHeader) error {
	switch {
	case h.NumRecords < 1:
		return fmt.Errorf("%w: batch holds %d records", ErrInvalidBatch, h.NumRecords)
	case h.LastOffsetDelta != h.NumRecords-1:
		return fmt.Errorf("%w: last offset delta %d does not match %d records (want %d): offsets would not be dense",
			ErrInvalidBatch, h.LastOffsetDelta, h.NumRecords, h.NumRecords-1)
	case h.IsControl():
		return fmt.Errorf("%w: control batches cannot be produced", ErrInvalidBatch)
	}
	return nil
}

// decodeRecordSet decodes h.NumRecords records from raw with kmsg.
func decodeRecordSet(h BatchHeader, raw []byte) ([]Record, error) {
	if int(h.NumRecords) > len(raw)/7 { // a record is at least 7 bytes
		return nil, fmt.Errorf("%w: %d records cannot fit in %d bytes", ErrCorruptBatch, h.NumRecords, len(raw))
	}
	recs := make([]Record, 0, h.NumRecords)
	for i := int32(0); i < h.NumRecords; i++ {
		l, n := binary.Varint(raw)
		if n <= 0 || l < 0 || int64(len(raw)-n) < l {
			return nil, fmt.Errorf("%w: record %d: bad length", ErrCorruptBatch, i)
		}
		var kr kmsg.Record
		if err := kr.ReadFrom(raw[:n+int(l)]); err != nil {
			return nil, fmt.Errorf("%w: record %d: %w", ErrCorruptBatch, i, err)
		}
		raw = raw[n+int(l):]
		if kr.OffsetDelta < 0 || kr.OffsetDelta > h.LastOffsetDelta {
			return nil, fmt.Errorf("%w: record %d: offset delta %d outside 0..%d", ErrCorruptBatch, i, kr.OffsetDelta, h.LastOffsetDelta)
		}
		r := Record{
			Offset:    h.BaseOffset + int64(kr.OffsetDelta),
			Timestamp: h.BaseTimestamp + kr.TimestampDelta64,
			Key:       kr.Key,
			Value:     kr.Value,
		}
		if h.LogAppendTime() {
			r.Timestamp = h.MaxTimestamp
		}
		if len(kr.Headers) > 0 {
			r.Headers = make([]Header, len(kr.Headers))
			for j, kh := range kr.Headers {
				r.Headers[j] = Header{Key: kh.Key, Value: kh.Value}
			}
		}
		recs = append(recs, r)
	}
	if len(raw) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes after %d records", ErrCorruptBatch, len(raw), h.NumRecords)
	}
	return recs, nil
}

// SplitBatches walks b, a run of concatenated batches such as a Read
// returns, and calls fn with each complete batch. A partial batch at the end
// is ignored; a batch whose framing is invalid stops the walk with an error.
func SplitBatches(b []byte, fn func(h BatchHeader, batch []byte) error) error {
	for len(b) >= BatchHeaderSize {
		h, _ := ParseBatchHeader(b)
		if err := h.checkFraming(); err != nil {
			return err
		}
		if h.Size() > int64(len(b)) {
			return nil
		}
		if err := fn(h, b[:h.Size()]); err != nil {
			return err
		}
		b = b[h.Size():]
	}
	return nil
}
