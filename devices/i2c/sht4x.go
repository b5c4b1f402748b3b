package i2c

import (
	"context"
	"time"

	"github.com/ferry-iot/ferry/devices/adapter"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// Sensirion SHT40/41/43/45 (periph has no driver for them). Datasheet
// commands: 0x89 reads the serial number, 0xFD measures temperature and
// humidity with high repeatability (8.3 ms at most), each answer being
// 16-bit words with a CRC.
var (
	sht4xSerial  = []byte{0x89}
	sht4xMeasure = []byte{0xfd}
)

const sht4xWait = 10 * time.Millisecond

// openSHT4x reads the serial number, which also checks the chip answers;
// it is sent once as the client attribute serial_number.
func openSHT4x(ctx context.Context, b *Bus, addr uint16, _ adapter.SensorConfig) (driver, error) {
	w, err := b.command(ctx, addr, sht4xSerial, time.Millisecond, 2)
	if err != nil {
		return nil, err
	}
	return &sht4x{bus: b, addr: addr, serial: int64(w[0])<<16 | int64(w[1])}, nil
}

type sht4x struct {
	bus    *Bus
	addr   uint16
	serial int64
}

func (d *sht4x) attributes() []tb.KV {
	return []tb.KV{{Key: "serial_number", Value: tb.Value{Kind: tb.KindLong, Long: d.serial}}}
}

// read measures once: T = -45 + 175·St/65535 °C and RH = -6 +
// 125·Srh/65535 %, cropped to 0–100 as the datasheet says.
func (d *sht4x) read(ctx context.Context) ([]tb.KV, error) {
	w, err := d.bus.command(ctx, d.addr, sht4xMeasure, sht4xWait, 2)
	if err != nil {
		return nil, err
	}
	t := -45 + 175*float64(w[0])/65535
	rh := min(max(-6+125*float64(w[1])/65535, 0), 100)
	return []tb.KV{adapter.Double(KeyTemperature, round2(t)), adapter.Double(KeyHumidity, round2(rh))}, nil
}
