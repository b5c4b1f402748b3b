package adapter

import (
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/ferry-iot/ferry/configs"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// SensorConfig is a sensor device's part of its source section, for the
// sensor buses (packages i2c, spi, onewire, gpio and iio next to this
// one). It is squashed into the source section beside the Modbus unit's
// settings, so no key here may repeat one of those (bus, poll, report,
// unit, timeseries, attributes, rpc, attribute_updates,
// max_registers_per_request, max_read_gap, byte_order, timeout).
//
// Each bus package's ValidateDevice names the settings a driver reads
// and reports any other one that is set as having no effect.
type SensorConfig struct {
	// Driver names the chip or the kind of device: bme280, bmp280,
	// ads1015, ads1115, ina219, sht4x, scd4x, bh1750, mcp9808 (I²C);
	// bme280, bmp280 (SPI); ds18b20 (1-Wire); input, counter, output
	// (GPIO); iio (kernel IIO).
	Driver string `mapstructure:"driver"`
	// Address is the I²C address (0: the driver's default).
	Address uint16 `mapstructure:"address"`
	// ID is the 1-Wire id as the kernel writes it ("28-0000057e4c1b"),
	// or the IIO device ("iio:device0", or the content of its name file
	// such as "bme280").
	ID string `mapstructure:"id"`
	// Pin is the GPIO line: its name on the chip ("GPIO17") or its
	// offset ("17").
	Pin string `mapstructure:"pin"`

	// Channel is the ADS1x15 input: "0" to "3" (single-ended, the
	// default "0") or "0-1", "0-3", "1-3", "2-3" (differential).
	Channel string `mapstructure:"channel"`
	// MaxVoltage is the ADS1x15 full-scale voltage in volts: the gain
	// whose range is the smallest that holds it is used (0: 4.096 V).
	MaxVoltage float64 `mapstructure:"max_voltage"`
	// ShuntOhms is the INA219's shunt resistor in ohms (0: 0.1).
	ShuntOhms float64 `mapstructure:"shunt_ohms"`
	// MaxCurrent is the INA219's expected maximum current in amperes,
	// which sets its current resolution (0: 3.2 A).
	MaxCurrent float64 `mapstructure:"max_current"`
	// Resolution is the DS18B20's resolution in bits, 9 to 12 (0: 12;
	// conversions take 94 ms at 9 bits to 750 ms at 12).
	Resolution int `mapstructure:"resolution"`

	// Edge is what a GPIO input or counter reacts to: rising, falling or
	// both (input default: both; counter default: rising).
	Edge string `mapstructure:"edge"`
	// Pull is a GPIO input's bias: up, down, none (floating), or ""
	// (leave it as it is).
	Pull string `mapstructure:"pull"`
	// Debounce is how long a GPIO level must hold before an input
	// reports it, and the shortest time between two counted pulses.
	Debounce time.Duration `mapstructure:"debounce"`
	// ActiveLow inverts a GPIO line: low reads as true (a contact to
	// ground with a pull-up), and true drives an output low.
	ActiveLow bool `mapstructure:"active_low"`
	// Initial is the level an output is driven to when it is set up:
	// "true", "false", or "" (left as it is until the first set).
	Initial string `mapstructure:"initial"`
	// Scale turns a counter's pulses into a quantity (litres per pulse,
	// kWh per pulse): value = count × scale.
	Scale float64 `mapstructure:"scale"`

	// Channels limits an IIO device to these channels ("temp",
	// "humidityrelative", "voltage0"...; empty: all of them).
	Channels []string `mapstructure:"channels"`
	// Key is the telemetry key of a single-value device: a GPIO input or
	// output ("level"), a counter's scaled value ("value"), an ADC's
	// voltage ("voltage").
	Key string `mapstructure:"key"`
	// Keys renames telemetry keys: {temperature: t_room} sends the
	// driver's temperature as t_room.
	Keys map[string]string `mapstructure:"keys"`
}

// KeyOr is c.Key, or def when Key is unset.
func (c SensorConfig) KeyOr(def string) string {
	if c.Key != "" {
		return c.Key
	}
	return def
}

// Rename applies c.Keys to kvs in place and returns it.
func (c SensorConfig) Rename(kvs []tb.KV) []tb.KV {
	if len(c.Keys) == 0 {
		return kvs
	}
	for i := range kvs {
		if to, ok := c.Keys[kvs[i].Key]; ok {
			kvs[i].Key = to
		}
	}
	return kvs
}

// CheckSensor records the problems common to every sensor driver: a
// setting the driver does not read (used lists the keys it reads;
// driver is always read), and a keys entry renaming a key that is not
// among known (nil: the driver's keys are only known at run time) or to
// an empty name.
func (c SensorConfig) CheckSensor(p *configs.Problems, known []string, used ...string) {
	v := reflect.ValueOf(c)
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("mapstructure"), ",")
		if key == "driver" || v.Field(i).IsZero() || slices.Contains(used, key) {
			continue
		}
		p.Add(key, "has no effect with driver %s", c.Driver)
	}
	for from, to := range c.Keys {
		switch {
		case to == "":
			p.Add("keys."+from, "must not be empty")
		case known != nil && !slices.Contains(known, from):
			p.Add("keys."+from, "driver %s sends no key %s (it sends %s)", c.Driver, from, strings.Join(known, ", "))
		}
	}
}

// Double is a telemetry value of kind double.
func Double(key string, v float64) tb.KV {
	return tb.KV{Key: key, Value: tb.Value{Kind: tb.KindDouble, Double: v}}
}
