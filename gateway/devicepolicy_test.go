package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestDeviceAllow: each configured bus's device node, by path when it is
// there (symlinks resolved), by its driver's class when it is not yet or
// when periph finds the bus by another name; nothing for TCP lines and
// the buses read through /sys; no repeats.
func TestDeviceAllow(t *testing.T) {
	dir := t.TempDir()
	ttyS1 := filepath.Join(dir, "ttyS1")
	byID := filepath.Join(dir, "usb-FTDI_FT232R_A1")
	if err := os.WriteFile(ttyS1, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(ttyS1, byID); err != nil {
		t.Fatal(err)
	}
	present := map[string]bool{"/dev/i2c-1": true, "/dev/gpiochip0": true}
	stat := func(path string) (os.FileInfo, error) {
		if present[path] {
			return nil, nil
		}
		return os.Stat(path)
	}
	yaml := `
buses:
  - {name: line-1, modbus: {url: "rtu://` + ttyS1 + `"}}
  - {name: line-2, modbus: {url: "rtu://` + byID + `"}}
  - {name: usb, modbus: {url: "rtu:///dev/ttyUSB3"}}
  - {name: by-id, modbus: {url: "rtu:///dev/serial/by-id/usb-Prolific-if00"}}
  - {name: plc, modbus: {url: "tcp://127.0.0.1:502"}}
  - {name: converter, modbus: {url: "rtuovertcp://127.0.0.1:4001"}}
  - {name: i2c-1, i2c: {bus: "1"}}
  - {name: ds2482, onewire: {i2c_bus: "/dev/i2c-1"}}
  - {name: i2c-usb, i2c: {bus: "FT232H"}}
  - {name: spi, spi: {port: "SPI0.1"}}
  - {name: gpio, gpio: {}}
  - {name: gpio-rp1, gpio: {chip: pinctrl-rp1}}
  - {name: w1, onewire: {}}
  - {name: iio, iio: {}}
`
	cfg := loadTestConfig(t, yaml)
	got := deviceAllow(cfg, stat)
	want := []string{
		"/dev/gpiochip0 rw",
		"/dev/i2c-1 rw",
		"char-gpiochip rw", // pinctrl-rp1: a label
		"char-i2c rw",      // FT232H: periph's name
		"char-spidev rw",   // /dev/spidev0.1 is not there
		"char-ttyACM rw",   // by-id/usb-Prolific-if00: some USB serial adapter
		"char-ttyUSB rw",   // /dev/ttyUSB3, and the by-id one
		ttyS1 + " rw",      // line-1, and line-2 through its symlink
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("deviceAllow:\n got %q\nwant %q", got, want)
	}
	if got := deviceAllow(loadTestConfig(t, "node_id: x\n"), stat); len(got) != 0 {
		t.Fatalf("no buses: %q", got)
	}
}

// TestApplyDeviceAllow: --apply-device-allow runs systemctl set-property
// --runtime with the empty assignment first (dropping the last start's
// list) and one assignment per entry; a systemctl that fails fails the
// command (the unit's ExecStartPre) with its message.
func TestApplyDeviceAllow(t *testing.T) {
	dir := t.TempDir()
	argsFile := filepath.Join(dir, "args")
	fake := filepath.Join(dir, "systemctl")
	script := "#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done > " + argsFile + "\n[ -z \"$FAIL\" ] || { echo 'Failed to set unit properties: Access denied' >&2; exit 1; }\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	old := systemctl
	systemctl = fake
	defer func() { systemctl = old }()
	cfgFile := filepath.Join(dir, "ferry.yaml")
	if err := os.WriteFile(cfgFile, []byte("buses:\n  - {name: l, modbus: {url: \"rtu:///dev/ttyUSB7\"}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"FERRY_DATA_DIR=" + filepath.Join(dir, "data")}
	var out, errOut bytes.Buffer
	if code := run([]string{"--config", cfgFile, "--apply-device-allow", "ferry.service"}, env, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	args, err := os.ReadFile(argsFile)
	if err != nil {
		t.Fatal(err)
	}
	want := "set-property\n--runtime\n--\nferry.service\nDeviceAllow=\nDeviceAllow=char-ttyUSB rw\n"
	if string(args) != want {
		t.Fatalf("systemctl arguments:\n%s\nwant\n%s", args, want)
	}
	if !strings.Contains(out.String(), "ferry.service may open char-ttyUSB rw") {
		t.Fatalf("output %q", out.String())
	}
	out.Reset()
	t.Setenv("FAIL", "1")
	if code := run([]string{"--config", cfgFile, "--apply-device-allow", "ferry.service"}, env, &out, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "Access denied") {
		t.Fatalf("failing systemctl: exit %d, %q", code, errOut.String())
	}
	out.Reset()
	if code := run([]string{"--config", cfgFile, "--device-allow"}, env, &out, &errOut); code != 0 || out.String() != "char-ttyUSB rw\n" {
		t.Fatalf("--device-allow: exit %d %q", code, out.String())
	}
}

func loadTestConfig(t *testing.T, yaml string) *Config {
	t.Helper()
	cfg, err := LoadConfig(writeConfig(t, yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
