package onewire

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-iot/ferry/devices/adapter"
)

func openTestdata(t *testing.T) *Bus {
	t.Helper()
	b, err := Open(BusConfig{Sysfs: "testdata/w1/devices"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func probe(t *testing.T, b *Bus, cfg adapter.SensorConfig) adapter.Source {
	t.Helper()
	if cfg.Driver == "" {
		cfg.Driver = "ds18b20"
	}
	src, err := b.Source(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// The testdata tree holds what w1_therm writes: 0x0172 is 370/16 =
// 23.125 °C; 0xFF5F is -161/16 = -10.0625 °C, which the kernel truncates
// to -10062 m°C.
func TestSysfsRead(t *testing.T) {
	b := openTestdata(t)
	for _, tc := range []struct {
		id   string
		keys map[string]string
		key  string
		want float64
	}{
		{"28-0000057e4c1b", nil, "temperature", 23.125},
		{"28-0000000000A2", nil, "temperature", -10.062},
		{"28-0000000000a3", map[string]string{"temperature": "t"}, "t", 25.062}, // a kernel with the temperature file only
	} {
		r, err := probe(t, b, adapter.SensorConfig{ID: tc.id, Keys: tc.keys}).Read(context.Background())
		if err != nil {
			t.Fatalf("%s: %v", tc.id, err)
		}
		if len(r.Telemetry) != 1 || r.Telemetry[0].Key != tc.key || r.Telemetry[0].Value.Double != tc.want {
			t.Errorf("%s: got %v, want %s=%v", tc.id, r.Telemetry, tc.key, tc.want)
		}
	}
	if _, err := b.Source(adapter.SensorConfig{Driver: "ds18b20", ID: "28-0000057e4c1b"}); err == nil {
		t.Fatal("two sources for one probe")
	}
}

func TestSysfsErrors(t *testing.T) {
	b := openTestdata(t)
	for _, tc := range []struct {
		id, kind string
		is       error
		text     string
	}{
		{"28-00000a1b2c3d", adapter.KindProtocol, ErrCRC, "crc=57 NO"},
		{"28-0000000000a1", adapter.KindDevice, ErrPowerOnValue, "85 °C"},
		{"28-0000000000a4", adapter.KindTimeout, ErrNoAnswer, "all-zero"},
		{"28-0000000000ff", adapter.KindTimeout, errNotPresent,
			"not on the bus (present: 28-0000000000a1, 28-0000000000a2, 28-0000000000a3, 28-0000000000a4, 28-0000057e4c1b, 28-00000a1b2c3d)"},
	} {
		_, err := probe(t, b, adapter.SensorConfig{ID: tc.id}).Read(context.Background())
		if !errors.Is(err, tc.is) || adapter.KindOf(err) != tc.kind || !strings.Contains(err.Error(), tc.text) ||
			!strings.HasPrefix(err.Error(), "onewire: "+tc.id+": ") {
			t.Errorf("%s: got %v (%s)", tc.id, err, adapter.KindOf(err))
		}
	}
}

func TestSysfsResolution(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "28-0000057e4c1b")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"w1_slave", "resolution"} {
		b, err := os.ReadFile(filepath.Join("testdata/w1/devices/28-0000057e4c1b", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := Open(BusConfig{Sysfs: root})
	if err != nil {
		t.Fatal(err)
	}
	src := probe(t, b, adapter.SensorConfig{ID: "28-0000057e4c1b", Resolution: 10})
	if _, err := src.Read(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "resolution"))
	if string(got) != "10\n" {
		t.Fatalf("resolution file holds %q", got)
	}
}

func TestParseW1Slave(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		kind string
	}{
		{"72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n", 23125, ""},
		{"72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125", 23125, ""},
		{"72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n", 0, adapter.KindProtocol},
		{"72 01 4b 46 7f ff 0e 10 57 YES\nt=1\n", 0, adapter.KindProtocol},
		{"72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57\n", 0, adapter.KindProtocol},
		{"72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=2x\n", 0, adapter.KindProtocol},
		{"", 0, adapter.KindProtocol},
	} {
		got, err := ParseW1Slave([]byte(tc.in))
		if tc.kind == "" && (err != nil || got != tc.want) || tc.kind != "" && adapter.KindOf(err) != tc.kind {
			t.Errorf("%q: got %d, %v", tc.in, got, err)
		}
	}
}

// FuzzParseW1Slave: no input panics, and a value comes only from a file
// whose first line the kernel marked YES and whose second has t=.
func FuzzParseW1Slave(f *testing.F) {
	for _, s := range []string{
		"72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
		"50 05 4b 46 7f ff 0e 10 8d : crc=8d YES\n50 05 4b 46 7f ff 0e 10 8d t=85000\n",
		"ff ff ff ff ff ff ff ff ff : crc=c9 NO\nff ff ff ff ff ff ff ff ff t=-62\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ParseW1Slave(b)
		if err != nil {
			return
		}
		if !strings.Contains(string(b), "YES") || !strings.Contains(string(b), "t=") || v == 85000 {
			t.Fatalf("%q parsed as %d", b, v)
		}
	})
}

func TestOpenMissingSysfs(t *testing.T) {
	_, err := Open(BusConfig{Sysfs: "testdata/nonesuch"})
	if adapter.KindOf(err) != adapter.KindConnection || !strings.Contains(err.Error(), "dtoverlay=w1-gpio") {
		t.Fatalf("got %v", err)
	}
}
