package iio

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-iot/ferry/configs"
	"github.com/ferry-iot/ferry/devices/adapter"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// fakeTree copies testdata/iio/devices into a temporary root, naming the
// iio_deviceN folders iio:deviceN as the kernel does (a ':' has no place
// in a file name of the repository).
func fakeTree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	err := filepath.WalkDir("testdata/iio/devices", func(path string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("testdata/iio/devices", path)
		dst := filepath.Join(root, strings.ReplaceAll(rel, "iio_device", "iio:device"))
		if e.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func read(t *testing.T, b *Bus, cfg adapter.SensorConfig) ([]tb.KV, error) {
	t.Helper()
	cfg.Driver = "iio"
	src, err := b.Source(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := src.Read(context.Background())
	return r.Telemetry, err
}

type kv struct {
	key string
	v   float64
}

func check(t *testing.T, got []tb.KV, err error, want ...kv) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i, w := range want {
		if got[i].Key != w.key || got[i].Value.Kind != tb.KindDouble || got[i].Value.Double != w.v {
			t.Errorf("got %s=%v, want %s=%v", got[i].Key, got[i].Value.Double, w.key, w.v)
		}
	}
}

// The kernel's bmp280 driver: 23125 m°C, 100.942695312 kPa, 65306 m%RH
// are 23.125 °C, 1009.42695312 hPa and 65.306 %RH; the processed
// in_temp_input wins over in_temp_raw.
func TestProcessed(t *testing.T) {
	b, err := open(fakeTree(t))
	if err != nil {
		t.Fatal(err)
	}
	got, err := read(t, b, adapter.SensorConfig{ID: "bme280"})
	check(t, got, err, kv{"humidityrelative", 65.306}, kv{"pressure", 1009.42695312}, kv{"temp", 23.125})
	got, err = read(t, b, adapter.SensorConfig{ID: "iio:device0", Channels: []string{"temp", "pressure"},
		Keys: map[string]string{"temp": "temperature"}})
	check(t, got, err, kv{"temperature", 23.125}, kv{"pressure", 1009.42695312})
}

// ADS1015 counts: voltage0 takes the type-wide scale, 1000 × 3 mV = 3 V;
// voltage1 its own, -12 × 0.125 mV = -0.0015 V. The Si7020's temp_raw
// with offset: (26000 - 11200) × 2.68 m°C = 39.664 °C.
func TestRaw(t *testing.T) {
	b, err := open(fakeTree(t))
	if err != nil {
		t.Fatal(err)
	}
	got, err := read(t, b, adapter.SensorConfig{ID: "ads1015"})
	check(t, got, err, kv{"voltage0", 3}, kv{"voltage1", -0.0015})
	got, err = read(t, b, adapter.SensorConfig{ID: "iio:device2"})
	check(t, got, err, kv{"temp", 39.664})
}

func TestErrors(t *testing.T) {
	root := fakeTree(t)
	b, err := open(root)
	if err != nil {
		t.Fatal(err)
	}
	_, err = read(t, b, adapter.SensorConfig{ID: "sht31"})
	if !errors.Is(err, errNotPresent) || adapter.KindOf(err) != adapter.KindTimeout ||
		!strings.Contains(err.Error(), "iio: sht31: timeout: not present (devices: iio:device0 (bme280), iio:device1 (ads1015), iio:device2 (si7020))") {
		t.Errorf("missing device: %v", err)
	}
	_, err = read(t, b, adapter.SensorConfig{ID: "bme280", Channels: []string{"co2"}})
	if adapter.KindOf(err) != adapter.KindTimeout || !strings.Contains(err.Error(), "channel co2: timeout: not present (channels: humidityrelative, pressure, temp)") {
		t.Errorf("missing channel: %v", err)
	}
	if err := os.WriteFile(filepath.Join(root, "iio:device1", "in_voltage0_raw"), []byte("busy\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = read(t, b, adapter.SensorConfig{ID: "ads1015"})
	if adapter.KindOf(err) != adapter.KindProtocol || !strings.Contains(err.Error(), `in_voltage0_raw: "busy" is not a number`) {
		t.Errorf("garbled: %v", err)
	}
	// A device that goes away and comes back as another iio:deviceN.
	src, _ := b.Source(adapter.SensorConfig{Driver: "iio", ID: "si7020"})
	if _, err := src.Read(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(root, "iio:device2"), filepath.Join(root, "iio:device7")); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Read(context.Background()); adapter.KindOf(err) != adapter.KindTimeout {
		t.Fatalf("gone: %v", err)
	}
	if _, err := src.Read(context.Background()); err != nil {
		t.Fatalf("back as iio:device7: %v", err)
	}
}

func TestValidate(t *testing.T) {
	lines := configs.Lines(ValidateDevice(adapter.SensorConfig{Driver: "iio", Channels: []string{"temp", "in_temp_input/"}, Pin: "4"}))
	want := []string{"id: is required", `channels[1]: "in_temp_input/" is not a channel name`, "pin: has no effect with driver iio"}
	if len(lines) != len(want) {
		t.Fatalf("got %q", lines)
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("got %q, want %q", lines[i], want[i])
		}
	}
	if err := (BusConfig{Root: "sys"}).Validate(); err == nil {
		t.Fatal("relative root")
	}
	if _, err := Open(BusConfig{Root: "/nonexistent/iio"}); adapter.KindOf(err) != adapter.KindConnection {
		t.Fatalf("missing root: %v", err)
	}
}
