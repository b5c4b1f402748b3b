package onewire

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ferry-iot/ferry/devices/adapter"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// The kernel's w1_therm driver shows a probe as <sysfs>/<id>/ with:
//
//	w1_slave     72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
//	             72 01 4b 46 7f ff 0e 10 57 t=23125
//	temperature  23125                 (newer kernels; no CRC verdict)
//	resolution   12                    (newer kernels; writable)
//
// Reading either file makes the kernel convert (up to 750 ms at 12
// bits) and read the scratchpad; the first line of w1_slave is the
// scratchpad with the CRC the kernel computed and its verdict, the
// second the temperature in m°C.

// Errors of w1_slave contents.
var (
	// ErrCRC: the kernel's CRC check of the scratchpad failed (NO).
	ErrCRC = errors.New("onewire: scratchpad crc mismatch")
	// ErrPowerOnValue: the probe answered 85 °C, its power-on value: it
	// did not convert (a brown-out, or parasite power without a strong
	// pull-up).
	ErrPowerOnValue = errors.New("onewire: 85 °C power-on value: the probe did not convert")
	// ErrNoAnswer: the scratchpad read all zeros (whose CRC is zero, so
	// the kernel says YES): nothing answered.
	ErrNoAnswer = errors.New("onewire: all-zero scratchpad: the probe did not answer")
)

// ParseW1Slave returns the temperature in m°C from the contents of a
// w1_slave file. Errors are of the kinds the adapter counts: ErrCRC and
// a malformed file adapter.KindProtocol, ErrNoAnswer
// adapter.KindTimeout, ErrPowerOnValue adapter.KindDevice.
func ParseW1Slave(b []byte) (int64, error) {
	first, second, ok := bytes.Cut(bytes.TrimSpace(b), []byte("\n"))
	if !ok {
		return 0, adapter.Errorf(adapter.KindProtocol, fmt.Errorf("onewire: w1_slave is not two lines: %q", b))
	}
	pad, verdict, ok := strings.Cut(string(first), ": crc=")
	if !ok {
		return 0, adapter.Errorf(adapter.KindProtocol, fmt.Errorf("onewire: w1_slave has no crc verdict: %q", first))
	}
	if !strings.HasSuffix(strings.TrimSpace(verdict), "YES") {
		return 0, adapter.Errorf(adapter.KindProtocol, fmt.Errorf("%w (%s: crc=%s)", ErrCRC, strings.TrimSpace(pad), strings.TrimSpace(verdict)))
	}
	if strings.Trim(pad, "0 ") == "" {
		return 0, adapter.Errorf(adapter.KindTimeout, ErrNoAnswer)
	}
	_, t, ok := bytes.Cut(second, []byte("t="))
	if !ok {
		return 0, adapter.Errorf(adapter.KindProtocol, fmt.Errorf("onewire: w1_slave has no t=: %q", second))
	}
	return parseMilli(t)
}

// parseMilli reads a temperature in m°C, refusing the power-on value.
func parseMilli(b []byte) (int64, error) {
	v, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 32)
	if err != nil {
		return 0, adapter.Errorf(adapter.KindProtocol, fmt.Errorf("onewire: temperature %q: %w", bytes.TrimSpace(b), err))
	}
	if v == 85000 {
		return 0, adapter.Errorf(adapter.KindDevice, ErrPowerOnValue)
	}
	return v, nil
}

// sysfsProbe is a DS18B20 on the kernel's bus.
type sysfsProbe struct {
	bus    *Bus
	id     string
	cfg    adapter.SensorConfig
	resSet bool // the resolution setting was applied
}

// Read reads the probe once: w1_slave, or temperature on a kernel that
// has only that.
func (p *sysfsProbe) Read(context.Context) (adapter.Reading, error) {
	dir := filepath.Join(p.bus.sysfs, p.id)
	if p.cfg.Resolution != 0 && !p.resSet {
		if err := p.setResolution(dir); err != nil {
			return adapter.Reading{}, fmt.Errorf("onewire: %s: %w", p.id, err)
		}
		p.resSet = true
	}
	milli, err := readSysfs(dir)
	if isNotExist(err) {
		return adapter.Reading{}, fmt.Errorf("onewire: %s: %w (present: %s)", p.id,
			adapter.Errorf(adapter.KindTimeout, errNotPresent), p.bus.presentIDs())
	}
	if err != nil {
		return adapter.Reading{}, fmt.Errorf("onewire: %s: %w", p.id, err)
	}
	kvs := p.cfg.Rename([]tb.KV{adapter.Double(KeyTemperature, float64(milli)/1000)})
	return adapter.Reading{Telemetry: kvs}, nil
}

func readSysfs(dir string) (int64, error) {
	b, err := os.ReadFile(filepath.Join(dir, "w1_slave"))
	if err == nil {
		return ParseW1Slave(b)
	}
	if !isNotExist(err) {
		return 0, adapter.Errorf(adapter.KindDevice, err)
	}
	b, err = os.ReadFile(filepath.Join(dir, "temperature"))
	if err != nil {
		if isNotExist(err) {
			return 0, err
		}
		return 0, adapter.Errorf(adapter.KindDevice, err)
	}
	return parseMilli(b)
}

// setResolution writes the resolution file when it holds another value.
func (p *sysfsProbe) setResolution(dir string) error {
	path := filepath.Join(dir, "resolution")
	b, err := os.ReadFile(path)
	if err != nil {
		return adapter.Errorf(adapter.KindDevice, fmt.Errorf("resolution (needs a kernel whose w1_therm has it): %w", err))
	}
	if strings.TrimSpace(string(b)) == strconv.Itoa(p.cfg.Resolution) {
		return nil
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(p.cfg.Resolution)+"\n"), 0); err != nil {
		return adapter.Errorf(adapter.KindDevice, fmt.Errorf("set resolution: %w", err))
	}
	return nil
}
