package i2c

import (
	"context"
	"math"
	"time"

	"github.com/ferry-iot/ferry/devices/adapter"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// ROHM BH1750 ambient light sensor. periph's bh1750 driver converts to
// whole lux, so this one speaks the datasheet's protocol itself: power on
// (0x01), then a one-time high-resolution measurement (0x20, 180 ms at
// most, after which the chip powers down) per read; the answer is two
// bytes, big-endian, lux = count / 1.2.
const (
	bh1750PowerOn = 0x01
	bh1750OneTime = 0x20
	bh1750Wait    = 180 * time.Millisecond
)

func openBH1750(_ context.Context, b *Bus, addr uint16, _ adapter.SensorConfig) (driver, error) {
	if err := b.bus.Tx(addr, []byte{bh1750PowerOn}, nil); err != nil {
		return nil, err
	}
	return &bh1750{bus: b, addr: addr}, nil
}

type bh1750 struct {
	bus  *Bus
	addr uint16
}

func (d *bh1750) read(ctx context.Context) ([]tb.KV, error) {
	if err := d.bus.bus.Tx(d.addr, []byte{bh1750OneTime}, nil); err != nil {
		return nil, err
	}
	if err := d.bus.sleep(ctx, bh1750Wait); err != nil {
		return nil, err
	}
	var r [2]byte
	if err := d.bus.bus.Tx(d.addr, nil, r[:]); err != nil {
		return nil, err
	}
	lux := float64(uint16(r[0])<<8|uint16(r[1])) / 1.2
	return []tb.KV{adapter.Double(KeyIlluminance, math.Round(lux*100)/100)}, nil
}
