package sim

import (
	"errors"
	"fmt"
	"net"
	"strings"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// Sentinel errors. The typed errors below wrap them, so callers test with
// errors.Is and extract details with errors.As.
var (
	// ErrInvalidConfig wraps every configuration problem (each a *configs.FieldError).
	ErrInvalidConfig = errors.New("sim: invalid config")
	// ErrRefused means the broker refused a device's CONNECT with a return
	// code that retrying cannot fix, such as a bad token (see RefusedError).
	ErrRefused = errors.New("sim: connection refused")
	// ErrProvision means self-provisioning failed: the server answered
	// with a failure status, answered nothing, or answered nonsense (see
	// ProvisionError).
	ErrProvision = errors.New("sim: provisioning failed")
)

// RefusedError is a CONNECT the broker refused for good. It wraps
// ErrRefused.
type RefusedError struct {
	Device int
	Code   byte // the MQTT 3.1.1 CONNACK return code
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("sim: device %d: broker refused connection: return code %d (%s)",
		e.Device, e.Code, packets.ConnackReturnCodes[e.Code])
}

func (e *RefusedError) Unwrap() error { return ErrRefused }

// ProvisionError is a failed self-provisioning. It wraps ErrProvision.
type ProvisionError struct {
	Device  int
	Status  string // the server's "status" (NOT_FOUND, FAILURE, ...), or TIMEOUT / INVALID
	Message string // the server's "errorMsg", or what went wrong
}

func (e *ProvisionError) Error() string {
	return fmt.Sprintf("sim: device %d: provisioning failed: %s: %s", e.Device, e.Status, e.Message)
}

func (e *ProvisionError) Unwrap() error { return ErrProvision }

// connectRetryable decides whether a failed first connect is worth
// retrying, from the CONNACK return code paho reports.
func connectRetryable(code byte) bool {
	switch code {
	case packets.ErrNetworkError:
		// Dial failed, TLS failed or the connection dropped before the
		// CONNACK: the broker may be starting or restarting.
		return true
	case packets.ErrRefusedServerUnavailable:
		// The broker says it cannot serve now (ThingsBoard also uses it
		// for rate limits): retry later.
		return true
	case packets.ErrRefusedBadUsernameOrPassword, packets.ErrRefusedNotAuthorised, packets.ErrRefusedIDRejected:
		// Wrong token or client id: every retry gets the same answer.
		return false
	default:
		// Unsupported protocol version, protocol violation, unknown code:
		// the peer is not a usable MQTT 3.1.1 broker.
		return false
	}
}

// Outcome is what became of one published message.
type Outcome uint8

// Outcomes. Every message Run published gets exactly one.
const (
	// Acked: the broker acknowledged the message (PUBACK for QoS 1; for
	// QoS 0, written to the socket) on the connection it was published on.
	Acked Outcome = iota + 1
	// Unconfirmed: the connection changed or closed between Publish and
	// completion, so the message may or may not have been stored (paho
	// may have re-sent it, and may even have reported success for the old
	// attempt, see eclipse/paho.mqtt.golang#563).
	Unconfirmed
	// Failed: the message was certainly not handed to the broker.
	Failed
)

func (o Outcome) String() string {
	switch o {
	case Acked:
		return "acked"
	case Unconfirmed:
		return "unconfirmed"
	case Failed:
		return "failed"
	default:
		return fmt.Sprintf("Outcome(%d)", uint8(o))
	}
}

// classify decides a publish's outcome from its token error, whether the
// connection epoch was unchanged between Publish and completion, and
// whether the device gave up waiting (the token never completed).
func classify(err error, sameEpoch, abandoned bool) Outcome {
	switch {
	case abandoned:
		// paho stopped without completing the token (a Disconnect during a
		// reconnect skips messageIds.cleanUp): it may have been stored.
		return Unconfirmed
	case err == nil && sameEpoch:
		// PUBACK on the connection the message was sent on.
		return Acked
	case err == nil:
		// Completed across a reconnect: resume() completes the old token
		// with nil *before* the re-sent copy is acknowledged (#563).
		return Unconfirmed
	case errors.Is(err, mqtt.ErrNotConnected):
		// Refused before it was stored or written.
		return Failed
	case strings.Contains(err.Error(), "no message IDs available"),
		strings.Contains(err.Error(), "unknown payload type"):
		// Refused before it was stored or written.
		return Failed
	case strings.Contains(err.Error(), "connection lost before Publish completed"),
		strings.Contains(err.Error(), "publish was broken by timeout"):
		// Written (or stored for a resend) but never acknowledged.
		return Unconfirmed
	case errors.As(err, new(*net.OpError)):
		// The write to a dying connection failed (broken pipe, reset):
		// paho stored the message before writing it and keeps it for the
		// resend after the reconnect, so it may yet arrive.
		return Unconfirmed
	default:
		// Anything paho adds later: unknown, so counted as a failure so
		// that it is noticed.
		return Failed
	}
}
