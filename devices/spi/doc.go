// Package spi reads sensors on an SPI port for the device adapters
// (package adapter): a Bus per port (Open, or OpenWith for a port opened
// elsewhere), and the Source of the one chip behind its chip select
// (Bus.Source). Ports go through periph.io (host.Init, then spireg); a
// missing /dev/spidevB.C fails Open with how to enable SPI on a
// Raspberry Pi.
//
// Drivers, settings and telemetry:
//
//	driver   settings  telemetry (unit)
//	bme280   keys      temperature (°C), humidity (%RH), pressure (hPa)
//	bmp280   keys      temperature (°C), pressure (hPa)
//
// Both are periph's bmxx80 driver (SPI mode 3; periph asks for 10 MHz,
// which the port's speed setting caps), with the same conversions and
// keys as over I²C (package i2c).
//
// Set-up is lazy, as on I²C: Source sends nothing, a device's first poll
// sets the chip up, an absent chip makes failing polls that the adapter
// retries, and a failed poll sets the chip up again at the next one.
// Failures to open the port are adapter.KindConnection, the chip's
// failures adapter.KindDevice.
package spi
