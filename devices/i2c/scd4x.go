package i2c

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ferry-iot/ferry/devices/adapter"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// Sensirion SCD40/41 CO₂ sensor, in periodic measurement mode (a sample
// every 5 s). periph's scd4x driver waits for a sample inside Sense for
// up to 6 s with no way out, which would hold the bus; this one asks
// whether a sample is ready and answers at once.
var (
	scd4xStart   = []byte{0x21, 0xb1} // start_periodic_measurement
	scd4xStop    = []byte{0x3f, 0x86} // stop_periodic_measurement: 500 ms before the next command
	scd4xSerial  = []byte{0x36, 0x82} // get_serial_number (idle mode only)
	scd4xReady   = []byte{0xe4, 0xb8} // get_data_ready_status: ready when the low 11 bits are not 0
	scd4xMeasure = []byte{0xec, 0x05} // read_measurement: CO₂ ppm, temperature, humidity
)

const (
	scd4xStopWait   = 500 * time.Millisecond
	scd4xCmdWait    = time.Millisecond
	scd4xPeriod     = 5 * time.Second
	scd4xStaleAfter = 6 * scd4xPeriod
)

// errSCD4xStale: periodic measurement stopped (the sensor was reset or
// lost power); the next poll sets it up again.
var errSCD4xStale = errors.New("no new measurement")

// openSCD4x stops a periodic measurement that may still run from before
// (the only way to get the chip into idle mode), reads the serial number
// (which checks the chip answers), then starts periodic measurement.
func openSCD4x(ctx context.Context, b *Bus, addr uint16, _ adapter.SensorConfig) (driver, error) {
	_, _ = b.command(ctx, addr, scd4xStop, 0, 0) // an idle chip may not acknowledge it
	if err := b.sleep(ctx, scd4xStopWait); err != nil {
		return nil, err
	}
	w, err := b.command(ctx, addr, scd4xSerial, scd4xCmdWait, 3)
	if err != nil {
		return nil, err
	}
	if _, err := b.command(ctx, addr, scd4xStart, 0, 0); err != nil {
		return nil, err
	}
	return &scd4x{bus: b, addr: addr, serial: int64(w[0])<<32 | int64(w[1])<<16 | int64(w[2]), last: b.now()}, nil
}

type scd4x struct {
	bus    *Bus
	addr   uint16
	serial int64
	last   time.Time // when a sample was last read (or measurement started)
}

func (d *scd4x) attributes() []tb.KV {
	return []tb.KV{{Key: "serial_number", Value: tb.Value{Kind: tb.KindLong, Long: d.serial}}}
}

// read returns the sample taken since the last read, or nothing when
// there is none yet (a poll shorter than 5 s, or the first 5 s after
// set-up): nothing is sent twice. No sample for 30 s is an error.
func (d *scd4x) read(ctx context.Context) ([]tb.KV, error) {
	w, err := d.bus.command(ctx, d.addr, scd4xReady, scd4xCmdWait, 1)
	if err != nil {
		return nil, err
	}
	if w[0]&0x07ff == 0 {
		if since := d.bus.now().Sub(d.last); since > scd4xStaleAfter {
			return nil, adapter.Errorf(adapter.KindDevice, fmt.Errorf("%w for %v", errSCD4xStale, since.Round(time.Second)))
		}
		return nil, nil
	}
	w, err = d.bus.command(ctx, d.addr, scd4xMeasure, scd4xCmdWait, 3)
	if err != nil {
		return nil, err
	}
	d.last = d.bus.now()
	return []tb.KV{
		adapter.Double(KeyCO2, float64(w[0])),
		adapter.Double(KeyTemperature, round2(-45+175*float64(w[1])/65535)),
		adapter.Double(KeyHumidity, round2(100*float64(w[2])/65535)),
	}, nil
}

// close stops periodic measurement, so the chip is idle for the next
// start.
func (d *scd4x) close() error {
	_, err := d.bus.command(context.Background(), d.addr, scd4xStop, 0, 0)
	return err
}
