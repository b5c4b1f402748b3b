package i2c

import (
	"context"
	"math"

	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/ads1x15"

	"github.com/ferry-iot/ferry/configs"
	"github.com/ferry-iot/ferry/devices/adapter"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// adsChannels maps the channel setting to the ADS1x15 input multiplexer.
var adsChannels = map[string]ads1x15.Channel{
	"": ads1x15.Channel0, "0": ads1x15.Channel0, "1": ads1x15.Channel1, "2": ads1x15.Channel2, "3": ads1x15.Channel3,
	"0-1": ads1x15.Channel0Minus1, "0-3": ads1x15.Channel0Minus3, "1-3": ads1x15.Channel1Minus3, "2-3": ads1x15.Channel2Minus3,
}

// adsMaxVoltage is the widest full-scale range of the programmable gain
// amplifier (gain 2/3); the default is the 4.096 V range (gain 1).
const (
	adsMaxVoltage     = 6.144
	adsDefaultVoltage = 4.096
	// adsRate is the conversion rate asked for: 128 samples/s exists on
	// both chips, so a single-shot read waits 1/128 s.
	adsRate = 128 * physic.Hertz
)

func checkADS1x15(p *configs.Problems, c adapter.SensorConfig) {
	if _, ok := adsChannels[c.Channel]; !ok {
		p.Add("channel", "%q is not 0, 1, 2, 3 (single-ended) or 0-1, 0-3, 1-3, 2-3 (differential)", c.Channel)
	}
	if c.MaxVoltage < 0 || c.MaxVoltage > adsMaxVoltage || math.IsNaN(c.MaxVoltage) {
		p.Add("max_voltage", "%v V is outside the ADC's ranges (up to %v V)", c.MaxVoltage, adsMaxVoltage)
	}
}

// openADS1x15 sets up a TI ADS1015 (12 bits) or ADS1115 (16 bits)
// through periph's ads1x15: single-shot conversions of one channel, with
// the gain whose range is the smallest that holds max_voltage.
func openADS1x15(chip string) func(context.Context, *Bus, uint16, adapter.SensorConfig) (driver, error) {
	return func(_ context.Context, b *Bus, addr uint16, c adapter.SensorConfig) (driver, error) {
		opts := &ads1x15.Opts{I2cAddress: addr}
		var dev *ads1x15.Dev
		var err error
		if chip == "ads1015" {
			dev, err = ads1x15.NewADS1015(b.bus, opts)
		} else {
			dev, err = ads1x15.NewADS1115(b.bus, opts)
		}
		if err != nil {
			return nil, err
		}
		maxV := c.MaxVoltage
		if maxV == 0 {
			maxV = adsDefaultVoltage
		}
		pin, err := dev.PinForChannel(adsChannels[c.Channel], physic.ElectricPotential(math.Round(maxV*float64(physic.Volt))),
			adsRate, ads1x15.BestQuality)
		if err != nil {
			return nil, err
		}
		return ads{pin: pin, key: c.KeyOr(KeyVoltage)}, nil
	}
}

type ads struct {
	pin ads1x15.PinADC
	key string
}

func (d ads) read(context.Context) ([]tb.KV, error) {
	s, err := d.pin.Read()
	if err != nil {
		return nil, err
	}
	return []tb.KV{adapter.Double(d.key, float64(s.V)/float64(physic.Volt))}, nil
}
