// Package gpio reads and drives GPIO lines for the device adapters
// (package adapter): a Bus per GPIO chip (Open finds it through periph's
// character-device driver, gpioioctl; OpenWith takes a pin lookup, which
// tests use), a Source per line (Bus.Source). Lines are named as the
// chip names them ("GPIO17" on a Raspberry Pi) or by offset ("17").
//
// Drivers:
//
//   - input: the level as a bool, key (default level), at each poll; it
//     is also an adapter.Watcher that emits a reading stamped with the
//     edge's time at each edge (edge: both, the default, rising or
//     falling), after debounce when set: with both edges, when the level
//     after the wait differs from the last one emitted; with one edge,
//     when the line still holds the edge's level.
//   - counter: counts pulses on edges (default rising) in its watch,
//     dropping an edge sooner than debounce after the last one counted;
//     each poll sends count (a long, since start: it restarts at 0 with
//     the daemon) and rate (pulses per second since the previous poll),
//     and with scale (units per pulse, e.g. litres) key (default value,
//     count × scale) and key_rate (rate × scale, per second).
//   - output: an adapter.Caller with the RPC methods set (params true,
//     false, 1, 0, "on", "off" or {"value": ...}), toggle and get, each
//     answering {"value": level}, and an adapter.AttributeWriter for the
//     shared attribute named key (default level); initial drives a level
//     at the first use. Polls send the level under key: read back from
//     the pin, except on periph's character-device lines, whose Read
//     would turn the output into an input, where it is the level last
//     driven.
//
// pull (up, down, none) sets an input's or counter's bias, active_low
// inverts a line (a contact to ground with a pull-up reads true when
// closed; true drives an output low). A line is configured at the first
// poll or watch, not by Source.
package gpio
