// Package bridge is Ferry's replication engine: it carries records from
// the edge log to an upstream (a core Kafka cluster in bridge/kafka, the
// only target so far; future ones, ThingsBoard or MQTT, would plug in the
// same way) and survives link outages, power cuts and upstream restarts
// without losing or, where the upstream allows, duplicating a record.
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
// (Topic.Stats().DroppedUnreplicated, the bridge's records_dropped) and
// logged.
//
//	edge log ──ReadRecords──▶ cursors ──Batch──▶ Conn.Send ──ack──▶ checkpoints ──▶ state store
//	   ▲                                                              │               + SetHold
//	   └────────────────────── retention keeps offsets ≥ hold ◀───────┘
//
// A target whose upstream stores checkpoints itself (Kafka exactly-once:
// in the same transaction as the records) has Conns that are
// Checkpointers: their checkpoints, read on every connect, win over the
// local ones, so a crash between the upstream commit and the local write
// never resends. Targets without (Kafka at-least-once; a future MQTT or
// ThingsBoard target) rely on the local checkpoints: at least once.
//
// # Targets
//
// A Target connects; a Conn sends and closes. Everything else is an
// optional single-method interface the engine discovers by type
// assertion: Checkpointer (upstream checkpoints), Limited (the session's
// batch limits and the largest record the upstream takes: Kafka's
// max.message.bytes; a future MQTT target would want few records per
// Send, as many as it keeps in flight), WireCounter on the Target (bytes
// on the wire, ferry_bridge_wire_bytes_total).
// Errors wrapping ErrMisconfigured (credentials or certificates refused,
// a missing upstream feature) are retried at MaxBackoff only and logged
// once per cause.
//
// # Records the upstream refuses for good
//
// A record larger than the Conn's Limits.MaxRecordBytes, or one a Send
// reports in a *RejectedError, is passed over rather than retried forever:
// the next batch passes over it (Batch.Rejected) and its progress moves
// past it, so a target storing checkpoints upstream records the rejection in
// the same transaction as that checkpoint; before that batch is sent the
// record's provenance is appended to the local RejectedTopic (if that
// fails the batch is not sent: the round fails like a log read error and
// is retried, so no record is passed over without it); once it is
// acknowledged the rejection is counted (Status.RecordsRejected,
// ferry_bridge_records_rejected_total) and logged, at most once a minute.
// When the upstream refused a whole batch without saying which record is
// at fault (Suspect), the engine sends the suspects' partitions in
// batches of half the size, doubling again after each acknowledgement,
// until the guilty record travels alone.
//
// # Link behaviour
//
// Connect failures and send failures back off exponentially with jitter
// (Backoff doubling to MaxBackoff, each delay ×0.8–1.2; back to Backoff
// after a session that delivered something). Status.State is
// backing_off meanwhile, stalled for the backoff after a watchdog
// failure, connected while a session works. A watchdog bounds every Send
// with StallTimeout: a link that looks up but acknowledges nothing while
// records wait is a failure, and the engine reconnects. Long before that —
// once a Send has waited a quarter of StallTimeout — the state says
// stalled (with Status.WaitingSince and the reason), so a dead upstream is
// never shown connected for the whole timeout; an acknowledgement turns it
// connected again.
//
// # An upstream that was reset
//
// At every connect to an upstream that keeps checkpoints, a partition the
// bridge had sent from but for which the upstream holds no checkpoint (a
// reinstalled cluster, a deleted checkpoint topic), or one behind the
// local checkpoint, is reported loudly: Status.UpstreamReset,
// ferry_bridge_upstream_resets_total and an error line. With none the
// bridge goes on from its local checkpoint (a metered link is not made to
// carry the history unasked); Resend (POST /api/v1/bridges/{name}/resend)
// sends a partition again from any offset the edge still holds. RateLimit caps the bytes handed to
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
// # Memory
//
// A batch holds at most MaxBatchBytes of record bytes (lowered by the
// Conn's Limits; a single larger record travels alone), and the engine
// holds at most two: the one in flight and the prefetched next one. The
// records point into the decoded stored batches they came from, so those
// stay alive with them; reads are stepped (64 KiB of stored bytes at a
// time) so little more is decoded than the batch takes.
//
// # Goroutines
//
// One run goroutine per Engine, started by Start and stopped by Close
// (which cancels a Send in flight and waits). While a Send is in flight
// the run goroutine has a second one read the next batch from the log
// (prefetch: it reads only a plan copied from the cursors and the log, is
// joined before the cursors move or the plan's maps change, and stops
// early when the engine closes), so log decompression overlaps the
// upstream's round trips. Targets own nothing else that outlives a Conn.
package bridge
