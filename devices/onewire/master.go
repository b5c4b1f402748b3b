package onewire

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/ds18b20"

	periphonewire "periph.io/x/conn/v3/onewire"

	"github.com/ferry-iot/ferry/devices/adapter"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// masterProbe is a DS18B20 on a master periph drives (a DS248x). Its
// periph driver is set up at the first poll: ds18b20.New reads the
// scratchpad and writes the resolution (to EEPROM) when it differs.
type masterProbe struct {
	bus  *Bus
	addr periphonewire.Address
	id   string
	res  int
	cfg  adapter.SensorConfig
	dev  *ds18b20.Dev // nil: not set up (yet, or again after a failure)
}

// conversionTime is the DS18B20's maximum conversion time at res bits:
// 93.75 ms at 9 bits, doubling per bit to 750 ms at 12.
func conversionTime(res int) time.Duration {
	return (94 * time.Millisecond) << (res - 9)
}

// Read converts and reads the probe: Match ROM + Convert T (0x44) with
// the strong pull-up, a wait of the conversion time, then Match ROM +
// Read Scratchpad (0xBE), whose CRC periph checks. periph's Sense would
// wait with a sleep nothing can cut short; this one waits for ctx too.
func (p *masterProbe) Read(ctx context.Context) (adapter.Reading, error) {
	kvs, err := p.read(ctx)
	if err != nil {
		p.dev = nil
		p.bus.dropMaster()
		return adapter.Reading{}, fmt.Errorf("onewire: %s: %w", p.id, err)
	}
	return adapter.Reading{Telemetry: p.cfg.Rename(kvs)}, nil
}

func (p *masterProbe) read(ctx context.Context) ([]tb.KV, error) {
	m, err := p.bus.masterBus()
	if err != nil {
		return nil, classify(err)
	}
	if p.dev == nil {
		dev, err := ds18b20.New(m, p.addr, p.res)
		if err != nil {
			return nil, classify(err)
		}
		p.dev = dev
	}
	d := periphonewire.Dev{Bus: m, Addr: p.addr}
	if err := d.TxPower([]byte{0x44}, nil); err != nil {
		return nil, classify(err)
	}
	if err := p.bus.sleep(ctx, conversionTime(p.res)); err != nil {
		return nil, err
	}
	t, err := p.dev.LastTemp()
	if err != nil {
		return nil, classify(err)
	}
	// periph v3.7.4 compares with 85 K instead of 85 °C, so the
	// power-on value gets through: check it here.
	if t == 85*physic.Celsius+physic.ZeroCelsius {
		return nil, adapter.Errorf(adapter.KindDevice, ErrPowerOnValue)
	}
	// periph's Temperature is in nK: an integer divided by 10⁹.
	return []tb.KV{adapter.Double(KeyTemperature, float64(t-physic.ZeroCelsius)/float64(physic.Celsius))}, nil
}

// classify gives a master's or probe's error its kind: periph's 1-Wire
// errors that say no device answered (no presence pulse, a scratchpad of
// all ones) are adapter.KindTimeout, a bad CRC adapter.KindProtocol, the
// rest adapter.KindDevice.
func classify(err error) error {
	var nd periphonewire.NoDevicesError
	var ae *adapter.Error
	switch {
	case errors.As(err, &ae):
		return err
	case errors.As(err, &nd) && nd.NoDevices():
		return adapter.Errorf(adapter.KindTimeout, err)
	}
	switch msg := err.Error(); {
	case strings.Contains(msg, "no device present"), strings.Contains(msg, "did not respond"):
		return adapter.Errorf(adapter.KindTimeout, err)
	case strings.Contains(msg, "incorrect scratchpad CRC"):
		return adapter.Errorf(adapter.KindProtocol, err)
	}
	return adapter.Errorf(adapter.KindDevice, err)
}
