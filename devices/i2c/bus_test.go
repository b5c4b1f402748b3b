package i2c

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"

	"periph.io/x/conn/v3/i2c/i2creg"
	"periph.io/x/conn/v3/i2c/i2ctest"

	periphi2c "periph.io/x/conn/v3/i2c"

	"github.com/ferry-iot/ferry/configs"
	"github.com/ferry-iot/ferry/devices/adapter"
)

func TestOpenMissingBus(t *testing.T) {
	stat = func(string) (os.FileInfo, error) {
		return nil, &fs.PathError{Op: "stat", Path: "/dev/i2c-1", Err: fs.ErrNotExist}
	}
	t.Cleanup(func() { stat = os.Stat })
	for _, name := range []string{"1", "/dev/i2c-1", "I2C1"} {
		_, err := Open(BusConfig{Bus: name})
		if err == nil {
			t.Fatalf("%s: opened", name)
		}
		for _, s := range []string{"i2c: /dev/i2c-1 does not exist", "dtparam=i2c_arm=on", "i2c-dev", "raspi-config nonint do_i2c 0"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s: %q lacks %q", name, err, s)
			}
		}
		if adapter.KindOf(err) != adapter.KindConnection || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: kind %s", name, adapter.KindOf(err))
		}
	}
}

// A bus registered with periph's i2creg opens by name after host.Init
// (which finds no hardware here and registers nothing itself).
func TestOpenRegistered(t *testing.T) {
	pb := &i2ctest.Playback{Ops: []i2ctest.IO{bmeChipID}, DontPanic: true}
	if err := i2creg.Register("ferry-test", nil, -1, func() (periphi2c.BusCloser, error) { return pb, nil }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = i2creg.Unregister("ferry-test") })
	b, err := Open(BusConfig{Bus: "ferry-test"})
	if err != nil {
		t.Fatal(err)
	}
	if b.Periph() != pb {
		t.Fatal("not the registered bus")
	}
	// Close closes what Open opened: the playback checks its ops ran.
	if err := b.Close(); err == nil || !strings.Contains(err.Error(), "i2c: close") {
		t.Fatalf("close of an unplayed recording: %v", err)
	}
	if _, err := Open(BusConfig{Bus: "ferry-nonesuch"}); adapter.KindOf(err) != adapter.KindConnection {
		t.Fatalf("unknown bus: %v", err)
	}
}

func TestBusValidate(t *testing.T) {
	if err := (BusConfig{Bus: " "}).Validate(); len(configs.Lines(err)) != 1 || !strings.HasPrefix(configs.Lines(err)[0], "bus: is required") {
		t.Fatalf("got %v", err)
	}
	if err := (BusConfig{Bus: "1"}).Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateDevice(t *testing.T) {
	for _, tc := range []struct {
		cfg  adapter.SensorConfig
		want []string
	}{
		{adapter.SensorConfig{Driver: "bme280"}, nil},
		{adapter.SensorConfig{Driver: "bme280", Address: 0x77, Keys: map[string]string{"temperature": "t"}}, nil},
		{adapter.SensorConfig{}, []string{"driver: is required (ads1015, ads1115, bh1750, bme280, bmp280, ina219, mcp9808, scd4x, sht4x)"}},
		{adapter.SensorConfig{Driver: "dht22"}, []string{`driver: "dht22" is not an I²C driver`}},
		{adapter.SensorConfig{Driver: "bme280", Address: 0x48, Pin: "GPIO4", Keys: map[string]string{"co2": "x"}}, []string{
			"address: 0x48 is not an address of a bme280 (0x76, 0x77)",
			"pin: has no effect with driver bme280",
			"keys.co2: driver bme280 sends no key co2 (it sends temperature, humidity, pressure)",
		}},
		{adapter.SensorConfig{Driver: "ads1115", Channel: "4", MaxVoltage: 7}, []string{
			`channel: "4" is not 0, 1, 2, 3`,
			"max_voltage: 7 V is outside the ADC's ranges (up to 6.144 V)",
		}},
		{adapter.SensorConfig{Driver: "ina219", ShuntOhms: -1, Channel: "0"}, []string{
			"channel: has no effect with driver ina219",
			"shunt_ohms: -1 must be positive",
		}},
	} {
		lines := configs.Lines(ValidateDevice(tc.cfg))
		if len(lines) != len(tc.want) {
			t.Errorf("%+v: got %q, want %q", tc.cfg, lines, tc.want)
			continue
		}
		for i := range lines {
			if !strings.HasPrefix(lines[i], tc.want[i]) {
				t.Errorf("%+v: got %q, want %q", tc.cfg, lines[i], tc.want[i])
			}
		}
	}
}

// A sensor absent at start fails its polls; once it answers, the next
// poll sets it up and reads it.
func TestAbsentAtStart(t *testing.T) {
	b := newTestBus(t, append(bmeSetup(), bmeRead()...)...)
	nack := &failing{Bus: b.pb, n: 0, err: errors.New("sysfs-i2c: remote I/O error")}
	b.bus = nack
	src := b.source(t, adapter.SensorConfig{Driver: "bme280"})
	_, err := src.Read(context.Background())
	if adapter.KindOf(err) != adapter.KindTimeout || !strings.HasPrefix(err.Error(), "i2c: bme280 at 0x76: set up: ") {
		t.Fatalf("absent: %v", err)
	}
	r := mustRead(t, src)
	checkKVs(t, r.Telemetry, exact(KeyTemperature, 21.77), exact(KeyHumidity, 43.1044), exact(KeyPressure, 974.1308984375))
	b.done(t)
}

// A failed read drops the driver: the next poll sets the chip up again
// (chip id, calibration, configuration) before reading.
func TestFailedReadSetsUpAgain(t *testing.T) {
	ops := append(bmeSetup(), bmeForced) // the read fails at the idle check
	ops = append(append(ops, bmeSetup()...), bmeRead()...)
	b := newTestBus(t, ops...)
	b.bus = &failing{Bus: b.pb, n: 5, err: errors.New("sysfs-i2c: input/output error")}
	src := b.source(t, adapter.SensorConfig{Driver: "bme280"})
	if _, err := src.Read(context.Background()); adapter.KindOf(err) != adapter.KindDevice {
		t.Fatalf("got %v", err)
	}
	checkKVs(t, mustRead(t, src).Telemetry, exact(KeyTemperature, 21.77), exact(KeyHumidity, 43.1044), exact(KeyPressure, 974.1308984375))
	b.done(t)
}

func TestSourceRejects(t *testing.T) {
	b := newTestBus(t)
	if _, err := b.Source(adapter.SensorConfig{Driver: "bme280"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Source(adapter.SensorConfig{Driver: "bmp280", Address: 0x76}); err == nil ||
		!strings.Contains(err.Error(), "address 0x76 on playback is already used by a bme280 device") {
		t.Fatalf("same address: %v", err)
	}
	if _, err := b.Source(adapter.SensorConfig{Driver: "nope"}); err == nil || !strings.HasPrefix(err.Error(), "i2c: driver:") {
		t.Fatalf("bad driver: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("close of a bus handed in: %v", err)
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err  error
		kind string
	}{
		{errors.New("sysfs-i2c: remote I/O error"), adapter.KindTimeout},
		{errors.New("sysfs-i2c: no such device or address"), adapter.KindTimeout},
		{errors.New("bmxx80: unexpected chip id 0"), adapter.KindDevice},
		{adapter.Errorf(adapter.KindProtocol, errors.New("crc")), adapter.KindProtocol},
		{context.DeadlineExceeded, adapter.KindTimeout},
	} {
		if got := adapter.KindOf(classify(tc.err)); got != tc.kind {
			t.Errorf("%v: %s, want %s", tc.err, got, tc.kind)
		}
	}
}
