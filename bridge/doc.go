// Package bridge is Ferry's replication engine: it carries records from
// the edge log to an upstream (a core Kafka cluster in bridge/kafka;
// ThingsBoard and MQTT targets plug in the same way) and survives link
// outages, power cuts and upstream restarts without losing or, where the
// upstream allows, duplicating a record.
//
// # The model
//
// Each replicated edge partition has a cursor: the next edge offset to
// send. The engine reads from every cursor, packs records (oldest first by
// default) into a Batch of at most MaxBatchBytes, hands it to the
// target's Conn.Send, and advances the cursors only after Send returned —
// that is, after the upstream acknowledged (Kafka: committed the
// transaction that carries the records and the new checkpoints). Then it
// stores the checkpoints in the state store and moves the partition's
// retention hold, so the log never deletes or compacts what is not yet
// upstream — unless the topic is on_full: overwrite_oldest and its size or
// the disk floor forces it; what is dropped that way is counted
// (Topic.Stats().DroppedUnreplicated, the bridge's records_skipped) and
// logged.
//
//	edge log ──ReadRecords──▶ cursors ──Batch──▶ Conn.Send ──ack──▶ checkpoints ──▶ state store
//	   ▲                                                              │               + SetHold
//	   └────────────────────── retention keeps offsets ≥ hold ◀───────┘
//
// A target whose upstream stores checkpoints itself (Kafka exactly-once:
// in the same transaction as the records) returns them from
// Conn.Checkpoints on every connect, and they win over the local ones: a
// crash between the upstream commit and the local write never resends.
//
// # Link behaviour
//
// Connect failures and send failures back off exponentially with jitter
// (Backoff → MaxBackoff). A watchdog bounds every Send with StallTimeout:
// a link that looks up but acknowledges nothing while records wait is a
// failure, and the engine reconnects. RateLimit caps the bytes handed to
// the target per second, for metered links.
//
// # Backlog order
//
// oldest_first (default) sends every partition's records in offset order:
// the upstream sees each key's records in order. live_first splits a
// partition that is more than LiveThreshold behind into a live range,
// which starts at the end of the log when the split happens and is sent
// first, and a backlog range below it that drains with the remaining
// budget of each batch. New readings reach the upstream at once after an
// outage, but a key's older records arrive after its newer ones:
// consumers that need order must sort by record timestamp or by the
// ferry.offset provenance header. The checkpoint then holds both ranges
// (Progress) and the retention hold stays at the backlog cursor.
//
// # Goroutines
//
// One run goroutine per Engine, started by Start and stopped by Close
// (which cancels a Send in flight and waits). While a Send is in flight
// the run goroutine has a second one read the next batch from the log
// (prefetch: it touches no engine state and is joined before the cursors
// move), so log decompression overlaps the upstream's round trips.
// Targets own nothing else that outlives a Conn.
package bridge
