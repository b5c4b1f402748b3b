package modbussim

import (
	"slices"
	"testing"
)

func TestWordOrder(t *testing.T) {
	tests := []struct {
		order  WordOrder
		name   string
		want32 []uint16 // 0x0A0B0C0D
		want64 []uint16 // 0x0102030405060708
	}{
		{OrderABCD, "ABCD", []uint16{0x0A0B, 0x0C0D}, []uint16{0x0102, 0x0304, 0x0506, 0x0708}},
		{OrderDCBA, "DCBA", []uint16{0x0D0C, 0x0B0A}, []uint16{0x0807, 0x0605, 0x0403, 0x0201}},
		{OrderBADC, "BADC", []uint16{0x0B0A, 0x0D0C}, []uint16{0x0201, 0x0403, 0x0605, 0x0807}},
		{OrderCDAB, "CDAB", []uint16{0x0C0D, 0x0A0B}, []uint16{0x0708, 0x0506, 0x0304, 0x0102}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.order.String() != tc.name {
				t.Errorf("String() = %s", tc.order)
			}
			if o, err := ParseWordOrder(tc.name); err != nil || o != tc.order {
				t.Errorf("ParseWordOrder(%s) = %v, %v", tc.name, o, err)
			}
			r32, r64 := make([]uint16, 2), make([]uint16, 4)
			tc.order.put(r32, 0x0A0B0C0D)
			tc.order.put(r64, 0x0102030405060708)
			if !slices.Equal(r32, tc.want32) || !slices.Equal(r64, tc.want64) {
				t.Errorf("put: %04x %04x, want %04x %04x", r32, r64, tc.want32, tc.want64)
			}
			if tc.order.get(r32) != 0x0A0B0C0D || tc.order.get(r64) != 0x0102030405060708 {
				t.Errorf("get: %x %x", tc.order.get(r32), tc.order.get(r64))
			}
		})
	}
	if _, err := ParseWordOrder("ACBD"); err == nil {
		t.Error("ParseWordOrder accepted ACBD")
	}
}
