package i2c

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"periph.io/x/conn/v3/i2c/i2ctest"

	"github.com/ferry-iot/ferry/devices/adapter"
)

// The BME280 datasheet's floating-point compensation (section 8.1) of
// bmeData with this calibration gives T = 21.7674 °C, P = 974.1310 hPa,
// RH = 43.1044 %; the chip's integer formulas, which periph uses, give
// 21.77 °C (0.01 °C steps), 97413.08984375 Pa (1/256 Pa steps) and
// 43.1044 %RH. Both are checked: the integer results to the bit, the
// float ones to the integer formulas' resolution.
func TestBME280(t *testing.T) {
	b := newTestBus(t, append(append(bmeSetup(), bmeRead()...), bmeRead()...)...)
	src := b.source(t, adapter.SensorConfig{Driver: "bme280"})
	for range 2 {
		r := mustRead(t, src)
		checkKVs(t, r.Telemetry, exact(KeyTemperature, 21.77), exact(KeyHumidity, 43.1044), exact(KeyPressure, 974.1308984375))
		checkKVs(t, r.Telemetry,
			want{KeyTemperature, 21.7674, 0.01}, want{KeyHumidity, 43.1044, 0.001}, want{KeyPressure, 974.1310, 0.001})
	}
	b.done(t)
}

func TestBMP280(t *testing.T) {
	b := newTestBus(t,
		i2ctest.IO{Addr: 0x77, W: []byte{0xd0}, R: []byte{0x58}},
		i2ctest.IO{Addr: 0x77, W: []byte{0x88}, R: bmeCalib.R},
		// No humidity control register on a BMP280.
		i2ctest.IO{Addr: 0x77, W: []byte{0xf4, 0x6c, 0xf5, 0xa0, 0xf4, 0x6c}},
		i2ctest.IO{Addr: 0x77, W: []byte{0xf4, 0x6d}},
		i2ctest.IO{Addr: 0x77, W: []byte{0xf3}, R: []byte{0}},
		i2ctest.IO{Addr: 0x77, W: []byte{0xf7}, R: bmeData.R[:6]},
	)
	src := b.source(t, adapter.SensorConfig{Driver: "bmp280", Address: 0x77, Keys: map[string]string{"pressure": "p"}})
	r := mustRead(t, src)
	checkKVs(t, r.Telemetry, exact(KeyTemperature, 21.77), exact("p", 974.1308984375))
	b.done(t)
}

func TestBME280ChipMismatch(t *testing.T) {
	b := newTestBus(t,
		i2ctest.IO{Addr: 0x76, W: []byte{0xd0}, R: []byte{0x58}},
		i2ctest.IO{Addr: 0x76, W: []byte{0x88}, R: bmeCalib.R},
		i2ctest.IO{Addr: 0x76, W: []byte{0xf4, 0x6c, 0xf5, 0xa0, 0xf4, 0x6c}},
	)
	src := b.source(t, adapter.SensorConfig{Driver: "bme280"})
	_, err := src.Read(context.Background())
	if err == nil || !strings.Contains(err.Error(), "the chip is a BMP280, not a bme280") || adapter.KindOf(err) != adapter.KindDevice {
		t.Fatalf("got %v", err)
	}
	b.done(t)
}

// ADS1115 config register (0x01): OS=1 (start), MUX, PGA, MODE=1
// (single shot), DR, COMP_QUE=11 (comparator off). Channel 0 at ±4.096 V
// and 128 SPS is 0x8000|0x4000|0x0200|0x0100|0x0080|0x0003 = 0xC383; a
// count of 0x4000 is 16384 × 4.096 / 32768 = 2.048 V.
func TestADS1115(t *testing.T) {
	b := newTestBus(t,
		i2ctest.IO{Addr: 0x48, W: []byte{0x01, 0xc3, 0x83}},
		i2ctest.IO{Addr: 0x48, W: []byte{0x00}, R: []byte{0x40, 0x00}},
	)
	r := mustRead(t, b.source(t, adapter.SensorConfig{Driver: "ads1115", MaxVoltage: 3.3}))
	checkKVs(t, r.Telemetry, exact(KeyVoltage, 2.048))
	b.done(t)
}

// Differential 2-3 (MUX=011) with max_voltage 0.2 takes the ±0.256 V
// range (PGA=101): 0x8000|0x3000|0x0A00|0x0100|0x0080|0x0003 = 0xBB83;
// 0xF000 is -4096 × 0.256 / 32768 = -0.032 V.
func TestADS1115Differential(t *testing.T) {
	b := newTestBus(t,
		i2ctest.IO{Addr: 0x49, W: []byte{0x01, 0xbb, 0x83}},
		i2ctest.IO{Addr: 0x49, W: []byte{0x00}, R: []byte{0xf0, 0x00}},
	)
	r := mustRead(t, b.source(t, adapter.SensorConfig{Driver: "ads1115", Address: 0x49, Channel: "2-3", MaxVoltage: 0.2, Key: "shunt"}))
	checkKVs(t, r.Telemetry, exact("shunt", -0.032))
	b.done(t)
}

// ADS1015: 128 SPS is DR=000: 0xC303. Its 12-bit result is left-aligned:
// 0x7FF0 is 2047 counts of 2 mV = 4.094 V.
func TestADS1015(t *testing.T) {
	b := newTestBus(t,
		i2ctest.IO{Addr: 0x48, W: []byte{0x01, 0xc3, 0x03}},
		i2ctest.IO{Addr: 0x48, W: []byte{0x00}, R: []byte{0x7f, 0xf0}},
	)
	r := mustRead(t, b.source(t, adapter.SensorConfig{Driver: "ads1015"}))
	checkKVs(t, r.Telemetry, exact(KeyVoltage, 4.094))
	b.done(t)
}

// INA219 with a 0.1 Ω shunt and 3.2 A full scale: current LSB =
// 3.2 A / 2¹⁵ = 97.656 µA, calibration = 0.04096 / (LSB × R) = 4194
// (0x1062), power LSB = 20 × current LSB. A 20 mV shunt drop (2000 ×
// 10 µV) and a 12 V bus (3000 × 4 mV, conversion-ready bit set) make the
// chip compute current = 2000 × 4194 / 4096 = 2047 counts (0.19990 A)
// and power = 2047 × 3000 / 5000 = 1228 counts (2.3984 W), which is
// 12 V × 0.2 A as it should be.
func TestINA219(t *testing.T) {
	b := newTestBus(t,
		i2ctest.IO{Addr: 0x40, W: []byte{0x05, 0x10, 0x62}},
		i2ctest.IO{Addr: 0x40, W: []byte{0x00, 0x1f, 0xff}},
		i2ctest.IO{Addr: 0x40, W: []byte{0x01}, R: []byte{0x07, 0xd0}},
		i2ctest.IO{Addr: 0x40, W: []byte{0x02}, R: []byte{0x5d, 0xc2}},
		i2ctest.IO{Addr: 0x40, W: []byte{0x04}, R: []byte{0x07, 0xff}},
		i2ctest.IO{Addr: 0x40, W: []byte{0x03}, R: []byte{0x04, 0xcc}},
	)
	r := mustRead(t, b.source(t, adapter.SensorConfig{Driver: "ina219"}))
	checkKVs(t, r.Telemetry, exact(KeyVoltage, 12), exact(KeyCurrent, 0.199901832), exact(KeyPower, 2.3984375),
		exact(KeyShuntVoltage, 0.02))
	checkKVs(t, r.Telemetry, want{KeyVoltage, 12, 0}, want{KeyCurrent, 0.2, 0.0002}, want{KeyPower, 2.4, 0.002},
		want{KeyShuntVoltage, 0.02, 0})
	b.done(t)
}

// A 10 mΩ shunt for 10 A: LSB = 305.175 µA, calibration =
// 0.04096 / (305.175 µA × 0.01 Ω) = 13421 (0x346D).
func TestINA219Calibration(t *testing.T) {
	b := newTestBus(t,
		i2ctest.IO{Addr: 0x41, W: []byte{0x05, 0x34, 0x6d}},
		i2ctest.IO{Addr: 0x41, W: []byte{0x00, 0x1f, 0xff}},
	)
	src := b.source(t, adapter.SensorConfig{Driver: "ina219", Address: 0x41, ShuntOhms: 0.01, MaxCurrent: 10})
	if _, err := src.Read(context.Background()); err == nil {
		t.Fatal("read past the recording succeeded")
	}
	b.done(t)
}

// SHT4x words and their CRCs: 0x1234 (0x37), 0x5678 (0x7D), 0x6666
// (0x93), 0x8000 (0xA2). T = -45 + 175 × 26214 / 65535 = 25.00 °C, RH =
// -6 + 125 × 32768 / 65535 = 56.50 %.
func TestSHT4x(t *testing.T) {
	b := newTestBus(t,
		i2ctest.IO{Addr: 0x44, W: []byte{0x89}},
		i2ctest.IO{Addr: 0x44, R: []byte{0x12, 0x34, 0x37, 0x56, 0x78, 0x7d}},
		i2ctest.IO{Addr: 0x44, W: []byte{0xfd}},
		i2ctest.IO{Addr: 0x44, R: []byte{0x66, 0x66, 0x93, 0x80, 0x00, 0xa2}},
		i2ctest.IO{Addr: 0x44, W: []byte{0xfd}},
		i2ctest.IO{Addr: 0x44, R: []byte{0x66, 0x66, 0x93, 0x80, 0x00, 0xa3}}, // CRC off by one
	)
	src := b.source(t, adapter.SensorConfig{Driver: "sht4x"})
	r := mustRead(t, src)
	checkKVs(t, r.Telemetry, exact(KeyTemperature, 25), exact(KeyHumidity, 56.5))
	if len(r.Attributes) != 1 || r.Attributes[0].Key != "serial_number" || r.Attributes[0].Value.Long != 0x12345678 {
		t.Errorf("attributes %v", r.Attributes)
	}
	_, err := src.Read(context.Background())
	if adapter.KindOf(err) != adapter.KindProtocol || !strings.Contains(err.Error(), "crc 0xa3, computed 0xa2") {
		t.Fatalf("got %v", err)
	}
	b.done(t)
}

func TestCRC8(t *testing.T) {
	// The datasheets' example: 0xBEEF has CRC 0x92.
	if got := crc8([]byte{0xbe, 0xef}); got != 0x92 {
		t.Fatalf("crc8(0xBEEF) = %#x", got)
	}
}

// The SCD4x datasheet's read_measurement example: 0x01F4 (CRC 0x33) is
// 500 ppm, 0x6667 (0xA2) is -45 + 175 × 26215 / 65535 = 25.00 °C, 0x5EB9
// (0x3C) is 100 × 24249 / 65535 = 37.00 %RH. The serial number is
// 0x1234_5678_9ABC.
func TestSCD4x(t *testing.T) {
	const a = 0x62
	notReady := i2ctest.IO{Addr: a, R: []byte{0x80, 0x00, 0xa2}}
	b := newTestBus(t,
		i2ctest.IO{Addr: a, W: []byte{0x3f, 0x86}},
		i2ctest.IO{Addr: a, W: []byte{0x36, 0x82}},
		i2ctest.IO{Addr: a, R: []byte{0x12, 0x34, 0x37, 0x56, 0x78, 0x7d, 0x9a, 0xbc, 0xe0}},
		i2ctest.IO{Addr: a, W: []byte{0x21, 0xb1}},
		// First poll: no sample yet.
		i2ctest.IO{Addr: a, W: []byte{0xe4, 0xb8}}, notReady,
		// Second poll: a sample.
		i2ctest.IO{Addr: a, W: []byte{0xe4, 0xb8}}, i2ctest.IO{Addr: a, R: []byte{0x80, 0x06, 0x04}},
		i2ctest.IO{Addr: a, W: []byte{0xec, 0x05}},
		i2ctest.IO{Addr: a, R: []byte{0x01, 0xf4, 0x33, 0x66, 0x67, 0xa2, 0x5e, 0xb9, 0x3c}},
		// Third poll, 31 s later: still none, which fails the poll and
		// drops the driver, stopping the measurement; Close then has
		// nothing left to stop.
		i2ctest.IO{Addr: a, W: []byte{0xe4, 0xb8}}, notReady,
		i2ctest.IO{Addr: a, W: []byte{0x3f, 0x86}},
	)
	src := b.source(t, adapter.SensorConfig{Driver: "scd4x"})
	r := mustRead(t, src)
	if len(r.Telemetry) != 0 || len(r.Attributes) != 1 || r.Attributes[0].Value.Long != 0x123456789abc {
		t.Fatalf("first poll: %+v", r)
	}
	b.clock = b.clock.Add(5 * time.Second)
	r = mustRead(t, src)
	checkKVs(t, r.Telemetry, exact(KeyCO2, 500), exact(KeyTemperature, 25), exact(KeyHumidity, 37))
	if r.Attributes != nil {
		t.Errorf("attributes sent again: %v", r.Attributes)
	}
	b.clock = b.clock.Add(31 * time.Second)
	_, err := src.Read(context.Background())
	if !errors.Is(err, errSCD4xStale) || adapter.KindOf(err) != adapter.KindDevice {
		t.Fatalf("got %v", err)
	}
	if err := src.(interface{ Close() error }).Close(); err != nil {
		t.Fatal(err)
	}
	b.done(t)
}

func TestSCD4xClose(t *testing.T) {
	const a = 0x62
	b := newTestBus(t,
		i2ctest.IO{Addr: a, W: []byte{0x3f, 0x86}},
		i2ctest.IO{Addr: a, W: []byte{0x36, 0x82}},
		i2ctest.IO{Addr: a, R: []byte{0x12, 0x34, 0x37, 0x56, 0x78, 0x7d, 0x9a, 0xbc, 0xe0}},
		i2ctest.IO{Addr: a, W: []byte{0x21, 0xb1}},
		i2ctest.IO{Addr: a, W: []byte{0xe4, 0xb8}}, i2ctest.IO{Addr: a, R: []byte{0x80, 0x00, 0xa2}},
		i2ctest.IO{Addr: a, W: []byte{0x3f, 0x86}}, // Close
	)
	src := b.source(t, adapter.SensorConfig{Driver: "scd4x"})
	mustRead(t, src)
	if err := src.(interface{ Close() error }).Close(); err != nil {
		t.Fatal(err)
	}
	b.done(t)
}

// BH1750: power on, one-time high resolution, 0x03E8 = 1000 counts =
// 1000 / 1.2 = 833.33 lx.
func TestBH1750(t *testing.T) {
	b := newTestBus(t,
		i2ctest.IO{Addr: 0x5c, W: []byte{0x01}},
		i2ctest.IO{Addr: 0x5c, W: []byte{0x20}},
		i2ctest.IO{Addr: 0x5c, R: []byte{0x03, 0xe8}},
	)
	var waited []time.Duration
	b.sleep = func(_ context.Context, d time.Duration) error { waited = append(waited, d); return nil }
	r := mustRead(t, b.source(t, adapter.SensorConfig{Driver: "bh1750", Address: 0x5c}))
	checkKVs(t, r.Telemetry, exact(KeyIlluminance, 833.33))
	if len(waited) != 1 || waited[0] != 180*time.Millisecond {
		t.Errorf("waited %v, want the datasheet's 180 ms once", waited)
	}
	b.done(t)
}

// MCP9808 ambient temperature register: 13 bits of 0.0625 °C, bit 12 the
// sign, bits 15-13 alert flags. 0xC194: 0x194 = 404 × 0.0625 = 25.25 °C
// (with the critical and upper alert flags, ignored). 0x1E70: 231 -
// 256 = -25 °C (the datasheet's 256 - (14 × 16 + 112 / 16)).
func TestMCP9808(t *testing.T) {
	b := newTestBus(t,
		i2ctest.IO{Addr: 0x18, W: []byte{0x08, 0x03}},
		i2ctest.IO{Addr: 0x18, W: []byte{0x01, 0x00, 0x00}},
		i2ctest.IO{Addr: 0x18, W: []byte{0x05}, R: []byte{0xc1, 0x94}},
		i2ctest.IO{Addr: 0x18, W: []byte{0x05}, R: []byte{0x1e, 0x70}},
	)
	src := b.source(t, adapter.SensorConfig{Driver: "mcp9808"})
	checkKVs(t, mustRead(t, src).Telemetry, exact(KeyTemperature, 25.25))
	checkKVs(t, mustRead(t, src).Telemetry, exact(KeyTemperature, -25))
	b.done(t)
}
