package onewire

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"periph.io/x/conn/v3/i2c/i2creg"
	"periph.io/x/conn/v3/i2c/i2ctest"
	"periph.io/x/conn/v3/onewire/onewiretest"

	periphi2c "periph.io/x/conn/v3/i2c"

	"github.com/ferry-iot/ferry/devices/adapter"
)

// The probe 28-0000070e41ac has the ROM code 0x740000070e41ac28: family
// 0x28, serial 0x0000070e41ac, CRC-8 0x74 (periph's own recording).
const probeID = "28-0000070e41ac"

var matchROM = []byte{0x55, 0x28, 0xac, 0x41, 0x0e, 0x07, 0x00, 0x00, 0x74}

func cmd(c ...byte) []byte { return append(append([]byte{}, matchROM...), c...) }

// Scratchpads (temperature LSB, MSB, TH, TL, configuration, reserved,
// CRC): configuration 0x7F is 12 bits; CRCs are Dallas CRC-8.
var (
	pad25    = []byte{0x91, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x0e, 0x10, 0xe1} // 401/16 = 25.0625 °C
	padMinus = []byte{0x5f, 0xff, 0x4b, 0x46, 0x7f, 0xff, 0x0e, 0x10, 0xb8} // -161/16 = -10.0625 °C
	pad85    = []byte{0x50, 0x05, 0x4b, 0x46, 0x7f, 0xff, 0x0e, 0x10, 0x8d} // the power-on value
	padBad   = []byte{0x91, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x0e, 0x10, 0xe2}
	padNone  = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
)

func TestParseID(t *testing.T) {
	a, err := ParseID(probeID)
	if err != nil || a != 0x740000070e41ac28 {
		t.Fatalf("got %#x, %v", a, err)
	}
	for _, bad := range []string{"28-0000070e41a", "0000070e41ac", "28_0000070e41ac", "zz-0000070e41ac"} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// waits records the conversion waits instead of sleeping.
func playbackBus(ops ...onewiretest.IO) (*Bus, *onewiretest.Playback, *[]time.Duration) {
	pb := &onewiretest.Playback{Ops: ops, DontPanic: true}
	b := OpenWith(pb)
	var waits []time.Duration
	b.sleep = func(_ context.Context, d time.Duration) error { waits = append(waits, d); return nil }
	return b, pb, &waits
}

func TestMasterRead(t *testing.T) {
	b, pb, waits := playbackBus(
		onewiretest.IO{W: cmd(0xbe), R: pad25},    // ds18b20.New: 12 bits already
		onewiretest.IO{W: cmd(0x44), Pull: true},  // Convert T with the strong pull-up
		onewiretest.IO{W: cmd(0xbe), R: padMinus}, // Read Scratchpad
		onewiretest.IO{W: cmd(0x44), Pull: true},
		onewiretest.IO{W: cmd(0xbe), R: pad25},
	)
	src, err := b.Source(adapter.SensorConfig{Driver: "ds18b20", ID: probeID})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []float64{-10.0625, 25.0625} {
		r, err := src.Read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Telemetry) != 1 || r.Telemetry[0].Key != KeyTemperature || r.Telemetry[0].Value.Double != want {
			t.Fatalf("got %v, want %v", r.Telemetry, want)
		}
	}
	if len(*waits) != 2 || (*waits)[0] != 752*time.Millisecond {
		t.Errorf("waits %v, want 752 ms twice (12 bits)", *waits)
	}
	if err := pb.Close(); err != nil {
		t.Fatal(err)
	}
}

// At 9 bits the probe's configuration (0x7F, 12 bits) is rewritten: Write
// Scratchpad (0x4E: TH, TL, 0x1F) then Copy Scratchpad (0x48) to EEPROM
// with the strong pull-up; conversions then take 94 ms.
func TestMasterResolution(t *testing.T) {
	b, pb, waits := playbackBus(
		onewiretest.IO{W: cmd(0xbe), R: pad25},
		onewiretest.IO{W: cmd(0x4e, 0x00, 0x00, 0x1f)},
		onewiretest.IO{W: cmd(0x48), Pull: true},
		onewiretest.IO{W: cmd(0x44), Pull: true},
		onewiretest.IO{W: cmd(0xbe), R: pad25},
	)
	src, err := b.Source(adapter.SensorConfig{Driver: "ds18b20", ID: probeID, Resolution: 9})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Read(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(*waits) != 1 || (*waits)[0] != 94*time.Millisecond {
		t.Errorf("waits %v", *waits)
	}
	if err := pb.Close(); err != nil {
		t.Fatal(err)
	}
}

// Each failure is of its kind; each drops the periph driver, so the
// scratchpad is read again by ds18b20.New at the next poll.
func TestMasterErrors(t *testing.T) {
	b, pb, _ := playbackBus(
		onewiretest.IO{W: cmd(0xbe), R: padNone}, // set-up: nothing answers
		onewiretest.IO{W: cmd(0xbe), R: pad25},
		onewiretest.IO{W: cmd(0x44), Pull: true},
		onewiretest.IO{W: cmd(0xbe), R: pad85}, // not converted
		onewiretest.IO{W: cmd(0xbe), R: pad25},
		onewiretest.IO{W: cmd(0x44), Pull: true},
		onewiretest.IO{W: cmd(0xbe), R: padBad}, // CRC
	)
	src, err := b.Source(adapter.SensorConfig{Driver: "ds18b20", ID: probeID})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		kind string
		is   error
		text string
	}{
		{adapter.KindTimeout, nil, "device did not respond"},
		{adapter.KindDevice, ErrPowerOnValue, "85 °C"},
		{adapter.KindProtocol, nil, "incorrect scratchpad CRC"},
	} {
		_, err := src.Read(context.Background())
		if adapter.KindOf(err) != want.kind || !strings.Contains(err.Error(), want.text) ||
			want.is != nil && !errors.Is(err, want.is) || !strings.HasPrefix(err.Error(), "onewire: "+probeID+": ") {
			t.Errorf("got %v (%s), want %s", err, adapter.KindOf(err), want.kind)
		}
	}
	if err := pb.Close(); err != nil {
		t.Fatal(err)
	}
}

// ds2482 is the I²C traffic of a DS2482-100 at 0x18 carrying out one
// 1-Wire transaction as periph's ds248x driver sends it: 1-Wire Reset
// (0xB4) and a status read (presence detected: 0x02); per byte written,
// 1-Wire Write Byte (0xA5) and a status read (idle: 0x00), the last one
// preceded, with the strong pull-up, by Write Configuration (0xD2) of
// 0xA5 (APU and SPU on, the upper nibble their complement); per byte read,
// 1-Wire Read Byte (0x96, read back at once: the status, busy), a status
// read, then Set Read Pointer (0xE1) to the read data register (0xE1)
// and the byte.
func ds2482(w, r []byte, strong bool) []i2ctest.IO {
	const a = 0x18
	ops := []i2ctest.IO{{Addr: a, W: []byte{0xb4}}, {Addr: a, R: []byte{0x02}}}
	for i, c := range w {
		if strong && i == len(w)-1 && len(r) == 0 {
			ops = append(ops, i2ctest.IO{Addr: a, W: []byte{0xd2, 0xa5}})
		}
		ops = append(ops, i2ctest.IO{Addr: a, W: []byte{0xa5, c}}, i2ctest.IO{Addr: a, R: []byte{0x00}})
	}
	for _, c := range r {
		ops = append(ops, i2ctest.IO{Addr: a, W: []byte{0x96}, R: []byte{0x01}}, i2ctest.IO{Addr: a, R: []byte{0x00}},
			i2ctest.IO{Addr: a, W: []byte{0xe1, 0xe1}, R: []byte{c}})
	}
	return ops
}

// A DS18B20 behind a DS2482-100 on an I²C bus periph has registered:
// the master's set-up (Device Reset 0xF0, status 0x18 after reset, Write
// Configuration 0xE1 read back as 0x01; the DS2483 and DS2482-800
// probes fail) happens at the first poll.
func TestDS2482(t *testing.T) {
	ops := []i2ctest.IO{
		{Addr: 0x18, W: []byte{0xf0}},
		{Addr: 0x18, W: []byte{0xe1, 0xf0}, R: []byte{0x18}},
		{Addr: 0x18, W: []byte{0xd2, 0xe1}, R: []byte{0x01}},
	}
	ops = append(ops, ds2482(cmd(0xbe), pad25, false)...)
	ops = append(ops, ds2482(cmd(0x44), nil, true)...)
	ops = append(ops, ds2482(cmd(0xbe), padMinus, false)...)
	pb := &i2ctest.Playback{Ops: ops, DontPanic: true}
	if err := i2creg.Register("ferry-w1", nil, -1, func() (periphi2c.BusCloser, error) { return pb, nil }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = i2creg.Unregister("ferry-w1") })

	b, err := Open(BusConfig{I2CBus: "ferry-w1"})
	if err != nil {
		t.Fatal(err)
	}
	b.sleep = func(context.Context, time.Duration) error { return nil }
	src, err := b.Source(adapter.SensorConfig{Driver: "ds18b20", ID: probeID})
	if err != nil {
		t.Fatal(err)
	}
	r, err := src.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r.Telemetry[0].Value.Double != -10.0625 {
		t.Fatalf("got %v", r.Telemetry)
	}
	// Closing the bus closes the I²C bus, whose playback checks every
	// operation ran.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{BusConfig{Sysfs: "/x", I2CBus: "1"}.Validate(), 1},
		{BusConfig{Address: 0x1a}.Validate(), 2},
		{BusConfig{I2CBus: "1", Address: 0x19}.Validate(), 0},
		{ValidateDevice(adapter.SensorConfig{Driver: "ds18b20"}), 1},
		{ValidateDevice(adapter.SensorConfig{Driver: "ds18b20", ID: probeID, Resolution: 13, Address: 0x18}), 2},
		{ValidateDevice(adapter.SensorConfig{Driver: "ds18b20", ID: probeID, Resolution: 10}), 0},
		{ValidateDevice(adapter.SensorConfig{Driver: "dht22", ID: probeID}), 1},
	} {
		var n int
		if tc.err != nil {
			n = len(strings.Split(tc.err.Error(), "\n"))
		}
		if n != tc.want {
			t.Errorf("got %d problems (%v), want %d", n, tc.err, tc.want)
		}
	}
}
