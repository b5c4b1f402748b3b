package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAdapterSensorsEndToEnd: sensors the kernel drives — a DS18B20 on
// the w1 bus and a BME280 through IIO, both in fake sysfs trees laid out
// as a Raspberry Pi shows them — become telemetry records like an MQTT
// device's; an I²C bus that is not there (I²C not enabled) does not stop
// the daemon: its device reports how to enable it at every poll, and
// /healthz says so.
func TestAdapterSensorsEndToEnd(t *testing.T) {
	w1, sys := t.TempDir(), t.TempDir()
	writeFiles(t, w1, map[string]string{
		"28-0000057e4c1b/w1_slave": "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
	})
	writeFiles(t, sys, map[string]string{
		"iio:device0/name":                      "bme280\n",
		"iio:device0/in_temp_input":             "21375\n",   // m°C
		"iio:device0/in_humidityrelative_input": "48250\n",   // m%RH
		"iio:device0/in_pressure_input":         "101.325\n", // kPa
	})
	devices := `  - name: flow-temp
    type: thermometer
    source: {bus: w1, poll: 100ms, driver: ds18b20, id: 28-0000057e4c1b}
  - name: attic
    type: climate
    source: {bus: iio, poll: 100ms, driver: iio, id: bme280, keys: {temp: temperature, humidityrelative: humidity}}
  - name: room-1
    source: {bus: i2c-1, poll: 100ms, driver: bme280, address: 0x76}
`
	buses := fmt.Sprintf("buses:\n  - {name: w1, onewire: {sysfs: %q}}\n  - {name: iio, iio: {root: %q}}\n  - {name: i2c-1, i2c: {bus: \"/dev/i2c-97\"}}\n", w1, sys)
	d := startDaemonDevices(t, "", devices, buses)

	want := map[string]map[string]float64{
		"flow-temp": {"temperature": 23.125},
		"attic":     {"temperature": 21.375, "humidity": 48.25, "pressure": 1013.25},
	}
	deadline := time.Now().Add(20 * time.Second)
	got := map[string]map[string]float64{}
	for len(got) < 2 {
		for _, r := range d.records("telemetry") {
			var v struct {
				Values map[string]float64 `json:"values"`
			}
			if r.Key == nil || json.Unmarshal(r.Value, &v) != nil {
				continue
			}
			if _, ok := want[*r.Key]; ok {
				got[*r.Key] = v.Values
				if r.Headers["device"] != *r.Key {
					t.Fatalf("record headers %v", r.Headers)
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("records: %v", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for dev, vals := range want {
		for k, w := range vals {
			if g, ok := got[dev][k]; !ok || g < w-1e-9 || g > w+1e-9 {
				t.Errorf("%s.%s = %v, want %v (all: %v)", dev, k, got[dev][k], w, got[dev])
			}
		}
	}
	var list struct {
		Devices []deviceJSON `json:"devices"`
	}
	withLastPoll := func() *deviceJSON {
		d.api("GET", "/api/v1/devices", nil, &list)
		for i := range list.Devices {
			if list.Devices[i].Name == "room-1" && list.Devices[i].Adapter != nil && list.Devices[i].Adapter.LastPoll != nil {
				return &list.Devices[i]
			}
		}
		return nil
	}
	var room *deviceJSON
	for deadline := time.Now().Add(10 * time.Second); room == nil; time.Sleep(50 * time.Millisecond) {
		if room = withLastPoll(); room == nil && time.Now().After(deadline) {
			t.Fatal("room-1 (no I²C bus) not in the API with a last poll")
		}
	}
	if room.Connected || room.Adapter.LastPoll.OK || !strings.Contains(room.Adapter.LastPoll.Error, "i2c_arm") {
		t.Fatalf("room-1 (no I²C bus): %+v %+v", room, room.Adapter)
	}
	var health struct {
		Warnings []string `json:"warnings"`
	}
	d.api("GET", "/healthz", nil, &health)
	if !strings.Contains(strings.Join(health.Warnings, "\n"), "buses[2] (i2c-1) not opened") {
		t.Fatalf("healthz warnings: %v", health.Warnings)
	}
}
