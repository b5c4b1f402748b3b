package commitlog

import (
	"errors"
	"fmt"
)

// Sentinel errors. Typed errors below wrap them, so callers test with
// errors.Is and extract details with errors.As.
var (
	// ErrClosed is returned by every call on a closed log, topic or partition.
	ErrClosed = errors.New("commitlog: closed")
	// ErrUnknownTopic means the topic does not exist.
	ErrUnknownTopic = errors.New("commitlog: unknown topic")
	// ErrUnknownPartition means the topic exists but has no partition of
	// that number. It is distinct from ErrUnknownTopic; Kafka answers both
	// with UNKNOWN_TOPIC_OR_PARTITION.
	ErrUnknownPartition = errors.New("commitlog: unknown partition")
	// ErrTopicDeleted is returned by calls on a partition whose topic was
	// deleted (appends that were queued, reads, long polls). It matches
	// both ErrUnknownTopic and ErrClosed with errors.Is, so callers that
	// treat either as "gone" keep doing so.
	ErrTopicDeleted error = deletedError{}
	// ErrTopicExists means CreateTopic found the topic already there.
	ErrTopicExists = errors.New("commitlog: topic already exists")
	// ErrInvalidConfig wraps every configuration problem.
	ErrInvalidConfig = errors.New("commitlog: invalid config")
	// ErrLogFull means a reject_new topic reached its size limit or the
	// disk's free-space floor; appends fail until space frees up.
	ErrLogFull = errors.New("commitlog: full")
	// ErrOffsetOutOfRange means a read asked for an offset below the log
	// start or above the high watermark.
	ErrOffsetOutOfRange = errors.New("commitlog: offset out of range")
	// ErrRecordTooLarge means one record cannot fit in a batch, or a raw
	// batch is above its topic's max_batch_bytes (or MaxBatchSize).
	ErrRecordTooLarge = errors.New("commitlog: record too large")
	// ErrNullKey means a record without a key was appended to a compacted topic.
	ErrNullKey = errors.New("commitlog: compacted topic requires a key")
	// ErrLimit means a topic or partitions were not created because the
	// log's cap on topics or partitions would be passed (LimitError).
	ErrLimit = errors.New("commitlog: limit reached")
)

// LimitError says which cap refused creating a topic or partitions. It
// wraps ErrLimit.
type LimitError struct {
	What  string // "topics" or "partitions"
	Limit int    // the cap
	Have  int    // held now
	Want  int    // asked for in addition
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("commitlog: %s limit reached: %d held, %d more asked for, the cap is %d", e.What, e.Have, e.Want, e.Limit)
}

func (e *LimitError) Unwrap() error { return ErrLimit }

type deletedError struct{}

func (deletedError) Error() string { return "commitlog: topic deleted" }

// Is makes a deleted topic both unknown and closed.
func (deletedError) Is(target error) bool { return target == ErrUnknownTopic || target == ErrClosed }

// FullError says which limit refused an append. It wraps ErrLogFull.
type FullError struct {
	Topic     string
	Partition int32
	// Reason is "retention_bytes" or "disk_free" (on_full=reject_new), or
	// "disk_full": a write found no room on the filesystem (Err), for
	// every topic, until space returns.
	Reason string
	Err    error
}

func (e *FullError) Error() string {
	if e.Reason == "disk_full" {
		return fmt.Sprintf("commitlog: %s/%d: the disk is full, appends are refused until space returns: %v", e.Topic, e.Partition, e.Err)
	}
	return fmt.Sprintf("commitlog: %s/%d full (%s limit reached, on_full=reject_new)", e.Topic, e.Partition, e.Reason)
}

func (e *FullError) Unwrap() error { return ErrLogFull }

// errDiskFull is the cause of appends refused during a full-disk spell.
var errDiskFull = errors.New("a write found no room on the filesystem")

// StorageError is the sticky error of a partition whose write or fsync
// failed: every later append returns it, and it is never retried, because
// after a failed fsync the kernel may have dropped the dirty pages.
type StorageError struct {
	Topic     string
	Partition int32
	Op        string // "write", "fsync", "roll", ...
	Err       error
}

func (e *StorageError) Error() string {
	return fmt.Sprintf("commitlog: %s/%d: %s failed, partition is read-only until restart: %v", e.Topic, e.Partition, e.Op, e.Err)
}

func (e *StorageError) Unwrap() error { return e.Err }
