package main

// Device access under systemd. The unit (configs/deb/ferry.service) has
// DevicePolicy=closed and no DeviceAllow= of its own: before each start,
// ExecStartPre=+ferry --apply-device-allow ferry.service reads the same
// configuration the daemon will and sets the unit's DeviceAllow= to the
// device nodes of the buses it configures, through systemctl
// set-property --runtime. systemd realizes a unit's cgroup again before
// it spawns each of its processes, so the daemon starts under the new
// list; a changed configuration takes effect at the next restart, as
// every other setting does.

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// deviceClasses maps a device node's name to its driver's entry in
// /proc/devices, for DeviceAllow=char-NAME: a configured node that is
// not there at start (a USB serial adapter plugged in later) is allowed
// by class, so it works once it appears.
var deviceClasses = []struct{ prefix, class string }{
	{"ttyUSB", "char-ttyUSB"},
	{"ttyACM", "char-ttyACM"},
	{"ttyAMA", "char-ttyAMA"},
	{"ttyS", "char-ttyS"},
	{"i2c-", "char-i2c"},
	{"spidev", "char-spidev"},
	{"gpiochip", "char-gpiochip"},
}

// usbSerialClasses are what a missing serial port whose name says
// nothing (/dev/serial/by-id/usb-FTDI_…) may turn out to be.
var usbSerialClasses = []string{"char-ttyACM", "char-ttyUSB"}

// deviceAllow is the DeviceAllow= list for c's buses, each entry with
// its access ("/dev/i2c-1 rw"), sorted and without repeats. A node that
// exists is allowed by its path (symlinks resolved, as systemd would);
// one that does not, or a bus periph finds by a name that is no node,
// by its class. 1-Wire on the kernel's bus and IIO are read through
// /sys and need no device.
func deviceAllow(c *Config, stat func(string) (os.FileInfo, error)) []string {
	var out []string
	add := func(path string, classes ...string) {
		if path != "" {
			if _, err := stat(path); err == nil {
				if real, err := filepath.EvalSymlinks(path); err == nil {
					path = real
				}
				out = append(out, path+" rw")
				return
			}
			if class := classOf(path); class != "" {
				classes = []string{class}
			}
		}
		for _, class := range classes {
			out = append(out, class+" rw")
		}
	}
	for _, b := range c.Buses {
		switch {
		case b.Modbus != nil:
			if port := b.Modbus.Port(); port != "" {
				add(port, usbSerialClasses...)
			}
		case b.I2C != nil:
			path, _ := b.I2C.DeviceNode()
			add(path, "char-i2c")
		case b.SPI != nil:
			path, _ := b.SPI.DeviceNode()
			add(path, "char-spidev")
		case b.GPIO != nil:
			path, _ := b.GPIO.DeviceNode()
			add(path, "char-gpiochip")
		case b.OneWire != nil && b.OneWire.I2CBus != "":
			path, _ := b.OneWire.I2CNode()
			add(path, "char-i2c")
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// classOf is the class a device node's name says it is, "" when it says
// nothing.
func classOf(path string) string {
	base := filepath.Base(path)
	for _, d := range deviceClasses {
		if strings.HasPrefix(base, d.prefix) {
			return d.class
		}
	}
	return ""
}

// applyDeviceAllow sets unit's DeviceAllow= to list for this boot
// (systemctl set-property --runtime): the empty assignment first drops
// what an earlier start set. An empty list leaves only what
// DevicePolicy=closed always allows (/dev/null, /dev/urandom…).
func applyDeviceAllow(unit string, list []string, stdout io.Writer) error {
	args := []string{"set-property", "--runtime", "--", unit, "DeviceAllow="}
	for _, e := range list {
		args = append(args, "DeviceAllow="+e)
	}
	cmd := exec.Command(systemctl, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	if len(list) == 0 {
		fmt.Fprintf(stdout, "ferry: %s may open no bus devices (none configured)\n", unit)
		return nil
	}
	fmt.Fprintf(stdout, "ferry: %s may open %s\n", unit, strings.Join(list, ", "))
	return nil
}

// systemctl is the command applyDeviceAllow runs; tests replace it.
var systemctl = "systemctl"
