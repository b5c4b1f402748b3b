package i2c

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/ferry-iot/ferry/configs"
	"github.com/ferry-iot/ferry/devices/adapter"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// driver reads a chip that is set up.
type driver interface {
	read(ctx context.Context) ([]tb.KV, error)
}

// attributer is a driver that has client attributes to send once it is
// set up (a serial number).
type attributer interface {
	attributes() []tb.KV
}

// model is one driver name: its addresses, the settings it reads, the
// keys it sends and how it is set up.
type model struct {
	addrs []uint16 // the ones the chip can be strapped to; the first is the default
	used  []string // settings read besides driver and address
	keys  []string // telemetry keys sent (before keys renames them)
	check func(p *configs.Problems, c adapter.SensorConfig)
	open  func(ctx context.Context, b *Bus, addr uint16, c adapter.SensorConfig) (driver, error)
}

// Telemetry keys, with their units.
const (
	KeyTemperature  = "temperature"   // °C
	KeyHumidity     = "humidity"      // %RH
	KeyPressure     = "pressure"      // hPa
	KeyIlluminance  = "illuminance"   // lx
	KeyCO2          = "co2"           // ppm
	KeyVoltage      = "voltage"       // V
	KeyCurrent      = "current"       // A
	KeyPower        = "power"         // W
	KeyShuntVoltage = "shunt_voltage" // V
)

var models = map[string]model{
	"bme280": {addrs: []uint16{0x76, 0x77}, keys: []string{KeyTemperature, KeyHumidity, KeyPressure}, open: openBMx280("bme280")},
	"bmp280": {addrs: []uint16{0x76, 0x77}, keys: []string{KeyTemperature, KeyPressure}, open: openBMx280("bmp280")},
	"ads1015": {addrs: []uint16{0x48, 0x49, 0x4a, 0x4b}, used: []string{"channel", "max_voltage", "key"},
		keys: []string{KeyVoltage}, check: checkADS1x15, open: openADS1x15("ads1015")},
	"ads1115": {addrs: []uint16{0x48, 0x49, 0x4a, 0x4b}, used: []string{"channel", "max_voltage", "key"},
		keys: []string{KeyVoltage}, check: checkADS1x15, open: openADS1x15("ads1115")},
	"ina219": {addrs: addrRange(0x40, 0x4f), used: []string{"shunt_ohms", "max_current"},
		keys: []string{KeyVoltage, KeyCurrent, KeyPower, KeyShuntVoltage}, check: checkINA219, open: openINA219},
	"sht4x":   {addrs: []uint16{0x44, 0x45, 0x46}, keys: []string{KeyTemperature, KeyHumidity}, open: openSHT4x},
	"scd4x":   {addrs: []uint16{0x62}, keys: []string{KeyCO2, KeyTemperature, KeyHumidity}, open: openSCD4x},
	"bh1750":  {addrs: []uint16{0x23, 0x5c}, keys: []string{KeyIlluminance}, open: openBH1750},
	"mcp9808": {addrs: addrRange(0x18, 0x1f), keys: []string{KeyTemperature}, open: openMCP9808},
}

func addrRange(from, to uint16) []uint16 {
	var out []uint16
	for a := from; a <= to; a++ {
		out = append(out, a)
	}
	return out
}

// Drivers lists the driver names, sorted.
func Drivers() []string {
	var out []string
	for name := range models {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// ValidateDevice checks a device's sensor settings, naming keys relative
// to its source section ("driver", "address", ...).
func ValidateDevice(c adapter.SensorConfig) error {
	var p configs.Problems
	m, ok := models[c.Driver]
	if !ok {
		if c.Driver == "" {
			p.Add("driver", "is required (%s)", strings.Join(Drivers(), ", "))
		} else {
			p.Add("driver", "%q is not an I²C driver (%s)", c.Driver, strings.Join(Drivers(), ", "))
		}
		return p.Err()
	}
	if c.Address != 0 && !slices.Contains(m.addrs, c.Address) {
		p.Add("address", "%#02x is not an address of a %s (%s)", c.Address, c.Driver, hexList(m.addrs))
	}
	c.CheckSensor(&p, m.keys, append([]string{"address", "keys"}, m.used...)...)
	if m.check != nil {
		m.check(&p, c)
	}
	return p.Err()
}

func hexList(addrs []uint16) string {
	var s []string
	for _, a := range addrs {
		s = append(s, fmt.Sprintf("%#02x", a))
	}
	return strings.Join(s, ", ")
}
