// Package onewire reads DS18B20 temperature probes on a 1-Wire bus for
// the device adapters (package adapter), through either of two masters:
//
//   - the kernel's w1 bus (the default): a Raspberry Pi with
//     dtoverlay=w1-gpio in config.txt lists each probe under
//     /sys/bus/w1/devices/28-*/; a read of its w1_slave file converts and
//     returns the scratchpad with the kernel's CRC verdict and t= in m°C
//     (a kernel that has only the temperature file is read through that);
//   - a DS2482/DS2483 I²C-to-1-Wire master (i2c_bus, address), driven by
//     periph's ds248x and ds18b20 drivers.
//
// Devices: driver ds18b20, id as the kernel lists it (28-0000057e4c1b;
// the ROM code's family and serial, from which the master's Match ROM
// address and its CRC are made), resolution 9–12 bits (written to the
// probe's EEPROM through a master, to w1_therm's resolution file on the
// kernel's bus; unset leaves the kernel's probes as they are and sets 12
// bits through a master). Telemetry: temperature (°C), renamed by keys.
//
// Errors: a probe that is not on the bus or reads all zeros (no answer)
// is adapter.KindTimeout; a CRC failure adapter.KindProtocol; the 85 °C
// power-on value (the probe did not convert: a brown-out, or parasite
// power without a strong pull-up) is an error of adapter.KindDevice,
// never a reading. A failed poll sets the probe (and a DS248x) up again
// at the next one; a probe or master absent at start makes failing
// polls, not a failed start.
package onewire
