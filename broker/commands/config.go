package commands

import (
	"log/slog"
	"time"

	"github.com/ferry-iot/ferry/configs"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

// Config configures a Dispatcher. Zero fields take the defaults that
// EnsureDefaults documents; New fills them in and validates once.
type Config struct {
	// Topic is the log topic backend services produce commands into
	// (default "commands"). Created with one partition when missing; an
	// existing topic is used as it is, with all its partitions.
	Topic string `mapstructure:"topic"`
	// Responses is the log topic the outcomes are appended to (default
	// "rpc_responses"), created like Topic.
	Responses string `mapstructure:"responses"`
	// Timeout is how long a delivered command waits for the device's
	// answer (default 30 s); a command's "timeout" (ms) overrides it.
	Timeout time.Duration `mapstructure:"-"`
	// Expiry is how long after its record's timestamp a command may still
	// be delivered (default 1 h); a command's "expirationTime" (epoch ms)
	// overrides it. A command for a device that stays unreachable until
	// then is answered "expired".
	Expiry time.Duration `mapstructure:"expiry"`
	// MaxInFlight bounds the commands held in memory across all devices
	// and partitions (default 1000, at most 10000). When reached, the topic
	// is not read until some finish.
	MaxInFlight int `mapstructure:"max_in_flight"`
	// MaxCommandBytes is the largest record value accepted as a command
	// (default 64 KiB); larger ones are answered as invalid. With
	// MaxInFlight it bounds the memory commands take.
	MaxCommandBytes int `mapstructure:"max_command_bytes"`

	Logger  *slog.Logger `mapstructure:"-"` // default slog.Default()
	Metrics *Metrics     `mapstructure:"-"` // nil: kept, not registered anywhere
}

// Defaults, exported so configuration layers can document them.
const (
	DefaultTopic           = "commands"
	DefaultResponses       = "rpc_responses"
	DefaultTimeout         = 30 * time.Second
	DefaultExpiry          = time.Hour
	DefaultMaxInFlight     = 1000
	DefaultMaxCommandBytes = 64 << 10

	// MaxMaxInFlight keeps a partition's checkpoint (which lists the
	// offsets in flight) well below the state store's value limit.
	MaxMaxInFlight = 10000
)

// EnsureDefaults fills zero fields with their defaults.
func (c *Config) EnsureDefaults() {
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
	if c.Responses == "" {
		c.Responses = DefaultResponses
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Expiry == 0 {
		c.Expiry = DefaultExpiry
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.MaxCommandBytes == 0 {
		c.MaxCommandBytes = DefaultMaxCommandBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
}

// Validate reports every problem at once, each a *configs.FieldError
// naming its key (wrapping ErrInvalidConfig), so a configuration layer can
// prefix it with its own path ("commands.").
func (c *Config) Validate() error {
	p := configs.Problems{Kind: ErrInvalidConfig}
	bad := p.Add
	if err := commitlog.ValidTopicName(c.Topic); err != nil {
		bad("topic", "%q is not a valid topic name", c.Topic)
	}
	if err := commitlog.ValidTopicName(c.Responses); err != nil {
		bad("responses", "%q is not a valid topic name", c.Responses)
	}
	if c.Topic == c.Responses {
		bad("responses", "must differ from topic %q", c.Topic)
	}
	if c.Timeout < time.Millisecond {
		bad("timeout", "%v is below 1ms", c.Timeout)
	}
	if c.Expiry < time.Millisecond {
		bad("expiry", "%v is below 1ms", c.Expiry)
	}
	if c.MaxInFlight < 1 || c.MaxInFlight > MaxMaxInFlight {
		bad("max_in_flight", "%d is outside 1..%d", c.MaxInFlight, MaxMaxInFlight)
	}
	if c.MaxCommandBytes < 64 || c.MaxCommandBytes > commitlog.MaxBatchSize {
		bad("max_command_bytes", "%d is outside 64..%d", c.MaxCommandBytes, commitlog.MaxBatchSize)
	}
	return p.Err()
}

// topicConfig is what a missing commands or responses topic is created
// with: one partition, acknowledged after fsync, zstd batches.
func topicConfig() commitlog.TopicConfig {
	return commitlog.TopicConfig{Partitions: 1, Flush: commitlog.FlushAlways, Compression: commitlog.CompressionZstd}
}
