package modbussim

import (
	"fmt"
	"slices"
	"strings"
)

// WordOrder is how a value wider than 16 bits is laid out over
// consecutive registers. The letters name the bytes of a 32-bit value,
// A the most significant, in the order they appear on the wire; a 64-bit
// value ABCDEFGH follows the same pattern (ABCD → ABCDEFGH, DCBA →
// HGFEDCBA, BADC → BADCFEHG, CDAB → GHEFCDAB).
type WordOrder uint8

// The word orders. The zero value is ABCD.
const (
	// OrderABCD is big-endian, most significant word first (the Modbus
	// convention; simonvetter: BIG_ENDIAN, HIGH_WORD_FIRST).
	OrderABCD WordOrder = iota
	// OrderDCBA is little-endian throughout (LITTLE_ENDIAN, LOW_WORD_FIRST).
	OrderDCBA
	// OrderBADC swaps the bytes inside each register (LITTLE_ENDIAN,
	// HIGH_WORD_FIRST).
	OrderBADC
	// OrderCDAB is least significant word first, bytes big-endian
	// (BIG_ENDIAN, LOW_WORD_FIRST): many meters' "word swap".
	OrderCDAB
)

var wordOrderNames = map[WordOrder]string{
	OrderABCD: "ABCD", OrderDCBA: "DCBA", OrderBADC: "BADC", OrderCDAB: "CDAB",
}

func (o WordOrder) String() string {
	if n, ok := wordOrderNames[o]; ok {
		return n
	}
	return fmt.Sprintf("WordOrder(%d)", uint8(o))
}

// ParseWordOrder parses "ABCD", "DCBA", "BADC" or "CDAB" (any case).
func ParseWordOrder(s string) (WordOrder, error) {
	for o, n := range wordOrderNames {
		if strings.EqualFold(s, n) {
			return o, nil
		}
	}
	return 0, fmt.Errorf("modbussim: unknown word order %q (want ABCD, DCBA, BADC or CDAB)", s)
}

// arrange reorders big-endian bytes b in place into o's wire order. Each
// order is its own inverse, so arrange also turns wire order back into
// big-endian.
func (o WordOrder) arrange(b []byte) {
	switch o {
	case OrderDCBA:
		slices.Reverse(b)
	case OrderBADC:
		for i := 0; i+1 < len(b); i += 2 {
			b[i], b[i+1] = b[i+1], b[i]
		}
	case OrderCDAB:
		for i, j := 0, len(b)-2; i < j; i, j = i+2, j-2 {
			b[i], b[i+1], b[j], b[j+1] = b[j], b[j+1], b[i], b[i+1]
		}
	}
}

// put stores the low 8*n bits of v (n = 2*len(dst) bytes) into dst.
func (o WordOrder) put(dst []uint16, v uint64) {
	b := make([]byte, 2*len(dst))
	for i := range b {
		b[len(b)-1-i] = byte(v >> (8 * i))
	}
	o.arrange(b)
	for i := range dst {
		dst[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
	}
}

// get reads back what put stored.
func (o WordOrder) get(src []uint16) uint64 {
	b := make([]byte, 2*len(src))
	for i, r := range src {
		b[2*i], b[2*i+1] = byte(r>>8), byte(r)
	}
	o.arrange(b)
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}
