// Package modbussim simulates a Modbus slave: an energy meter behind one
// or more unit ids, served over Modbus TCP (github.com/simonvetter/modbus's
// server) and Modbus RTU on a serial line or a pty (this package's own
// slave: simonvetter has no RTU server). Tests start it in-process with
// New and ServeTCP/StartTCP or ServeRTU; `go run ./firmware-sim modbus`
// runs it from the shell.
//
// # Register map
//
// Every unit has the four tables with all 65536 addresses. Zero-based
// PDU addresses (a "40001"-style manual would add 1); values wider than
// 16 bits are stored in the unit's WordOrder (ABCD, big-endian, unless
// configured), strings one character per byte, first in the high byte.
//
//	table     addr   type      unit     meaning                       at start
//	input     0-1    float32   V        voltage, 230 ± 2 + noise      230.0
//	input     2-3    float32   A        current, 0 when relay off     4.0
//	input     4-5    float32   W        power = voltage · current     920.0
//	input     6-7    uint32    Wh       energy, grows with power      16909060 (0x01020304)
//	input     8      uint16    0.01 Hz  frequency, 50 ± 0.03          5000
//	input     9      int16     0.1 °C   temperature, -5 ± 10          -50
//	input     10-13  uint64    Wh       energy, the same counter      16909060
//	input     14-21  ASCII     -        serial "FERRY-SIM-000001"     (unit id in the digits)
//	holding   0      int16     0.1 °C   setpoint, -400..1000          215; outside: exception 03
//	holding   2-3    uint32    -        writable                      0x0A0B0C0D
//	holding   4-7    float64   -        writable                      1234.5678
//	coil      0      bool      -        load relay                    on
//	discrete  0      bool      -        door contact, flips every 10 s off
//	discrete  1      bool      -        relay feedback (coil 0 at the last tick)
//
// Every other address is plain memory, zero at start: holding registers
// and coils are writable, input registers and discrete inputs only
// through SetInput and SetDiscreteInput. The constants InputVoltage …
// DiscreteRelayFeedback name the addresses; Slave.Reading decodes them.
//
// # The meter
//
// The meter values are computed every Config.Tick (100 ms) from the time
// elapsed since New: sine waves (voltage over 60 s, current over 5 min,
// frequency over 45 s, temperature over 10 min) plus Gaussian noise from a
// generator seeded by (Config.Seed, unit id), so the same seed and steps
// give the same values. At elapsed time 0 there is no noise: the values
// are the "at start" column above. Energy integrates power over each
// tick. With Config.ManualClock nothing ticks and Slave.Advance steps
// time; otherwise a goroutine owned by the Slave ticks until Close.
//
// # Function codes and exceptions
//
// Both transports serve FC 1, 2, 3, 4, 5, 6, 15 and 16. The RTU slave
// answers exception 01 (illegal function) for any other function code,
// 03 (illegal data value) for a quantity, byte count or FC 5 value out of
// range, 02 (illegal data address) for a range past 0xFFFF, in the order
// of the spec's state diagrams; simonvetter's TCP server answers 01 too
// but closes the connection on a request it cannot decode. Both answer a
// setpoint out of range with 03.
//
// # Faults
//
//   - Dead units (UnitConfig.Dead, Slave.SetDead): the RTU slave never
//     answers them. The TCP server holds the request for Config.DeadHold
//     (1 s) and then answers exception 0x0B, like a TCP gateway with a
//     silent serial device; a client with a shorter timeout sees a
//     timeout, and later requests on that connection wait for the hold
//     to end (simonvetter's server serves a connection's requests one at
//     a time), so give each unit its own connection to keep the others
//     answering at once. Reviving a unit ends its holds.
//   - Exception ranges (UnitConfig.Exceptions, Slave.AddException): a
//     request touching the range gets the configured exception.
//   - Delay (UnitConfig.Delay, Slave.SetDelay): waited before each answer.
//   - Units not served: the RTU slave ignores their frames; the TCP server
//     answers exception 0x0A (gateway path unavailable).
//
// # RTU framing
//
// A request frame is unit id, PDU and CRC-16/MODBUS, low byte first (see
// frame.go). The slave ends a frame by the length its function code
// implies, not by t3.5 silence: USB adapters and ptys deliver bytes in
// bursts, so silence between bytes means little. Silence of max(t3.5,
// 20 ms) only drops a partial frame, and after a frame with a bad CRC the
// slave drops bytes until such a silence, as a slave that lost sync does.
// Frames with a bad CRC or for other units get no answer; writes to unit
// 0 (broadcast) are executed by every live unit without an answer.
//
// # Line emulation
//
// A pty transfers a frame at once, whatever the baud rate. With
// Line.Emulate the slave emulates a real line's timing. LineTime(baud,
// bits per character, request bytes, response bytes) is the time one
// transaction occupies the line: the characters of both frames at
// Line.BitsPerChar bits each, and the t3.5 silence that ends each frame.
// The slave writes its answer LineTime - t3.5 after the request started
// (when the answer would be complete on the line), and starts the
// emulated clock of a request no earlier than the previous transaction's
// LineTime ended, so the line never carries more than 1/LineTime
// transactions a second — the limit a benchmark computes from the same
// LineTime. A delay fault adds to it, as the slave's processing time
// between the frames. This is emulation only: the bytes still arrive in bursts, a
// request sent too early is not lost but delayed, and requests that get
// no answer take no line time.
//
// # Goroutines and locks
//
// The Slave owns its tick goroutine; Close stops it and waits for it and
// for every ServeRTU call. ServeRTU runs on its caller's goroutine.
// StartTCP's server runs simonvetter's accept and connection goroutines,
// which Close stops by closing their sockets (simonvetter gives no way to
// wait for them). One mutex, Slave.mu, guards every unit's registers and
// faults; nothing blocks or does I/O under it. Counters are atomics.
package modbussim
