package sim

import (
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/ferry-iot/ferry/configs"
)

// Payload shapes of ThingsBoard telemetry (see Telemetry for examples).
const (
	// ShapeObject is a flat key/value object, stored with server time.
	ShapeObject = "object"
	// ShapeArray is an array of flat objects, stored with server time.
	ShapeArray = "array"
	// ShapeTS is one {"ts":..,"values":{..}} object with device time.
	ShapeTS = "ts"
	// ShapeTSArray is an array of {"ts":..,"values":{..}} objects.
	ShapeTSArray = "ts-array"
)

// DefaultShapes returns every payload shape, in the order they rotate by
// default.
func DefaultShapes() []string {
	return []string{ShapeObject, ShapeArray, ShapeTS, ShapeTSArray}
}

// AtMostOnce is the Config.QoS value that asks for MQTT QoS 0. The zero
// value of Config.QoS means the default, QoS 1, so that a zero Config
// measures acknowledged delivery.
const AtMostOnce byte = 0x80

// Defaults, exported so the command can document them.
const (
	DefaultQoS              = 1
	DefaultInflight         = 1
	DefaultTokenFormat      = "sim-token-%d"
	DefaultDeviceNameFormat = "sim-device-%d"
	// MaxReconnectInterval caps paho's reconnect backoff and the backoff
	// of the first connect.
	MaxReconnectInterval = 10 * time.Second
)

// Config describes one simulation run. Zero fields take the defaults that
// EnsureDefaults documents; Run validates the config once and reports
// every problem at once.
type Config struct {
	// Broker is the MQTT server URL: tcp://host:port, or ssl://, ws://,
	// wss://, mqtt://, mqtts://, tls://, unix:// as paho supports them.
	Broker string
	// Devices is the number of simulated devices, one MQTT connection each.
	Devices int
	// Rate is telemetry messages per second per device; 0 sends as fast
	// as acknowledgements (and Inflight) allow.
	Rate float64
	// Messages is the number of telemetry messages per device; 0 sends
	// until the context ends.
	Messages int
	// QoS is 1 (the default, also chosen by 0) or AtMostOnce for QoS 0.
	// ThingsBoard supports no QoS 2.
	QoS byte
	// Inflight is the maximum of unacknowledged publishes per device
	// (default 1: publish, wait for the PUBACK, publish the next).
	Inflight int
	// TokenFormat gives device i's access token, fmt.Sprintf(TokenFormat, i)
	// (default "sim-token-%d"). Ignored with Provision.
	TokenFormat string
	// DeviceNameFormat gives device i's name and MQTT client id,
	// fmt.Sprintf(DeviceNameFormat, i) (default "sim-device-%d").
	DeviceNameFormat string
	// Provision makes every device self-provision with ProvisionKey and
	// ProvisionSecret and then log in with the token the server issued.
	Provision bool
	// ProvisionKey and ProvisionSecret are the device profile's
	// provisioning credentials; both are required with Provision.
	ProvisionKey, ProvisionSecret string
	// Shapes are the telemetry payload shapes to rotate: message seq uses
	// Shapes[seq%len(Shapes)] (default DefaultShapes()).
	Shapes []string
	// AttributesEvery sends client attributes after every N telemetry
	// messages; 0 never sends them.
	AttributesEvery int
	// AnswerRPC subscribes v1/devices/me/rpc/request/+ and answers every
	// server-side RPC on v1/devices/me/rpc/response/{id}.
	AnswerRPC bool
	// StartSpread spreads the devices' first connections evenly over this
	// long, so that a large fleet does not connect all at once.
	StartSpread time.Duration
	// Logger receives connection events (default: discard). Per-message
	// problems are counted, and logged at debug level only.
	Logger *slog.Logger
	// OnMessage, when set, is called exactly once for every telemetry
	// message Run published, with its outcome. It is called from many
	// goroutines at once and must be quick.
	OnMessage func(MessageResult)
}

// EnsureDefaults fills zero fields with their defaults.
func (c *Config) EnsureDefaults() {
	if c.QoS == 0 {
		c.QoS = DefaultQoS
	}
	if c.Inflight == 0 {
		c.Inflight = DefaultInflight
	}
	if c.TokenFormat == "" {
		c.TokenFormat = DefaultTokenFormat
	}
	if c.DeviceNameFormat == "" {
		c.DeviceNameFormat = DefaultDeviceNameFormat
	}
	if len(c.Shapes) == 0 {
		c.Shapes = DefaultShapes()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// wireQoS is the QoS put on the wire.
func (c *Config) wireQoS() byte {
	if c.QoS == AtMostOnce {
		return 0
	}
	return c.QoS
}

// Validate reports every problem at once, each a *configs.FieldError
// naming its Config field ("Broker") and wrapping ErrInvalidConfig. Call it
// after EnsureDefaults.
func (c *Config) Validate() error {
	p := configs.Problems{Kind: ErrInvalidConfig}
	bad := p.Add
	if c.Broker == "" {
		bad("Broker", "missing")
	} else if u, err := url.Parse(c.Broker); err != nil {
		bad("Broker", "%v", err)
	} else if !slices.Contains([]string{"tcp", "mqtt", "ssl", "tls", "mqtts", "mqtt+ssl", "tcps", "ws", "wss", "unix"}, u.Scheme) {
		bad("Broker", "scheme %q is not one paho supports (tcp, ssl, ws, wss, ...)", u.Scheme)
	}
	if c.Devices < 1 || c.Devices > 100000 {
		bad("Devices", "%d is outside 1..100000", c.Devices)
	}
	if c.Rate < 0 || c.Rate > 1e6 {
		bad("Rate", "%g is outside 0..1e6 messages per second", c.Rate)
	}
	if c.Messages < 0 {
		bad("Messages", "%d is negative", c.Messages)
	}
	if c.QoS != 1 && c.QoS != AtMostOnce {
		bad("QoS", "%d is not 1 or AtMostOnce (ThingsBoard supports QoS 0 and 1)", c.QoS)
	}
	if c.Inflight < 1 || c.Inflight > 1000 {
		bad("Inflight", "%d is outside 1..1000", c.Inflight)
	}
	if !c.Provision {
		checkFormat(bad, "TokenFormat", c.TokenFormat)
	}
	checkFormat(bad, "DeviceNameFormat", c.DeviceNameFormat)
	if c.Provision {
		if c.ProvisionKey == "" {
			bad("ProvisionKey", "missing (required with Provision)")
		}
		if c.ProvisionSecret == "" {
			bad("ProvisionSecret", "missing (required with Provision)")
		}
	}
	for _, s := range c.Shapes {
		if !slices.Contains(DefaultShapes(), s) {
			bad("Shapes", "unknown shape %q (want %s)", s, strings.Join(DefaultShapes(), ", "))
		}
	}
	if c.AttributesEvery < 0 {
		bad("AttributesEvery", "%d is negative", c.AttributesEvery)
	}
	if c.StartSpread < 0 {
		bad("StartSpread", "%v is negative", c.StartSpread)
	}
	return p.Err()
}

// checkFormat requires exactly one integer verb, so that devices get
// distinct names and tokens.
func checkFormat(bad func(field, format string, args ...any), field, format string) {
	a, b := fmt.Sprintf(format, 0), fmt.Sprintf(format, 1)
	if strings.Contains(a, "%!") || a == b {
		bad(field, "%q must contain one integer verb such as %%d", format)
	}
}
