package spi

import (
	"context"
	"errors"
	"io/fs"
	"math"
	"os"
	"strings"
	"testing"

	"periph.io/x/conn/v3/conntest"
	"periph.io/x/conn/v3/spi/spitest"

	"github.com/ferry-iot/ferry/configs"
	"github.com/ferry-iot/ferry/devices/adapter"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// Recorded BME280 traffic over SPI. A read sends the register (bit 7
// set: all of these are ≥ 0x80) then clocks out as many bytes as it
// reads; a write clears bit 7 of each register (0xF4 → 0x74). The
// calibration is a real chip's and the sample is the one of package
// i2c's test: adc_P = 324003, adc_T = 520448, adc_H = 27424, which the
// BME280's integer compensation makes 21.77 °C, 43.1044 %RH and
// 974.1308984375 hPa (the datasheet's float formulas: 21.7674 °C,
// 43.1044 %RH, 974.1310 hPa).
var (
	calib  = []byte{0x10, 0x6e, 0x6c, 0x66, 0x32, 0x0, 0x5d, 0x95, 0xb8, 0xd5, 0xd0, 0xb, 0x77, 0x1e, 0x9d, 0xff, 0xf9, 0xff, 0xac, 0x26, 0xa, 0xd8, 0xbd, 0x10, 0x0, 0x4b}
	calibH = []byte{0x6e, 0x1, 0x0, 0x13, 0x5, 0x0, 0x1e}
	sample = []byte{0x4f, 0x1a, 0x30, 0x7f, 0x10, 0x00, 0x6b, 0x20}
)

// rd is a register read of the answer r.
func rd(reg byte, r []byte) conntest.IO {
	return conntest.IO{W: append([]byte{reg}, make([]byte, len(r))...), R: append([]byte{0}, r...)}
}

func bmeOps(chipID byte) []conntest.IO {
	return []conntest.IO{
		rd(0xd0, []byte{chipID}),
		rd(0x88, calib),
		rd(0xe1, calibH),
		{W: []byte{0x74, 0x6c, 0x72, 0x03, 0x75, 0xa0, 0x74, 0x6c}},
		{W: []byte{0x74, 0x6d}},
		rd(0xf3, []byte{0}),
		rd(0xf7, sample),
	}
}

func checkKVs(t *testing.T, got []tb.KV, keys []string, vals []float64) {
	t.Helper()
	if len(got) != len(keys) {
		t.Fatalf("got %v", got)
	}
	for i := range keys {
		if got[i].Key != keys[i] || math.Abs(got[i].Value.Double-vals[i]) != 0 {
			t.Errorf("got %s=%v, want %s=%v", got[i].Key, got[i].Value.Double, keys[i], vals[i])
		}
	}
}

// The first poll finds no chip (the id reads 0x00); the second sets it up
// on the same connection, which periph's port hands out only once.
func TestBME280(t *testing.T) {
	pb := &spitest.Playback{Playback: conntest.Playback{DontPanic: true,
		Ops: append([]conntest.IO{rd(0xd0, []byte{0x00})}, bmeOps(0x60)...)}}
	b := OpenWith(pb)
	src, err := b.Source(adapter.SensorConfig{Driver: "bme280", Keys: map[string]string{"humidity": "rh"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Read(context.Background()); adapter.KindOf(err) != adapter.KindDevice ||
		!strings.Contains(err.Error(), "spi: bme280 on playback: set up: device: bmxx80: unexpected chip id 0") {
		t.Fatalf("no chip: %v", err)
	}
	r, err := src.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkKVs(t, r.Telemetry, []string{"temperature", "rh", "pressure"}, []float64{21.77, 43.1044, 974.1308984375})
	if err := pb.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Source(adapter.SensorConfig{Driver: "bmp280"}); err == nil {
		t.Fatal("a second device on one chip select")
	}
}

func TestBMP280Mismatch(t *testing.T) {
	pb := &spitest.Playback{Playback: conntest.Playback{DontPanic: true, Ops: []conntest.IO{
		rd(0xd0, []byte{0x60}), rd(0x88, calib), rd(0xe1, calibH),
		{W: []byte{0x74, 0x6c, 0x72, 0x03, 0x75, 0xa0, 0x74, 0x6c}},
	}}}
	src, err := OpenWith(pb).Source(adapter.SensorConfig{Driver: "bmp280"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Read(context.Background()); err == nil || !strings.Contains(err.Error(), "the chip is a BME280, not a bmp280") {
		t.Fatalf("got %v", err)
	}
}

func TestOpenMissingPort(t *testing.T) {
	stat = func(string) (os.FileInfo, error) { return nil, fs.ErrNotExist }
	t.Cleanup(func() { stat = os.Stat })
	_, err := Open(BusConfig{Port: "0.1"})
	if adapter.KindOf(err) != adapter.KindConnection || !errors.Is(err, fs.ErrNotExist) ||
		!strings.Contains(err.Error(), "spi: /dev/spidev0.1 does not exist") || !strings.Contains(err.Error(), "dtparam=spi=on") {
		t.Fatalf("got %v", err)
	}
}

func TestValidate(t *testing.T) {
	lines := configs.Lines((BusConfig{Speed: -1}).Validate())
	if len(lines) != 2 {
		t.Fatalf("got %q", lines)
	}
	lines = configs.Lines(ValidateDevice(adapter.SensorConfig{Driver: "bme280", Address: 0x76}))
	if len(lines) != 1 || lines[0] != "address: has no effect with driver bme280" {
		t.Fatalf("got %q", lines)
	}
	if err := ValidateDevice(adapter.SensorConfig{Driver: "sht4x"}); err == nil {
		t.Fatal("sht4x over SPI")
	}
}
