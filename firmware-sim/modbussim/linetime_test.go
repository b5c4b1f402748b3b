package modbussim

import (
	"testing"
	"time"
)

func TestLineTime(t *testing.T) {
	tests := []struct {
		name                    string
		baud, bits, req, resp   int
		want, wantChar, wantT35 time.Duration
	}{
		// Read 2 holding registers: 8-byte request, 9-byte response, and
		// two t3.5: 17 + 7 = 24 characters × 11 bits / 9600 bit/s = 27.5 ms.
		{"9600 8E1", 9600, 11, 8, 9, 27500 * time.Microsecond, 1145833 * time.Nanosecond, 4010416 * time.Nanosecond},
		// 24 × 10 bits / 9600 = 25 ms.
		{"9600 8N1", 9600, 10, 8, 9, 25 * time.Millisecond, 1041666 * time.Nanosecond, 3645833 * time.Nanosecond},
		// At 19200 t3.5 is still 3.5 characters: 24 × 11 / 19200 = 13.75 ms.
		{"19200 8E1", 19200, 11, 8, 9, 13750 * time.Microsecond, 572916 * time.Nanosecond, 2005208 * time.Nanosecond},
		// Above 19200 it is 1750 µs: 17 × 11 / 115200 = 1.6232638 ms, + 3.5 ms.
		{"115200 8E1", 115200, 11, 8, 9, 5123263 * time.Nanosecond, 95486 * time.Nanosecond, 1750 * time.Microsecond},
		// Write 123 registers: 255-byte request, 8-byte response at 38400 8N2:
		// 263 × 11 / 38400 = 75.3385416 ms, + 3.5 ms.
		{"38400 FC16 max", 38400, 11, 255, 8, 78838541 * time.Nanosecond, 286458 * time.Nanosecond, 1750 * time.Microsecond},
		{"no baud", 0, 11, 8, 9, 0, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := LineTime(tc.baud, tc.bits, tc.req, tc.resp); got != tc.want {
				t.Errorf("LineTime = %v (%d ns), want %v", got, got, tc.want)
			}
			if got := CharTime(tc.baud, tc.bits); got != tc.wantChar {
				t.Errorf("CharTime = %d ns, want %d", got, tc.wantChar)
			}
			if got := T35(tc.baud, tc.bits); got != tc.wantT35 {
				t.Errorf("T35 = %d ns, want %d", got, tc.wantT35)
			}
		})
	}
	if got := (Line{Parity: "E", StopBits: 1}).BitsPerChar(); got != 11 {
		t.Errorf("8E1: %d bits", got)
	}
	if got := (Line{Parity: "N", StopBits: 1}).BitsPerChar(); got != 10 {
		t.Errorf("8N1: %d bits", got)
	}
	if got := (Line{Parity: "N", StopBits: 2}).BitsPerChar(); got != 11 {
		t.Errorf("8N2: %d bits", got)
	}
}
