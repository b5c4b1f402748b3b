package adapter

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// Reading is what one poll (or one event) of a device produced.
type Reading struct {
	// Time is when the values were sampled; zero means when Read returned.
	Time time.Time
	// Telemetry are the time-series values, in the device's key order.
	Telemetry []tb.KV
	// Attributes are client attributes read along (nil: none read).
	Attributes []tb.KV
}

// Source is a device an adapter polls. Read is called from the device's
// bus goroutine only, never concurrently with the bus's other calls; it
// must return by the source's own timeout (or when ctx ends). The adapter
// keeps nothing of a Reading's slices once it has handled it, so a
// source may reuse them at its next Read.
type Source interface {
	Read(ctx context.Context) (Reading, error)
}

// Caller is a Source that answers server-side RPC. It returns
// ErrUnknownMethod (wrapped) for a method it has no entry for.
type Caller interface {
	Call(ctx context.Context, method string, params json.RawMessage) (json.RawMessage, error)
}

// AttributeWriter is a Source that maps shared attribute updates to
// writes. handled is false for a key it has no entry for.
type AttributeWriter interface {
	WriteAttribute(ctx context.Context, key string, v tb.Value) (handled bool, err error)
}

// Watcher is a Source whose readings (also) come as events, such as GPIO
// edges. Watch runs on its own goroutine until ctx ends, calling emit
// for each event; emit may be called from any goroutine.
type Watcher interface {
	Watch(ctx context.Context, emit func(Reading)) error
}

// Error kinds, the label of ferry_adapter_poll_errors_total.
const (
	KindTimeout    = "timeout"    // the device did not answer in time
	KindException  = "exception"  // the device answered with an error (a Modbus exception)
	KindProtocol   = "protocol"   // a garbled, mismatched or unexpected answer
	KindConnection = "connection" // the line or endpoint is down (connect refused, port missing)
	KindDevice     = "device"     // any other device or driver failure
	KindRequest    = "request"    // a bad RPC or attribute write (unknown method, bad params)
)

// Error is a failure of a known kind.
type Error struct {
	Kind string
	Err  error
}

func (e *Error) Error() string { return e.Kind + ": " + e.Err.Error() }

func (e *Error) Unwrap() error { return e.Err }

// Errorf wraps err as a failure of kind.
func Errorf(kind string, err error) error { return &Error{Kind: kind, Err: err} }

// KindOf is err's kind: the Kind of the first *Error in its chain, a
// context deadline as KindTimeout, else KindDevice.
func KindOf(err error) string {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e.Kind
	case errors.Is(err, context.DeadlineExceeded):
		return KindTimeout
	}
	return KindDevice
}

// Sentinel errors.
var (
	// ErrUnknownMethod: the device has no RPC entry for the method.
	ErrUnknownMethod = errors.New("adapter: no rpc entry for this method")
	// ErrUnknownDevice: no adapter device has this name.
	ErrUnknownDevice = errors.New("adapter: unknown device")
	// ErrNotSupported: the device's source takes no RPC or attribute writes.
	ErrNotSupported = errors.New("adapter: the device takes no writes")
	// ErrClosed: the manager is closed.
	ErrClosed = errors.New("adapter: closed")
	// ErrInvalidConfig wraps every configuration problem New reports.
	ErrInvalidConfig = errors.New("adapter: invalid config")
)

// Sleep waits d, or until ctx ends (then it returns ctx's error): the one
// wait every source and line uses between the steps of a read.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
