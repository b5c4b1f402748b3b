// Package streams runs Kafka Streams-style pipelines on the local log:
// a topology of sources (topics), stateless steps (filter, map, flat-map,
// re-key), stateful steps (windowed aggregation by event time with a
// grace period, alerts with hysteresis, a table of the latest values per
// key and a stream-table join) and sinks (topics).
//
// # Records
//
// A pipeline reads the records devices produce: key = device name, value
// = {"ts":..,"values":{..}} (ThingsBoard's shape, parsed by package
// thingsboard), timestamp = the event time, headers device, device_type,
// gateway. Outputs have the same shape, so they are consumed, bridged and
// read over HTTP like any topic.
//
// # Time and windows
//
// Stream time is the largest record timestamp a pipeline has seen.
// Tumbling and hopping windows are aligned to the epoch, [start, end); a
// window closes once stream time reaches end + grace, and a record whose
// every window has closed is late. A session window is the records of a
// key separated by less than the inactivity gap; it closes once stream
// time passes its last record + gap + grace. These are Kafka Streams'
// rules (KStreamWindowAggregate, KStreamSessionWindowAggregate). Late
// records go, whole, to the pipeline's "<name>.late" topic: counted and
// kept, never silently dropped.
//
// # Exactly once
//
// A pipeline's input positions, state changes and outputs advance
// together through one commit protocol on the pipeline's changelog, a
// compacted one-partition topic "<name>.changelog":
//
//  1. the state entries changed since the last commit, then one commit
//     marker (key "\x00commit") holding the commit's sequence number, the
//     next input offset of every input partition, the stream time, the
//     commit's output records and the high watermark of each output
//     partition before them, are appended in one call and waited for;
//  2. the outputs are appended to their topics, each with headers
//     ferry.stream = the pipeline and ferry.commit = "seq.index", and
//     waited for.
//
// At start the changelog is replayed: state entries count only once a
// marker follows them (entries after the last marker belong to a commit
// that never finished and are overwritten by the next one); then the last
// marker's outputs are finished — each output partition is scanned from
// the recorded high watermark for this pipeline's records of that
// commit, and only the missing ones are appended — and reading resumes
// at the marker's offsets. A crash at any point therefore leaves every
// output exactly once. A failed append anywhere makes the pipeline start
// over from its changelog after a backoff, which is the same recovery.
//
// A full output topic (on_full: reject_new) pauses the pipeline until
// there is room; nothing is dropped. A step that fails on a record (an
// expression error) writes the record and its provenance (topic,
// partition, offset, step, error) to "<name>.dlq" and goes on.
package streams
