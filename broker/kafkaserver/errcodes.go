package kafkaserver

import (
	"errors"
	"reflect"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

// codeFor maps a log error to the Kafka error code a client acts on.
func codeFor(err error) int16 {
	var full *commitlog.FullError
	var se *commitlog.StorageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, commitlog.ErrUnknownTopic), errors.Is(err, commitlog.ErrUnknownPartition):
		// ErrTopicDeleted matches ErrUnknownTopic: a topic deleted under a
		// request is unknown to the client, not a retriable shutdown.
		return kerr.UnknownTopicOrPartition.Code
	case errors.Is(err, commitlog.ErrOffsetOutOfRange):
		return kerr.OffsetOutOfRange.Code
	case errors.Is(err, commitlog.ErrRecordTooLarge):
		return kerr.MessageTooLarge.Code
	case errors.Is(err, commitlog.ErrInvalidBatch):
		// Well framed but against the rules (Kafka's InvalidRecordException):
		// producers do not retry it. Before ErrCorruptBatch, which it matches.
		return kerr.InvalidRecord.Code
	case errors.Is(err, commitlog.ErrCorruptBatch):
		// Damaged bytes: retriable, the producer sends the batch again.
		return kerr.CorruptMessage.Code
	case errors.Is(err, commitlog.ErrNullKey):
		return kerr.InvalidRecord.Code
	case errors.As(err, &full):
		// Retriable: the producer retries until retention frees space.
		return kerr.KafkaStorageError.Code
	case errors.As(err, &se):
		return kerr.KafkaStorageError.Code
	case errors.Is(err, commitlog.ErrClosed):
		// Shutting down: retriable, the client reconnects after restart.
		return kerr.NotLeaderForPartition.Code
	default:
		return kerr.UnknownServerError.Code
	}
}

// firstErrorCode finds the first non-zero ErrorCode field in a response,
// depth first: for the requests metric, and for unsupported answers, whose
// every code is the same.
func firstErrorCode(resp any) int16 {
	return walkErr(reflect.ValueOf(resp), 0)
}

// maxErrDepth bounds walkErr: every step into a pointer, slice or slice
// element counts one, so 8 reaches codes three slices deep
// (WriteTxnMarkers: Markers, Topics, Partitions).
const maxErrDepth = 8

func walkErr(v reflect.Value, depth int) int16 {
	if depth > maxErrDepth {
		return 0
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return 0
		}
		return walkErr(v.Elem(), depth+1)
	case reflect.Struct:
		if f := v.FieldByName("ErrorCode"); f.IsValid() && f.Kind() == reflect.Int16 && f.Int() != 0 {
			return int16(f.Int())
		}
		for i := 0; i < v.NumField(); i++ {
			f := v.Field(i)
			if f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Struct {
				if c := walkErr(f, depth+1); c != 0 {
					return c
				}
			}
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			if c := walkErr(v.Index(i), depth+1); c != 0 {
				return c
			}
		}
	}
	return 0
}
