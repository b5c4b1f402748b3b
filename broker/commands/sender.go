package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

// Sender delivers one command to a device as a ThingsBoard server-side RPC
// and returns the device's answer. The gateway adapts (*mqtt.Server).RPC.
//
// RPC must return when ctx ends. Its errors must wrap (errors.Is) one of
// ErrOffline, ErrUnknownDevice or ErrTimeout when they mean that; any
// other error answers the command with status "error".
type Sender interface {
	RPC(ctx context.Context, r Request) (json.RawMessage, error)
}

// Request is one command to deliver.
type Request struct {
	Device  string
	Method  string
	Params  json.RawMessage // nil when the command had no "params"
	Timeout time.Duration   // how long to wait for the answer
	OneWay  bool            // do not wait for an answer
}

// Sentinel errors.
var (
	// ErrOffline is what a Sender returns when the device cannot take an
	// RPC now: not connected, not subscribed to RPC requests, or the
	// broker is shutting down. The command waits and is retried (see the
	// package doc) until it expires.
	ErrOffline = errors.New("commands: device not reachable")
	// ErrUnknownDevice is what a Sender returns for a device it does not
	// know. The command is answered at once with status "error".
	ErrUnknownDevice = errors.New("commands: unknown device")
	// ErrTimeout is what a Sender returns when the device did not answer
	// within Request.Timeout. The command is answered "timeout".
	ErrTimeout = errors.New("commands: device did not answer in time")

	// ErrInvalidCommand wraps every *InvalidError.
	ErrInvalidCommand = errors.New("commands: invalid command")
	// ErrInvalidConfig wraps every *configs.FieldError of Config.Validate.
	ErrInvalidConfig = errors.New("commands: invalid config")
	// ErrClosed is returned by Start after Close, and by a second Start.
	ErrClosed = errors.New("commands: closed or already started")
)

// InvalidError is why a record is not a command. It wraps ErrInvalidCommand.
type InvalidError struct {
	Reason  string // metric label: no_key, too_large, not_object, bad_method, bad_field, unknown_device
	Problem string
}

func (e *InvalidError) Error() string { return fmt.Sprintf("%v: %s", ErrInvalidCommand, e.Problem) }

func (e *InvalidError) Unwrap() error { return ErrInvalidCommand }

// outcome is what a delivery attempt means for the command.
type outcome int

const (
	outcomeAnswered outcome = iota // the device answered (or a one-way command was sent)
	outcomeTimeout                 // delivered, no answer in time
	outcomeOffline                 // not delivered: wait and try again
	outcomeUnknown                 // the device does not exist
	outcomeFailed                  // any other failure: answered "error"
	outcomeStopped                 // the dispatcher is closing: leave it unfinished
)

// classify decides what a Sender's result means. It is the one place that
// decides what is retried.
func classify(ctx context.Context, err error) outcome {
	switch {
	case ctx.Err() != nil:
		// Closing: whatever the Sender said (usually ctx's error), the
		// command is not finished and is redelivered after a restart.
		return outcomeStopped
	case err == nil:
		return outcomeAnswered
	case errors.Is(err, ErrOffline):
		// Retried when the device may be back (DeviceOnline) or on the
		// backoff timer, until the command expires.
		return outcomeOffline
	case errors.Is(err, ErrTimeout):
		// Not retried: the device may have acted on it.
		return outcomeTimeout
	case errors.Is(err, ErrUnknownDevice):
		// Not retried: a command for a device that does not exist is a
		// bad command.
		return outcomeUnknown
	default:
		// Not retried: unknown errors are reported to the producer rather
		// than retried blindly.
		return outcomeFailed
	}
}

// appendAction is what to do after appending response records failed.
type appendAction int

const (
	appendRetry appendAction = iota // try again after a backoff
	appendStop                      // stop; the commands stay unfinished
	appendDrop                      // give up on the response; the commands are finished
)

// onAppendError decides what a failed append of response records leads
// to. It is the one place that decides what is retried.
func onAppendError(ctx context.Context, err error) appendAction {
	switch {
	case ctx.Err() != nil, errors.Is(err, commitlog.ErrClosed), errors.Is(err, commitlog.ErrUnknownTopic):
		// Closing, or the log or topic is gone: the commands stay
		// unfinished and are redelivered after a restart.
		return appendStop
	case errors.Is(err, commitlog.ErrRecordTooLarge), errors.Is(err, commitlog.ErrNullKey), errors.Is(err, commitlog.ErrInvalidConfig):
		// The same records would fail the same way forever (the caller
		// first retries a too-large response without its payload).
		return appendDrop
	default:
		// A full reject_new topic frees up as retention runs. A storage
		// error is sticky until restart, but retrying costs nothing and
		// keeps the command unfinished, which is what a restart needs.
		return appendRetry
	}
}
