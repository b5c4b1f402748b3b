package i2c

import (
	"context"
	"fmt"
	"strings"

	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/bmxx80"

	"github.com/ferry-iot/ferry/devices/adapter"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// openBMx280 sets up a Bosch BME280 or BMP280 through periph's bmxx80:
// it reads the chip id (0xD0) and the calibration, then sets 4×
// oversampling and sleep mode; each read starts a forced conversion.
func openBMx280(want string) func(context.Context, *Bus, uint16, adapter.SensorConfig) (driver, error) {
	return func(_ context.Context, b *Bus, addr uint16, _ adapter.SensorConfig) (driver, error) {
		dev, err := bmxx80.NewI2C(b.bus, addr, &bmxx80.DefaultOpts)
		if err != nil {
			return nil, err
		}
		if err := CheckBMx280(dev, want); err != nil {
			return nil, err
		}
		return bmx280{dev}, nil
	}
}

type bmx280 struct{ dev *bmxx80.Dev }

func (d bmx280) read(context.Context) ([]tb.KV, error) { return SenseBMx280(d.dev) }

// CheckBMx280 reports an error of kind adapter.KindDevice when the chip
// periph found is not the one configured (a BMP280 where a bme280 was
// configured has no humidity sensor).
func CheckBMx280(dev *bmxx80.Dev, driver string) error {
	chip, _, _ := strings.Cut(dev.String(), "{")
	if !strings.EqualFold(chip, driver) {
		return adapter.Errorf(adapter.KindDevice, fmt.Errorf("the chip is a %s, not a %s: set driver: %s", chip, driver, strings.ToLower(chip)))
	}
	return nil
}

// SenseBMx280 reads a BME280 or BMP280 once: temperature, pressure and,
// on a BME280, humidity (periph leaves humidity zero on a BMP280).
func SenseBMx280(dev *bmxx80.Dev) ([]tb.KV, error) {
	var e physic.Env
	if err := dev.Sense(&e); err != nil {
		return nil, err
	}
	kvs := []tb.KV{adapter.Double(KeyTemperature, Celsius(e.Temperature))}
	if strings.HasPrefix(dev.String(), "BME") {
		kvs = append(kvs, adapter.Double(KeyHumidity, Percent(e.Humidity)))
	}
	return append(kvs, adapter.Double(KeyPressure, HectoPascal(e.Pressure))), nil
}

// Unit conversions from periph's integer units. Each divides an integer
// by a power of ten, so the double is the nearest one to the decimal and
// prints as such (23.72, not 23.720000000000002).

// Celsius is t in °C.
func Celsius(t physic.Temperature) float64 {
	return float64(t-physic.ZeroCelsius) / float64(physic.Celsius)
}

// Percent is h in %RH.
func Percent(h physic.RelativeHumidity) float64 { return float64(h) / float64(physic.PercentRH) }

// HectoPascal is p in hPa.
func HectoPascal(p physic.Pressure) float64 { return float64(p) / float64(100*physic.Pascal) }
