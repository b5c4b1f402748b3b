package bridge

import (
	"context"
	"errors"
	"fmt"
)

// Target is one kind of upstream.
type Target interface {
	// Connect opens a session with the upstream. It may fence a previous
	// instance (Kafka: a new producer epoch for the transactional id).
	Connect(ctx context.Context) (Conn, error)
}

// Conn is a connected session. What a Conn can do beyond sending is
// discovered by type assertion on the optional interfaces below
// (Checkpointer, Limited), and on the Target (WireCounter).
type Conn interface {
	// Send delivers b and returns nil once the upstream acknowledged all of
	// it. On error nothing of b may be counted as delivered. A
	// *RejectedError says the upstream refused some records for good; any
	// other error fails the session (the engine closes it, backs off and
	// reconnects).
	Send(ctx context.Context, b *Batch) error
	// Close ends the session (an unfinished Send is abandoned).
	Close() error
}

// Checkpointer is a Conn whose upstream stores checkpoints itself, in the
// same atomic write as the records (Kafka exactly-once). Its checkpoints
// win over the local ones on every connect. A Conn without it (Kafka
// at-least-once; a future MQTT or ThingsBoard target) relies on the local
// checkpoints: at least once, a crash resends what the last local write
// missed.
type Checkpointer interface {
	// Checkpoints returns the progress the upstream stored for tps (only
	// those it knows; nil when it keeps none).
	Checkpoints(ctx context.Context, tps []TP) (map[TP]Progress, error)
}

// Limited is a Conn with limits of its own, learnt from the upstream or
// fixed by its protocol (Kafka: the largest record max.message.bytes
// leaves room for; a future MQTT target: small batches, as many records
// as it keeps in flight, and the broker's maximum packet size).
type Limited interface {
	Limits() Limits
}

// Limits bound what the engine hands one Send; zero fields leave the
// engine's configuration alone, smaller ones win over it.
type Limits struct {
	MaxBatchBytes   int // key, value and header bytes per Send
	MaxBatchRecords int // records per Send
	// MaxRecordBytes is the largest record (key, value and header bytes)
	// the upstream can take: a larger one is rejected without being sent,
	// as if the upstream had refused it (see RejectedError).
	MaxRecordBytes int
}

// WireCounter is a Target that counts the bytes it writes to the upstream
// (after compression, protocol overhead and retries included), as opposed
// to the record bytes the engine counts.
type WireCounter interface {
	WireBytes() int64
}

// ErrMisconfigured marks a Connect or Send error that retrying cannot cure
// until someone changes the configuration or the upstream: credentials
// refused, a certificate not trusted, an upstream without the transactions
// exactly-once needs. The engine keeps retrying, but at MaxBackoff only,
// and logs each distinct cause once.
var ErrMisconfigured = errors.New("bridge: the upstream refuses this configuration")

// Rejected is a record the upstream refused for good. As JSON it is the
// body of a rejected-topic record (which adds the bridge and the time of
// the rejection): the field order is that format's.
type Rejected struct {
	TP
	Offset int64 `json:"offset"`

	// Filled by the engine when it passes over the record.
	Timestamp int64  `json:"timestamp"` // the record's timestamp (ms)
	Key       []byte `json:"key"`       // the record's key
	Bytes     int    `json:"bytes"`     // key, value and header bytes

	Reason string `json:"reason"`
	// Through is the last offset of a run of offsets passed over together
	// (damage on the edge's disk), 0 for a single record.
	Through int64 `json:"through,omitempty"`
}

// Records is how many offsets r stands for.
func (r Rejected) Records() int64 {
	if r.Through > r.Offset {
		return r.Through - r.Offset + 1
	}
	return 1
}

// RejectedError is what Send returns when the upstream refused records of
// the batch for good (Kafka: MESSAGE_TOO_LARGE, INVALID_RECORD; a future
// MQTT target: a PUBACK with reason 0x95 packet too large): sending them
// again can never succeed. As with any Send error nothing of the batch
// counts as delivered, but the session stays usable: the engine sends the
// batch again without the rejected records, which it passes over (counted in
// Status and the metrics, logged, their provenance appended to the local
// rejected topic first), and the checkpoint moves past them with the next
// acknowledged batch — in the same transaction, for a target that stores
// checkpoints upstream (Batch.Rejected), so a rejected record is never
// sent again and never silently lost.
//
// A target that cannot tell the guilty records from innocent ones refused
// with them (Kafka refuses a whole partition batch) names them all and
// sets Suspect: the engine then sends those partitions in smaller and
// smaller batches, and passes over only a record refused in a batch of its own.
type RejectedError struct {
	Records []Rejected
	Suspect bool
	Err     error // the upstream's answer
}

func (e *RejectedError) Error() string {
	what := "refused"
	if e.Suspect {
		what = "refused a batch holding"
	}
	return fmt.Sprintf("bridge: the upstream %s %d record(s) for good: %v", what, len(e.Records), e.Err)
}

func (e *RejectedError) Unwrap() error { return e.Err }
