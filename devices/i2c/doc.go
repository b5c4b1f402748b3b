// Package i2c reads sensors on an I²C bus for the device adapters
// (package adapter): a Bus per bus (Open, or OpenWith for a bus opened
// elsewhere), a Source per chip (Bus.Source). Buses go through periph.io
// (host.Init, then i2creg), so /dev/i2c-N and the buses of periph's USB
// adapters both work; a missing /dev/i2c-N fails Open with how to enable
// it on a Raspberry Pi.
//
// Drivers, their default and possible addresses, settings and telemetry:
//
//	driver   addresses         settings                  telemetry (unit)
//	bme280   0x76, 0x77        -                         temperature (°C), humidity (%RH), pressure (hPa)
//	bmp280   0x76, 0x77        -                         temperature (°C), pressure (hPa)
//	ads1015  0x48-0x4b         channel, max_voltage, key voltage (V)
//	ads1115  0x48-0x4b         channel, max_voltage, key voltage (V)
//	ina219   0x40-0x4f         shunt_ohms, max_current   voltage (V, bus), current (A), power (W), shunt_voltage (V)
//	sht4x    0x44, 0x45, 0x46  -                         temperature (°C), humidity (%RH); attribute serial_number
//	scd4x    0x62              -                         co2 (ppm), temperature (°C), humidity (%RH); attribute serial_number
//	bh1750   0x23, 0x5c        -                         illuminance (lx)
//	mcp9808  0x18-0x1f         -                         temperature (°C)
//
// Every driver also takes keys, which renames telemetry keys. bme280,
// bmp280, ads1x15, ina219 and mcp9808 are periph's drivers (devices/v3);
// sht4x (which periph v3.7.4 lacks), scd4x (periph's waits up to 6 s for
// a sample inside a read) and bh1750 (periph's rounds to whole lux) speak
// their datasheets' protocols here, on periph's i2c.Bus.
//
// Set-up is lazy. Source sends nothing; a device's first poll sets its
// driver up (reads the chip id and calibration, writes the
// configuration). A sensor that is absent or unplugged at start thus
// makes failing polls, retried with the adapter's backoff and degrade,
// and never stops the daemon. A poll that fails drops the driver, so the
// next one sets the chip up again, as it needs after a power cycle.
//
// Errors. A chip that does not acknowledge its address (the kernel's
// "remote I/O error" or "no such device or address") is
// adapter.KindTimeout; a CRC mismatch is adapter.KindProtocol; any other
// failure is adapter.KindDevice; failures to open the bus are
// adapter.KindConnection.
//
// The SCD4x measures on its own every 5 s: a poll returns the sample
// taken since the last poll, or no values when there is none yet (poll
// at 5 s or more), and fails after 30 s without a sample, which sets the
// sensor up again.
package i2c
