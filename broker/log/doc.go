// Package log is Ferry's durable, partitioned, Kafka-style message log,
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
// retried.
//
// A segment rolls with its data and indexes fsynced and the new file's
// directory entry fsynced, so after a crash only the last (active)
// segment may hold unsynced bytes. A clean shutdown writes the active
// segment's indexes and marks state.json clean, and the next open reads
// only metadata. After an unclean shutdown the active segment is validated
// batch by batch (framing, CRC, dense offsets) and truncated at the first
// invalid or partial batch; sealed segments get an O(1) index check and a
// rescan only when it fails. A damaged sealed segment is reported and
// skipped, never fatal. Open reports what it did per partition
// (Partition.Recovery).
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
package log
