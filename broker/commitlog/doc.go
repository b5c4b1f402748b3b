// Package commitlog is Ferry's durable, partitioned, Kafka-style message log,
// tuned for SD cards and SATA disks: every byte is appended sequentially,
// many producers share one fsync (group commit), and the bytes on disk are
// Kafka RecordBatch v2, so the Kafka listener can serve them unchanged and
// bridges can forward them.
//
// # Layout
//
//	<dir>/<topic>/topic.json                     name and TopicConfig, replaced atomically
//	<dir>/<topic>/<partition>/state.json         clean flag, next offset, log clock, segment ages
//	<dir>/<topic>/<partition>/<base>.log         record batches, back to back, as on the wire
//	<dir>/<topic>/<partition>/<base>.index       sparse offset index
//	<dir>/<topic>/<partition>/<base>.timeindex   sparse time index
//
// <base> is the segment's first offset, zero-padded to 20 digits, as Kafka
// names segments. Directories starting with "." are interrupted creations
// or deletions and are removed on open; "*.tmp" and "*.cleaned" files are
// interrupted atomic writes and compactions.
//
// # RecordBatch v2 (all integers big-endian)
//
//	offset  size  field
//	     0     8  baseOffset            assigned by the log at append
//	     8     4  batchLength           bytes after this field (total = batchLength + 12)
//	    12     4  partitionLeaderEpoch  always 0 here
//	    16     1  magic                 2
//	    17     4  crc                   CRC-32C (Castagnoli) of bytes 21..end
//	    21     2  attributes            bits 0-2 codec, 3 timestamp type, 4 transactional, 5 control
//	    23     4  lastOffsetDelta       offsets base..base+delta belong to the batch
//	    27     8  baseTimestamp
//	    35     8  maxTimestamp
//	    43     8  producerId            -1 unless a Kafka producer set it
//	    51     2  producerEpoch
//	    53     4  baseSequence
//	    57     4  recordsCount
//	    61     …  records               compressed as a whole when a codec is set
//	           ├── crc covers 21..end ──┤
//
// Each record is: length varint, attributes int8, timestampDelta varlong,
// offsetDelta varint, key (varint length, -1 = null), value (varint
// length, -1 = null: a tombstone), header count varint, then per header a
// key (varint length + UTF-8) and a value (varint length, -1 = null). The
// varints are zig-zag, as in Protobuf.
//
// Index entries (Kafka's formats): .index holds 8-byte entries (offset of
// the last record of the batch at position, relative to <base>, uint32;
// position, uint32), one for the first batch of the segment and then one
// every IndexIntervalBytes; .timeindex holds 12-byte entries (largest
// timestamp so far, int64; relative last offset of the batch that brought
// it, uint32) with increasing timestamps, plus a final entry when the
// segment is sealed.
//
// # Durability
//
// One committer goroutine writes every partition (see commit.go). An
// append is acknowledged after the commit cycle that wrote it: after its
// fsync for flush=always, after the write for interval and never. The
// high watermark readers see moves only when a record is acknowledged.
// The first failed write or fsync is sticky for the partition and never
// retried. When a cycle is cut is the commit policy's choice (policy.go):
// at once when it is worth an fsync or every known producer (Source) is
// waiting, otherwise within the acknowledgement delay budget
// (WithAckDelay), so that fleets of slow publishers share their fsyncs.
// The active segment's blocks are reserved ahead of its writes without
// changing its size (WithPreallocate).
//
// A segment rolls with its data and indexes fsynced and the new file's
// directory entry fsynced, so after a crash only the last (active)
// segment may hold unsynced bytes. A clean shutdown writes the active
// segment's indexes and marks state.json clean, and the next open reads
// only metadata. After an unclean shutdown the active segment is validated
// batch by batch (framing, CRC, dense offsets) and truncated at the first
// invalid or partial batch (RecoveryReport.TruncatedBytes and
// TruncateReason say what was cut and why); sealed segments get an O(1)
// index check and a rescan only when it fails. A damaged sealed segment is
// reported and skipped, never fatal: one that cannot even be opened or
// sized stays in the list as an empty placeholder whose offsets are
// reported lost, and a rebuilt index that cannot be written is served from
// memory and rebuilt on the next open. Open reports what it did per
// partition (Partition.Recovery) and counts it (Log.Stats).
//
// Every index lookup checks the entry it starts from against the batch
// header at the entry's position (repair.go), so a wrong entry in the
// middle of an index, which the open-time check cannot see, costs one scan
// from the segment start and a rebuild of that segment's indexes (files
// replaced atomically), never a wrong answer or a false damage report.
// Reads, time lookups and the Kafka listener skip damage the same way.
//
// # Cleanup policies
//
// cleanup_policy is delete (default), compact, or compact,delete, with
// Kafka's meaning: age retention and retention_bytes apply only when the
// policy includes delete; a compact-only topic keeps its newest record per
// key however old or large it grows, and retention_bytes does not make a
// compact-only reject_new topic refuse appends. The free-disk floor
// protects the device whatever the policy: it deletes the oldest sealed
// segments of overwrite_oldest delete topics first (rolling their active
// segments when that is all they hold) and only when those have nothing
// left drops the oldest segments of compact-only overwrite_oldest topics,
// counted like any overwrite_oldest drop; reject_new topics of either
// policy refuse appends below the floor.
//
// # Deleting a topic
//
// DeleteTopic waits for a running retention or compaction pass, commits
// what was queued, then releases the segments. Every later call on the old
// partitions (appends, reads, time lookups, long polls, which it wakes)
// fails with ErrTopicDeleted, which matches ErrUnknownTopic and ErrClosed.
//
// All file I/O goes through package vfs, whose Mem filesystem simulates
// power cuts and whose ErrorFS injects a fault at any operation.
//
// # Time
//
// Retention by age requires a segment to be old both by its records'
// timestamps (wall clock) and by the log's own clock, a millisecond count
// that advances with the monotonic clock while the log is open and is
// persisted in state.json. A Raspberry Pi without a real-time clock that
// jumps years forward at NTP sync therefore deletes nothing early.
package commitlog
