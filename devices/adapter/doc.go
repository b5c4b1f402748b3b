// Package adapter runs the device adapters: devices Ferry reads itself
// (Modbus units, I²C and SPI sensors, 1-Wire probes, GPIO pins, kernel IIO
// sensors) instead of devices that publish over MQTT.
//
// A bus is the unit that must be serialized — a serial line with many
// Modbus unit ids behind it, a TCP endpoint, an I²C bus, the GPIO chip —
// and one goroutine per bus polls its devices in the order they fall due.
// Device phases are spread over their period at start, so 200 devices at
// 1 s are not all due in the same millisecond, and a poll that ran late
// keeps the device's phase (missed polls are skipped, never bunched).
// Server-side RPC and shared attribute writes queue for the bus and run
// between polls, ahead of them.
//
// A device that stops answering is retried with backoff (the next period,
// then two periods later) and, after DegradeAfter failed cycles in a row,
// left alone for DegradeFor (EMQX Neuron's "degrade"), probed once per
// spell until it answers: a dead unit costs its line one timeout per
// spell instead of one per period, and the other devices keep theirs.
//
// Every successful poll becomes at most one telemetry record through the
// Sink, carrying the poll's sample time; the report strategy (report.go)
// decides which of the values read go into it. Nothing is ever re-sent
// with a timestamp it was not read at. Attributes read from a device are
// stored when they change.
//
// Kinds of source implement Source (polled), and optionally Caller
// (RPC), AttributeWriter (shared attribute updates) and Watcher (event
// sources such as GPIO edges); the packages next to this one provide
// them.
package adapter
