package modbus

import "sort"

// read is one merged request: count registers (or bits) of reg from
// addr, and the points it carries.
type read struct {
	reg    Register
	addr   uint16
	count  uint16
	points []*point
}

// planReads merges the points' reads into as few requests as the limits
// allow: per table, sorted by address, a request grows while its span
// stays within maxRegs (registers; bit tables within 2000 bits) and the
// gap to the next point within maxGap (-1: contiguous or overlapping
// only; 0: any). Greedy from the lowest address is optimal here: every
// request starts at the first point not yet covered and takes as many as
// fit.
func planReads(points []*point, maxRegs, maxGap int) []read {
	if maxRegs <= 0 {
		maxRegs = maxWords
	}
	var out []read
	for reg := Coil; reg <= Input; reg++ {
		var pts []*point
		for _, p := range points {
			if p.reg == reg {
				pts = append(pts, p)
			}
		}
		sort.SliceStable(pts, func(i, j int) bool { return pts[i].addr < pts[j].addr })
		limit := maxRegs
		if reg.bits() {
			limit = maxBits
		}
		var cur *read
		for _, p := range pts {
			start, end := int(p.addr), int(p.addr)+p.n
			if cur != nil {
				curEnd := int(cur.addr) + int(cur.count)
				gap := start - curEnd
				fits := max(end, curEnd)-int(cur.addr) <= limit
				gapOK := maxGap == 0 || gap <= 0 || (maxGap > 0 && gap <= maxGap)
				if fits && gapOK {
					cur.count = uint16(max(end, curEnd) - int(cur.addr))
					cur.points = append(cur.points, p)
					continue
				}
			}
			out = append(out, read{reg: reg, addr: p.addr, count: uint16(p.n), points: []*point{p}})
			cur = &out[len(out)-1]
		}
	}
	return out
}
