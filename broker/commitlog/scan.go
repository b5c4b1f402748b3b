package commitlog

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// scanResult is what a full validation pass over a segment found.
type scanResult struct {
	validBytes int64 // bytes up to the end of the last valid batch
	next       int64 // offset after the last valid batch
	batches    int
	stop       error // why the scan stopped before the file's end; nil at a clean end
	// holes are damaged stretches with valid batches after them, passed
	// over (damage.go), each with its cause; damage with nothing valid
	// after it is the stop instead.
	holes  []hole
	causes []error
}

// scanBufSize is the read size of recovery scans: large reads keep a scan
// of a 1 GiB segment at disk speed.
const scanBufSize = 4 << 20

// scanSegment reads s.file from position 0 to size, validating each batch
// (framing, CRC-32C, offsets that start at the segment base and increase,
// strictly dense when dense is set) and rebuilding the in-memory indexes.
// A batch whose CRC fails while its framing holds, or garbage up to the
// next valid batch (a resync), is a hole when valid batches follow it; the
// scan stops at damage nothing valid follows (a torn tail) and at a
// partial batch.
func scanSegment(s *segment, size int64, dense bool, interval int) scanResult {
	res := scanResult{next: s.base}
	s.idx.Lock()
	s.idx.offsets, s.idx.times, s.idx.onDisk = nil, nil, false
	s.idx.Unlock()
	s.maxTs.Store(-1)
	s.bytesSinceIndex = 0

	buf := make([]byte, 0, scanBufSize)
	var bufStart int64 // file position of buf[0]
	pos := int64(0)
	// fill makes buf hold [pos, pos+need) if the file has it.
	fill := func(need int64) error {
		if pos >= bufStart && pos+need <= bufStart+int64(len(buf)) {
			return nil
		}
		want := max(need, scanBufSize)
		if pos+want > size {
			want = size - pos
		}
		if want < need {
			return io.ErrUnexpectedEOF
		}
		if int64(cap(buf)) < want {
			buf = make([]byte, want)
		}
		buf = buf[:want]
		bufStart = pos
		if _, err := s.file.ReadAt(buf, pos); err != nil && !(errors.Is(err, io.EOF) && pos+want <= size) {
			buf = buf[:0]
			return err
		}
		return nil
	}
	var pending *hole // damage seen, waiting for the next valid batch
	var pendingCause error
	damage := func(at, end int64, cause error) bool {
		if pending == nil {
			pending, pendingCause = &hole{pos: at, first: res.next}, cause
		}
		if end < 0 {
			return false
		}
		pos = end
		return true
	}
	for pos < size {
		if err := fill(BatchHeaderSize); err != nil {
			res.stop = fmt.Errorf("%w: partial batch header at %d", ErrCorruptBatch, pos)
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				res.stop = err
			}
			break
		}
		hb := buf[pos-bufStart:]
		h, _ := ParseBatchHeader(hb)
		if err := h.checkFraming(); err != nil {
			res.stop = fmt.Errorf("at %d: %w", pos, err)
			q, _ := findValidBatch(s, pos+1, size, res.next)
			if damage(pos, q, res.stop) {
				res.stop = nil
				continue
			}
			break
		}
		if err := fill(h.Size()); err != nil {
			res.stop = fmt.Errorf("%w: partial batch at %d (%d of %d bytes)", ErrCorruptBatch, pos, size-pos, h.Size())
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				res.stop = err
				break
			}
			// A torn last batch, or a damaged length: valid batches after
			// it tell the second.
			q, _ := findValidBatch(s, pos+1, size, res.next)
			if damage(pos, q, res.stop) {
				res.stop = nil
				continue
			}
			break
		}
		b := buf[pos-bufStart : pos-bufStart+h.Size()]
		if crc32.Checksum(b[offAttributes:], castagnoli) != h.CRC {
			res.stop = fmt.Errorf("%w: crc mismatch at %d", ErrCorruptBatch, pos)
			// The next batch starts where the length says, unless the
			// length is what broke: then look for it.
			q := pos + h.Size()
			if q+BatchHeaderSize > size || !validHeaderAt(s, q, size) {
				q, _ = findValidBatch(s, pos+1, size, res.next)
			}
			if damage(pos, q, res.stop) {
				res.stop = nil
				continue
			}
			break
		}
		if h.BaseOffset < res.next || (dense && pending == nil && h.BaseOffset != res.next) {
			res.stop = fmt.Errorf("%w: batch at %d has base offset %d, expected %d", ErrCorruptBatch, pos, h.BaseOffset, res.next)
			break
		}
		if h.LastOffset()-s.base > 1<<32-1 {
			res.stop = fmt.Errorf("%w: offset %d does not fit the segment based at %d", ErrCorruptBatch, h.LastOffset(), s.base)
			break
		}
		if pending != nil { // a valid batch after damage: the damage is a hole
			pending.end, pending.next = pos, h.BaseOffset
			res.holes = append(res.holes, *pending)
			res.causes = append(res.causes, pendingCause)
			pending = nil
		}
		s.addIndexEntries(h, pos, interval)
		res.next = h.NextOffset()
		res.batches++
		pos += h.Size()
		res.validBytes = pos
	}
	if pending != nil {
		res.stop = pendingCause // nothing valid after it: the damage is where the scan stopped
	}
	return res
}
