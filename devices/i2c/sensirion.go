package i2c

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/ferry-iot/ferry/devices/adapter"
)

// Sensirion chips (SHT4x, SCD4x) take a command, need some time to carry
// it out, then answer 16-bit words, each followed by a CRC-8.

// crc8 is Sensirion's CRC-8: polynomial 0x31, initial value 0xFF, no
// reflection, no final XOR (CRC of 0xBE 0xEF is 0x92).
func crc8(b []byte) byte {
	crc := byte(0xff)
	for _, c := range b {
		crc ^= c
		for range 8 {
			if crc&0x80 != 0 {
				crc = crc<<1 ^ 0x31
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// command sends the command cmd to addr (8 bits on an SHT4x, 16 on an
// SCD4x), waits wait, and reads n words (n = 0: none), checking each
// word's CRC.
func (b *Bus) command(ctx context.Context, addr uint16, cmd []byte, wait time.Duration, n int) ([]uint16, error) {
	if err := b.bus.Tx(addr, cmd, nil); err != nil {
		return nil, fmt.Errorf("command %#x: %w", cmd, err)
	}
	if n == 0 {
		return nil, nil
	}
	if err := b.sleep(ctx, wait); err != nil {
		return nil, err
	}
	r := make([]byte, 3*n)
	if err := b.bus.Tx(addr, nil, r); err != nil {
		return nil, fmt.Errorf("command %#x: read: %w", cmd, err)
	}
	words := make([]uint16, n)
	for i := range words {
		w := r[3*i : 3*i+3]
		if crc8(w[:2]) != w[2] {
			return nil, adapter.Errorf(adapter.KindProtocol,
				fmt.Errorf("command %#x: word %d: crc %#02x, computed %#02x", cmd, i, w[2], crc8(w[:2])))
		}
		words[i] = uint16(w[0])<<8 | uint16(w[1])
	}
	return words, nil
}

// round2 rounds to two decimals, the resolution the Sensirion datasheets
// give (0.01 °C, 0.01 %RH).
func round2(v float64) float64 { return math.Round(v*100) / 100 }
