package commitlog

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
)

// Damage inside a segment is passed over, not served and not allowed to
// hide what follows it. A hole is one damaged batch whose framing still
// holds (its CRC or its records fail: the next batch starts where its
// length says), or, when the framing itself broke, the bytes up to the
// next position where a whole, CRC-valid batch starts (a resync). Only
// when no valid batch follows does the damage reach the segment's end.
//
// Holes are found by open-time scans and by reads (ReadRecords decodes
// and CRC-checks every batch it serves); each is reported once, with the
// exact offsets it cost, in the partition's RecoveryReport.Damaged and the
// log's Stats, and logged. Offset lookups and raw reads (the Kafka
// listener's) step over the holes known so far.

// hole is a damaged byte range of a segment and the offsets it held.
type hole struct {
	pos, end    int64 // [pos, end) in the segment file
	first, next int64 // offsets [first, next) lost with it
}

// holes is a segment's damaged ranges, sorted by position.
type holes struct {
	n    atomic.Int32 // len(list): readers of a sound segment take no lock
	mu   sync.Mutex
	list []hole
}

// at returns the hole containing pos.
func (hs *holes) at(pos int64) (hole, bool) {
	if hs.n.Load() == 0 {
		return hole{}, false
	}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	i := sort.Search(len(hs.list), func(i int) bool { return hs.list[i].end > pos })
	if i < len(hs.list) && hs.list[i].pos <= pos {
		return hs.list[i], true
	}
	return hole{}, false
}

// firstFrom returns the position of the first hole that starts at or
// after pos, or -1.
func (hs *holes) firstFrom(pos int64) int64 {
	if hs.n.Load() == 0 {
		return -1
	}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	i := sort.Search(len(hs.list), func(i int) bool { return hs.list[i].pos >= pos })
	if i < len(hs.list) {
		return hs.list[i].pos
	}
	return -1
}

// add records h unless it overlaps a known hole; it reports whether it
// was new.
func (hs *holes) add(h hole) bool {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	i := sort.Search(len(hs.list), func(i int) bool { return hs.list[i].end > h.pos })
	if i < len(hs.list) && hs.list[i].pos < h.end {
		return false
	}
	hs.list = append(hs.list, hole{})
	copy(hs.list[i+1:], hs.list[i:])
	hs.list[i] = h
	hs.n.Store(int32(len(hs.list)))
	return true
}

// resyncLimit bounds how far a resync looks for the next valid batch; a
// longer stretch of garbage is treated as the rest of the segment.
const resyncLimit = 64 << 20

// findValidBatch returns the first position in [from, limit) where a
// whole batch with valid framing and CRC starts whose base offset is at
// least minBase, or -1. It reads the file in large chunks.
func findValidBatch(s *segment, from, limit, minBase int64) (int64, BatchHeader) {
	const chunk = 1 << 20
	limit = min(limit, from+resyncLimit)
	buf := make([]byte, chunk+BatchHeaderSize)
	for start := from; start+BatchHeaderSize <= limit; start += chunk {
		n := min(int64(len(buf)), limit-start)
		b := buf[:n]
		if _, err := s.file.ReadAt(b, start); err != nil && !errors.Is(err, io.EOF) {
			return -1, BatchHeader{}
		}
		for i := int64(0); i+BatchHeaderSize <= n && i < chunk; i++ {
			if b[i+offMagic] != 2 {
				continue
			}
			h, _ := ParseBatchHeader(b[i:])
			if h.checkFraming() != nil || h.BaseOffset < minBase || start+i+h.Size() > limit {
				continue
			}
			if validAt(s, start+i, h) {
				return start + i, h
			}
		}
	}
	return -1, BatchHeader{}
}

// validHeaderAt reports whether a whole batch with valid framing and CRC
// starts at pos, within limit.
func validHeaderAt(s *segment, pos, limit int64) bool {
	var hb [BatchHeaderSize]byte
	h, err := readHeaderAt(s.file, pos, hb[:])
	return err == nil && pos+h.Size() <= limit && validAt(s, pos, h)
}

// validAt reports whether the batch of header h at pos has a valid CRC.
func validAt(s *segment, pos int64, h BatchHeader) bool {
	b := make([]byte, h.Size())
	if _, err := s.file.ReadAt(b, pos); err != nil && !errors.Is(err, io.EOF) {
		return false
	}
	return crc32.Checksum(b[offAttributes:], castagnoli) == h.CRC
}

// holeAt works out the damaged range that starts at pos, where a read or
// scan found cause, within the first limit bytes. expect is the first
// offset the range may hold (the offset after the last good batch, or
// what the reader asked for). ok is false when no valid batch follows:
// the damage runs to limit.
func holeAt(s *segment, pos, limit, expect int64) (h hole, ok bool) {
	h = hole{pos: pos, end: limit, first: expect, next: s.next.Load()}
	var hb [BatchHeaderSize]byte
	if bh, err := readHeaderAt(s.file, pos, hb[:]); err == nil && pos+bh.Size() <= limit {
		h.end = pos + bh.Size() // the framing holds: the next batch starts there
		found := false
		if h.end+BatchHeaderSize <= limit {
			if nh, err := readHeaderAt(s.file, h.end, hb[:]); err == nil && nh.BaseOffset >= expect {
				h.next, found = nh.BaseOffset, true
			}
		} else if h.end == limit { // the last batch readers may see
			h.next, found = min(max(bh.NextOffset(), expect), s.next.Load()), true
		}
		if found {
			if bh.BaseOffset > expect && bh.BaseOffset < h.next {
				h.first = bh.BaseOffset // a compacted segment's gap before it was no damage
			}
			return h, true
		}
	}
	q, nh := findValidBatch(s, pos+1, limit, expect)
	if q < 0 {
		return h, false
	}
	h.end, h.next = q, nh.BaseOffset
	return h, true
}

// damaged records the damage found at pos of seg (cause) as a hole and
// reports it once; it returns the hole, and false when the damage runs to
// the segment's readable end (then the segment's readable bytes end at
// pos, as markDamaged does).
func (p *Partition) damaged(seg *segment, pos, expect int64, cause error) (hole, bool) {
	limit := seg.readable.Load()
	// The damage starts at the offset after the last good batch before it,
	// whatever offset the reader asked for.
	if pos == 0 {
		expect = seg.base
	} else if last, _, err := lastBatchBefore(seg, pos); err == nil && last.Size() > 0 {
		expect = last.NextOffset()
	}
	h, ok := holeAt(seg, pos, limit, expect)
	if !ok {
		if seg.sealed.Load() {
			p.markDamaged(seg, pos, cause)
			return h, false
		}
		// The active segment grows past limit: its damage up to there is
		// a hole like any other.
		h.next = max(p.hwm.Load(), expect)
	}
	if seg.holes.add(h) {
		p.reportHole(seg, h, cause)
	}
	return h, true
}

// installHoles records the holes a scan of seg found.
func (p *Partition) installHoles(seg *segment, res scanResult) {
	for i, h := range res.holes {
		if seg.holes.add(h) {
			p.reportHole(seg, h, res.causes[i])
		}
	}
}

// reportHole records a hole in the partition's report, the log's counters
// and the log.
func (p *Partition) reportHole(seg *segment, h hole, cause error) {
	p.recordDamage(RepairDamage, Damage{Segment: seg.base, Position: h.pos, LostBytes: h.end - h.pos,
		FirstOffset: h.first, NextOffset: h.next, Reason: cause.Error()}, "damaged batch passed over")
}

// recordDamage reports d once: in the partition's report, the log's
// counters and as a repair (one log line).
func (p *Partition) recordDamage(kind string, d Damage, what string) {
	p.log.stats.damaged.Add(1)
	p.log.stats.damagedOffsets.Add(max(d.NextOffset-d.FirstOffset, 0))
	p.reportMu.Lock()
	p.report.Damaged = append(p.report.Damaged, d)
	p.reportMu.Unlock()
	p.log.noteRepair(slog.LevelError, p.repair(kind, "%s: offsets %s unreadable (segment %d, %d bytes at %d): %s",
		what, offsetRange(d.FirstOffset, d.NextOffset), d.Segment, d.LostBytes, d.Position, d.Reason))
}

func offsetRange(first, next int64) string {
	if next <= first {
		return "none"
	}
	return fmt.Sprintf("%d..%d", first, next-1)
}

// DamagedBetween returns the damage found so far that lost offsets in
// [from, to): what a reader that moved from from to to passed over.
func (p *Partition) DamagedBetween(from, to int64) []Damage {
	p.reportMu.Lock()
	defer p.reportMu.Unlock()
	var out []Damage
	for _, d := range p.report.Damaged {
		if d.FirstOffset < to && d.NextOffset > from && d.NextOffset > d.FirstOffset {
			out = append(out, d)
		}
	}
	return out
}
