package i2c

import (
	"context"
	"math"

	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/ina219"

	"github.com/ferry-iot/ferry/configs"
	"github.com/ferry-iot/ferry/devices/adapter"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// INA219 defaults: periph's (a 0.1 Ω shunt, 3.2 A full scale).
const (
	inaDefaultShunt   = 0.1
	inaDefaultCurrent = 3.2
)

func checkINA219(p *configs.Problems, c adapter.SensorConfig) {
	if c.ShuntOhms < 0 || math.IsNaN(c.ShuntOhms) {
		p.Add("shunt_ohms", "%v must be positive", c.ShuntOhms)
	}
	if c.MaxCurrent < 0 || math.IsNaN(c.MaxCurrent) {
		p.Add("max_current", "%v must be positive", c.MaxCurrent)
	}
}

// openINA219 sets up a TI INA219 through periph's ina219: it writes the
// calibration register (0x05) from the shunt and the maximum current,
// then the configuration (0x00 = 0x1FFF: 32 V range, ±320 mV shunt
// range, 12-bit samples, continuous).
func openINA219(_ context.Context, b *Bus, addr uint16, c adapter.SensorConfig) (driver, error) {
	shunt, maxI := c.ShuntOhms, c.MaxCurrent
	if shunt == 0 {
		shunt = inaDefaultShunt
	}
	if maxI == 0 {
		maxI = inaDefaultCurrent
	}
	dev, err := ina219.New(b.bus, &ina219.Opts{
		Address:       int(addr),
		SenseResistor: physic.ElectricResistance(math.Round(shunt * float64(physic.Ohm))),
		MaxCurrent:    physic.ElectricCurrent(math.Round(maxI * float64(physic.Ampere))),
	})
	if err != nil {
		return nil, err
	}
	return ina{dev}, nil
}

type ina struct{ dev *ina219.Dev }

func (d ina) read(context.Context) ([]tb.KV, error) {
	pm, err := d.dev.Sense()
	if err != nil {
		return nil, err
	}
	return []tb.KV{
		adapter.Double(KeyVoltage, float64(pm.Voltage)/float64(physic.Volt)),
		adapter.Double(KeyCurrent, float64(pm.Current)/float64(physic.Ampere)),
		adapter.Double(KeyPower, float64(pm.Power)/float64(physic.Watt)),
		adapter.Double(KeyShuntVoltage, float64(pm.Shunt)/float64(physic.Volt)),
	}, nil
}
