package thingsboard

import (
	"errors"
	"fmt"
)

// ErrInvalidPayload is wrapped by every parse error. ThingsBoard raises an
// AdaptorException in the same situations, which the MQTT transport turns
// into PUBACK 0x99 (payload format invalid) for MQTT 5 sessions and into a
// disconnect for MQTT 3.x sessions (MqttTransportHandler
// sendResponseForAdaptorErrorOrCloseContext); the broker does the same.
var ErrInvalidPayload = errors.New("thingsboard: invalid payload")

// PayloadError says why and where a payload was refused. It wraps
// ErrInvalidPayload, so callers that only need the category test with
// errors.Is; logs and tests use the fields.
type PayloadError struct {
	// Offset is the byte offset in the payload (or topic) where the
	// problem was found, or -1 when it is not tied to a position (a missing
	// field, for example).
	Offset int
	// Reason is a short lower-case description.
	Reason string
}

func (e *PayloadError) Error() string {
	if e.Offset < 0 {
		return "thingsboard: invalid payload: " + e.Reason
	}
	return fmt.Sprintf("thingsboard: invalid payload at byte %d: %s", e.Offset, e.Reason)
}

// Unwrap returns ErrInvalidPayload.
func (e *PayloadError) Unwrap() error { return ErrInvalidPayload }

// invalid returns a PayloadError not tied to an offset.
func invalid(format string, args ...any) error {
	return &PayloadError{Offset: -1, Reason: fmt.Sprintf(format, args...)}
}
