package commitlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

// Slice is a run of whole batches in one segment file, as stored, ready to
// be copied or sent with sendfile. Release it when done.
type Slice struct {
	HighWatermark  int64
	LogStartOffset int64
	// Pos and Len locate the bytes in File. Len is 0 when the read was at
	// the high watermark. The run may end in a partial batch when it was
	// cut at the byte limit, as Kafka's fetch does; decoders drop it.
	Pos, Len int64
	seg      *segment
}

// File returns the segment file holding the slice (nil when empty). It may
// implement vfs.Fder for sendfile; it stays open until Release.
func (s *Slice) File() vfs.File {
	if s.seg == nil {
		return nil
	}
	if lf := s.seg.lazy(); lf != nil {
		f, err := lf.handle()
		if err != nil {
			return unreadableFile{name: lf.name, err: err}
		}
		return f
	}
	return s.seg.file
}

// AppendTo appends the slice's bytes to dst.
func (s *Slice) AppendTo(dst []byte) ([]byte, error) {
	if s.Len == 0 {
		return dst, nil
	}
	n := len(dst)
	dst = append(dst, make([]byte, s.Len)...)
	if _, err := s.seg.file.ReadAt(dst[n:], s.Pos); err != nil && !errors.Is(err, io.EOF) {
		return dst[:n], fmt.Errorf("commitlog: read %s at %d: %w", s.seg.path(suffixLog), s.Pos, err)
	}
	return dst, nil
}

// completeLast reads the rest of the batch the slice was cut in, when its
// header is in buf (the slice's bytes) and the batch is readable: a reader
// stepping through the log by byte limits then decodes each batch once
// instead of reading its head again at the start of the next step.
func (s *Slice) completeLast(buf []byte) ([]byte, error) {
	rest := buf
	for len(rest) >= batchLogOverhead {
		size := storedBatchSize(rest)
		if size < BatchHeaderSize || size > int64(len(rest)) {
			break
		}
		rest = rest[size:]
	}
	if len(rest) < batchLogOverhead {
		return buf, nil
	}
	size := storedBatchSize(rest)
	missing := size - int64(len(rest))
	end := s.Pos + int64(len(buf))
	if size < BatchHeaderSize || size > MaxBatchSize || missing <= 0 || end+missing > s.seg.readable.Load() {
		return buf, nil // a framing problem is the decoder's to report; unreadable bytes stay unread
	}
	n := len(buf)
	buf = append(buf, make([]byte, missing)...)
	if _, err := s.seg.file.ReadAt(buf[n:], end); err != nil && !errors.Is(err, io.EOF) {
		return buf[:n], fmt.Errorf("commitlog: read %s at %d: %w", s.seg.path(suffixLog), end, err)
	}
	return buf, nil
}

// storedBatchSize is the size of the batch that starts b (at least
// batchLogOverhead bytes) by its length field, unchecked.
func storedBatchSize(b []byte) int64 {
	return int64(int32(binary.BigEndian.Uint32(b[offLength:]))) + batchLogOverhead
}

// Release drops the slice's hold on its segment file.
func (s *Slice) Release() {
	if s.seg != nil {
		s.seg.release()
		s.seg = nil
	}
}

// Read returns stored batches starting with the one that holds offset, up
// to maxBytes (the first batch whole even when larger), from one segment,
// with the high watermark. Reading at the high watermark returns an empty
// slice; below the log start or past the high watermark is
// ErrOffsetOutOfRange.
func (p *Partition) Read(offset int64, maxBytes int) (*Slice, error) {
	segs := p.acquireFrom(offset)
	if segs == nil {
		return nil, fmt.Errorf("commitlog: topic %q partition %d: read at %d: %w", p.topic.name, p.id, offset, p.goneErr())
	}
	defer releaseAll(segs)
	hwm, start := p.hwm.Load(), p.logStart.Load()
	if offset < start || offset > hwm {
		return nil, fmt.Errorf("%w: %s/%d offset %d, log holds %d..%d", ErrOffsetOutOfRange, p.topic.name, p.id, offset, start, hwm)
	}
	sl := &Slice{HighWatermark: hwm, LogStartOffset: start}
	if offset == hwm {
		return sl, nil
	}
	for i, passes := 0, 0; i < len(segs); {
		seg := segs[i]
		limit := seg.readable.Load()
		pos, first, err := p.findBatch(seg, offset, limit)
		if err != nil {
			// Damage where a header should be: pass over it (or, when no
			// valid batch follows, the segment's rest) and look again.
			if passes++; passes > maxDamagePasses {
				return nil, fmt.Errorf("commitlog: topic %q partition %d: read at %d: %w", p.topic.name, p.id, offset, err)
			}
			if _, ok := p.damaged(seg, pos, offset, err); !ok {
				i++
			}
			continue
		}
		if pos >= limit {
			i++
			continue // every batch here is below offset; try the next segment
		}
		n := max(int64(maxBytes), first.Size())
		if pos+n > limit {
			n = limit - pos
		}
		if hp := seg.holes.firstFrom(pos + 1); hp >= 0 && pos+n > hp {
			n = hp - pos // never serve damage known to be there
		}
		seg.acquire()
		sl.seg, sl.Pos, sl.Len = seg, pos, n
		return sl, nil
	}
	return sl, nil
}

// ReadRecords decodes records from offset on, up to about maxBytes of
// batches, and returns them with the offset to read next. Batches are
// CRC-checked; a damaged batch is reported once and passed over (next
// moves past its offsets, which DamagedBetween names), so damage never
// stops a reader nor hides what follows it.
func (p *Partition) ReadRecords(offset int64, maxBytes int) (recs []Record, next, hwm int64, err error) {
	for passes := 0; ; {
		sl, err := p.Read(offset, maxBytes)
		if err != nil {
			return nil, offset, p.hwm.Load(), err
		}
		hwm = sl.HighWatermark
		if sl.Len == 0 {
			return nil, offset, hwm, nil
		}
		buf, err := sl.AppendTo(nil)
		if err == nil {
			buf, err = sl.completeLast(buf)
		}
		seg, pos := sl.seg, sl.Pos
		if err != nil {
			sl.Release()
			return nil, offset, hwm, err
		}
		next = offset
		var bad error
		walkErr := SplitBatches(buf, func(h BatchHeader, b []byte) error {
			_, rs, derr := DecodeRecords(b, defaultDecompressor)
			if derr != nil {
				bad = derr
				return derr
			}
			for _, r := range rs {
				if r.Offset >= offset {
					recs = append(recs, r)
				}
			}
			pos += h.Size()
			next = h.NextOffset()
			return nil
		})
		if walkErr != nil && bad == nil {
			bad = walkErr
		}
		if bad == nil {
			sl.Release()
			return recs, next, hwm, nil
		}
		// next is the offset after the last good batch: the first the
		// damage may hold.
		h, ok := p.damaged(seg, pos, next, bad)
		sl.Release()
		resume := h.next
		if !ok {
			resume = p.resumeAfter(seg)
		}
		if len(recs) > 0 {
			return recs, max(resume, next), hwm, nil
		}
		if passes++; passes > maxDamagePasses || (!ok && resume <= offset) {
			return nil, offset, hwm, bad
		}
		offset = max(offset, resume)
	}
}

// maxDamagePasses bounds the damaged ranges one read passes over before
// it reports the damage instead.
const maxDamagePasses = 64

// resumeAfter is where reads go on after seg's damaged rest: the next
// segment's base, or the high watermark.
func (p *Partition) resumeAfter(seg *segment) int64 {
	resume := p.hwm.Load()
	p.segMu.RLock()
	defer p.segMu.RUnlock()
	for i, s := range p.segs {
		if s == seg && i+1 < len(p.segs) {
			resume = p.segs[i+1].base
		}
	}
	return resume
}

// markDamaged limits a sealed segment's readable bytes to pos, records the
// damage and returns the offset where reads resume (the next segment's
// base, or the high watermark).
func (p *Partition) markDamaged(seg *segment, pos int64, cause error) int64 {
	resume := p.resumeAfter(seg)
	for {
		old := seg.readable.Load()
		if pos >= old {
			return resume
		}
		if seg.readable.CompareAndSwap(old, pos) {
			break
		}
	}
	first, readMax := seg.base, int64(-1)
	if pos > 0 {
		h, maxTs, err := lastBatchBefore(seg, pos)
		if err == nil {
			first = h.NextOffset()
		}
		readMax = maxTs
	}
	seg.readMaxTs.Store(readMax)
	p.recordDamage(RepairDamage, Damage{Segment: seg.base, Position: pos, LostBytes: seg.size.Load() - pos,
		FirstOffset: first, NextOffset: resume, Reason: cause.Error()}, "damaged segment, the rest of it passed over (no valid batch follows)")
	return resume
}

// lastBatchBefore returns the header of the batch that ends at end, and
// the largest timestamp of the batches before end (-1 when none), as far
// as it could read them.
func lastBatchBefore(seg *segment, end int64) (last BatchHeader, maxTs int64, err error) {
	var buf [BatchHeaderSize]byte
	pos := int64(0)
	maxTs = -1
	for pos < end {
		if hl, ok := seg.holes.at(pos); ok {
			pos = hl.end
			continue
		}
		h, err := readHeaderAt(seg.file, pos, buf[:])
		if err != nil {
			return last, maxTs, err
		}
		last = h
		maxTs = max(maxTs, h.MaxTimestamp)
		pos += h.Size()
	}
	return last, maxTs, nil
}

// MaxTimestamp is the largest record timestamp readers may see in the
// segments the partition holds, as the batch headers say it (Kafka's
// ListOffsets -3); -1 when the partition holds no record with a timestamp
// (or its topic was deleted). OffsetForTime(MaxTimestamp()) finds the
// first record holding it. It reads no file.
func (p *Partition) MaxTimestamp() int64 {
	p.segMu.RLock()
	defer p.segMu.RUnlock()
	maxTs := int64(-1)
	for _, s := range p.segs {
		maxTs = max(maxTs, s.readMaxTs.Load())
	}
	return maxTs
}

// OffsetForTime returns the first offset whose record timestamp is >= ts,
// with that record's timestamp, as Kafka's ListOffsets does, or ok=false
// when every record is older. A damaged sealed segment is reported and
// skipped, like a read skips it.
func (p *Partition) OffsetForTime(ts int64) (offset, timestamp int64, ok bool, err error) {
	segs := p.acquireFrom(p.logStart.Load())
	if segs == nil {
		return -1, -1, false, fmt.Errorf("commitlog: topic %q partition %d: offset for time %d: %w", p.topic.name, p.id, ts, p.goneErr())
	}
	defer releaseAll(segs)
	for i := 0; i < len(segs); {
		seg := segs[i]
		if seg.maxTs.Load() < ts {
			i++
			continue
		}
		r, found, pos, err := p.offsetForTimeIn(seg, ts)
		if err != nil {
			if _, ok := p.damaged(seg, pos, seg.base, err); !ok {
				i++
			}
			continue // passed over: search again
		}
		i++
		if found {
			return r.Offset, r.Timestamp, true, nil
		}
	}
	return -1, -1, false, nil
}

// offsetForTimeIn searches one segment for the first record at or after
// ts; on error pos is where the segment stopped being readable.
func (p *Partition) offsetForTimeIn(seg *segment, ts int64) (rec Record, found bool, pos int64, err error) {
	limit := seg.readable.Load()
	pos, done, err := p.timeStart(seg, ts, limit)
	if err != nil || done {
		return Record{}, false, pos, err
	}
	var hdr [BatchHeaderSize]byte
	for pos+BatchHeaderSize <= limit {
		if hl, ok := seg.holes.at(pos); ok {
			pos = hl.end
			continue
		}
		h, err := readHeaderAt(seg.file, pos, hdr[:])
		if err != nil {
			return Record{}, false, pos, err
		}
		if pos+h.Size() > limit {
			break
		}
		if h.MaxTimestamp >= ts {
			b := make([]byte, h.Size())
			if _, err := seg.file.ReadAt(b, pos); err != nil && !errors.Is(err, io.EOF) {
				return Record{}, false, pos, err
			}
			_, rs, err := DecodeRecords(b, defaultDecompressor)
			if err != nil {
				return Record{}, false, pos, err
			}
			for _, r := range rs {
				if r.Timestamp >= ts {
					return r, true, pos, nil
				}
			}
		}
		pos += h.Size()
	}
	return Record{}, false, pos, nil
}
