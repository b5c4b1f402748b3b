// Package modbus reads Modbus units — over TCP, on a serial line (RTU) or
// through an RTU-over-TCP converter — for the device adapters (package
// adapter): a Line per bus, a Device per unit.
//
// Points. A point names a table (coil, discrete, holding, input), a
// 0-based protocol address (the register a manual calls 40001 is holding
// 0), a type (bool, int16, uint16, int32, uint32, int64, uint64, float32,
// float64, string with its register count) and optionally a scale
// (value = raw × scale, then a double), a bit (a bool from one bit of a
// register) and a byte order. Orders use Telegraf's names for the bytes
// of a 32-bit value as they arrive: ABCD (big-endian, the protocol's own
// order and the default), DCBA (little-endian), BADC (bytes swapped in
// each register), CDAB (registers swapped); 16- and 64-bit values follow
// the same two rules (swap bytes in a register, reverse the registers).
//
// Reads. A poll reads the timeseries and attributes of a unit in as few
// requests as the protocol allows: per table, points sorted by address
// are merged while a request spans at most 125 registers (2000 bits), or
// max_registers_per_request, and the gaps it reads over stay within
// max_read_gap. A poll is all or nothing: every value of a record has the
// same sample time.
//
// Writes. An RPC names an rpc entry: with params it writes (FC 5 for a
// coil, 6 for one register, 16 for more; a bit is read, changed and
// written back), without it reads the entry. Shared attribute updates
// write through attribute_updates entries. A Modbus exception comes back
// as the call's error.
//
// The line. Requests never overlap; delay_between_requests keeps a
// silence after each answer. An exception leaves the connection as it is;
// a timeout, a garbled frame, a mismatched unit or transaction id or an
// I/O error closes it, so no late answer can be taken for the next
// request, and the next request reconnects (at once, then with backoff up
// to reconnect_max, forever). The library (github.com/simonvetter/modbus)
// already skips TCP answers whose transaction id is not the one awaited.
package modbus
