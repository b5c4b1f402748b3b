// Package iio reads sensors that have a kernel driver, through the Linux
// Industrial I/O sysfs interface, for the device adapters (package
// adapter): a Bus per sysfs root (default /sys/bus/iio/devices), a Source
// per IIO device (driver iio). A Raspberry Pi gets such devices from
// overlays such as dtoverlay=i2c-sensor,bme280 or dtoverlay=ads1015.
//
// A device is chosen by id: its folder ("iio:device0", which may change
// from boot to boot) or the content of its name file ("bme280"). It is
// looked up at the first poll, and again after a poll that failed.
//
// Channels are the device's in_<channel>_input files (the kernel's
// processed value) or else in_<channel>_raw, made (raw + offset) × scale
// with in_<channel>_offset and in_<channel>_scale, or the type-wide
// in_<type>_offset and in_<type>_scale (in_voltage_scale for
// in_voltage0_raw); a missing offset is 0, a missing scale 1. The
// telemetry key is the channel name (temp, humidityrelative, pressure,
// voltage0, temp_ambient...), sorted, or the order of the channels
// setting, which also limits which are read; keys renames them.
//
// Values are converted from the kernel's units to those of the I²C
// drivers (package i2c), by the channel's type (the name's leading
// letters):
//
//	type              kernel   sent
//	temp              m°C      °C
//	humidityrelative  m%RH     %RH
//	pressure          kPa      hPa
//	voltage           mV       V
//	current           mA       A
//	power             mW       W
//	illuminance       lx       lx
//	other types       as the kernel gives them
//
// and rounded to 12 significant digits, so 100.942695312 kPa reads
// 1009.42695312 hPa, not 1009.4269531200001.
//
// Errors: a device or channel that is not there is adapter.KindTimeout
// (the sensor is gone), a value that does not parse adapter.KindProtocol,
// a failed read adapter.KindDevice (the kernel driver's I/O error).
package iio
