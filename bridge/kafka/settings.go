package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/ferry-iot/ferry/bridge"
	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/configs"
)

// Settings is the bridges.kafka section of Ferry's configuration: what
// the target (Config) and its replication engine (bridge.Config) are
// built from. The daemon decodes the section into it (mapstructure tags),
// asks it to Validate itself and builds both with Configs.
type Settings struct {
	Brokers         []string          `mapstructure:"brokers"` // seed brokers, host:port; none: the bridge is off
	Topics          map[string]string `mapstructure:"topics"`  // edge topic → upstream topic
	Delivery        string            `mapstructure:"delivery"`
	TransactionalID string            `mapstructure:"transactional_id"`
	CheckpointTopic string            `mapstructure:"checkpoint_topic"`
	RejectedTopic   string            `mapstructure:"rejected_topic"`
	Compression     string            `mapstructure:"compression"`
	TLS             TLSSettings       `mapstructure:"tls"`
	SASL            SASLSettings      `mapstructure:"sasl"`
	Order           string            `mapstructure:"order"`
	RateLimit       configs.Size      `mapstructure:"rate_limit"`
	StallTimeout    time.Duration     `mapstructure:"stall_timeout"`
	Backoff         time.Duration     `mapstructure:"backoff"`
	MaxBackoff      time.Duration     `mapstructure:"max_backoff"`
	MaxBatchBytes   configs.Size      `mapstructure:"max_batch_bytes"`
	MaxBatchRecords int               `mapstructure:"max_batch_records"`
	Linger          time.Duration     `mapstructure:"linger"`
	LiveThreshold   int64             `mapstructure:"live_threshold"`
}

// TLSSettings is TLS towards the upstream; the files are read at
// validation and again when the bridge starts.
type TLSSettings struct {
	Enabled            bool   `mapstructure:"enabled"`
	CAFile             string `mapstructure:"ca_file"`
	CertFile           string `mapstructure:"cert_file"`
	KeyFile            string `mapstructure:"key_file"`
	InsecureSkipVerify bool   `mapstructure:"insecure_skip_verify"`
}

// SASLSettings is SASL towards the upstream.
type SASLSettings struct {
	Mechanism string `mapstructure:"mechanism"` // plain, scram-sha-256, scram-sha-512; empty: none
	Username  string `mapstructure:"username"`
	Password  string `mapstructure:"password"`
}

// Validate reports every problem, each a *configs.FieldError keyed
// relative to the section (checks that involve other sections, such as
// whether an edge topic exists, are the daemon's). TLS files are read.
func (s *Settings) Validate() error {
	var p configs.Problems
	for i, b := range s.Brokers {
		key := fmt.Sprintf("brokers[%d]", i)
		host, port, err := net.SplitHostPort(b)
		if err != nil {
			p.Add(key, "%q is not host:port", b)
			continue
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			p.Add(key, "%q: port %q is not 1..65535", b, port)
		}
		if host == "" {
			p.Add(key, "%q has no host", b)
		}
	}
	if len(s.Topics) == 0 {
		p.Add("topics", "must map at least one log topic to an upstream topic")
	}
	for _, edge := range slices.Sorted(maps.Keys(s.Topics)) {
		switch up := s.Topics[edge]; {
		case up == "":
			p.Add("topics."+edge, "upstream topic name is empty")
		case ValidTopicName(up) != nil: // Kafka's rule: upstream names may be longer than the edge log's
			p.Add("topics."+edge, "upstream topic %q is not a Kafka topic name (1-249 of [a-zA-Z0-9._-])", up)
		case s.Delivery == ExactlyOnce && up == s.CheckpointTopic:
			p.Add("topics."+edge, "upstream topic %q is %s", up, configs.Key("checkpoint_topic"))
		}
	}
	if err := commitlog.ValidTopicName(s.RejectedTopic); err != nil {
		p.Add("rejected_topic", "%q: %v", s.RejectedTopic, err)
	} else if _, ok := s.Topics[s.RejectedTopic]; ok {
		p.Add("topics."+s.RejectedTopic, "is %s, which the bridge cannot replicate", configs.Key("rejected_topic"))
	}
	switch s.Delivery {
	case ExactlyOnce:
		if ValidTopicName(s.CheckpointTopic) != nil {
			p.Add("checkpoint_topic", "%q is not a Kafka topic name (1-249 of [a-zA-Z0-9._-])", s.CheckpointTopic)
		}
	case AtLeastOnce:
	default:
		p.Add("delivery", "%q is not exactly_once or at_least_once", s.Delivery)
	}
	if _, err := codec(s.Compression); err != nil {
		p.Add("compression", "%q is not zstd, lz4, snappy, gzip or none", s.Compression)
	}
	switch s.Order {
	case bridge.OldestFirst, bridge.LiveFirst:
	default:
		p.Add("order", "%q is not oldest_first or live_first", s.Order)
	}
	s.SASL.validate(&p)
	s.TLS.load(&p)
	if s.MaxBatchBytes < 64<<10 || s.MaxBatchBytes > 64<<20 {
		p.Add("max_batch_bytes", "%q is not a size within 64KiB..64MiB", s.MaxBatchBytes.String())
	}
	if s.MaxBatchRecords < 1 || s.MaxBatchRecords > 1_000_000 {
		p.Add("max_batch_records", "%d is outside 1..1000000", s.MaxBatchRecords)
	}
	if s.LiveThreshold < 1 {
		p.Add("live_threshold", "%d must be at least 1", s.LiveThreshold)
	}
	if s.StallTimeout <= 0 {
		p.Add("stall_timeout", "%v must be positive", s.StallTimeout)
	}
	if s.Linger < 0 || (s.StallTimeout > 0 && s.Linger >= s.StallTimeout) {
		p.Add("linger", "%v is outside [0, %s %v)", s.Linger, configs.Key("stall_timeout"), s.StallTimeout)
	}
	if s.Backoff <= 0 {
		p.Add("backoff", "%v must be positive", s.Backoff)
	}
	if s.MaxBackoff < s.Backoff {
		p.Add("max_backoff", "%v is below %s %v", s.MaxBackoff, configs.Key("backoff"), s.Backoff)
	}
	return p.Err()
}

func (c *SASLSettings) validate(p *configs.Problems) {
	switch strings.ToLower(c.Mechanism) {
	case "":
		if c.Username != "" || c.Password != "" {
			p.Add("sasl.mechanism", "is empty but sasl.username or sasl.password is set (plain, scram-sha-256 or scram-sha-512)")
		}
	case "plain", "scram-sha-256", "scram-sha-512":
		if c.Username == "" {
			p.Add("sasl.username", "is required with %s %s", configs.Key("sasl.mechanism"), c.Mechanism)
		}
		if c.Password == "" {
			p.Add("sasl.password", "is required with %s %s", configs.Key("sasl.mechanism"), c.Mechanism)
		}
	default:
		p.Add("sasl.mechanism", "%q is not plain, scram-sha-256 or scram-sha-512", c.Mechanism)
	}
}

// mechanism is the franz-go SASL mechanism (nil: none).
func (c *SASLSettings) mechanism() sasl.Mechanism {
	switch strings.ToLower(c.Mechanism) {
	case "plain":
		return plain.Auth{User: c.Username, Pass: c.Password}.AsMechanism()
	case "scram-sha-256":
		return scram.Auth{User: c.Username, Pass: c.Password}.AsSha256Mechanism()
	case "scram-sha-512":
		return scram.Auth{User: c.Username, Pass: c.Password}.AsSha512Mechanism()
	}
	return nil
}

// load reads the TLS settings, files included, into the tls.Config the
// target dials with, recording every problem under its key. It returns
// nil when TLS is off or a problem was recorded. Validation and start-up
// both call it, so a file that cannot be read is a configuration problem
// reported with the others.
func (c *TLSSettings) load(p *configs.Problems) *tls.Config {
	if !c.Enabled {
		for key, set := range map[string]bool{"ca_file": c.CAFile != "", "cert_file": c.CertFile != "", "key_file": c.KeyFile != "",
			"insecure_skip_verify": c.InsecureSkipVerify} {
			if set {
				p.Add("tls."+key, "is set but %s is false", configs.Key("tls.enabled"))
			}
		}
		return nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.InsecureSkipVerify} //nolint:gosec // the user's explicit choice
	ok := true
	if c.CAFile != "" {
		pool := x509.NewCertPool()
		if pem, err := os.ReadFile(c.CAFile); err != nil {
			p.Add("tls.ca_file", "%v", err)
			ok = false
		} else if !pool.AppendCertsFromPEM(pem) {
			p.Add("tls.ca_file", "%s holds no PEM certificate", c.CAFile)
			ok = false
		}
		cfg.RootCAs = pool
	}
	switch {
	case c.CertFile == "" && c.KeyFile == "":
	case c.CertFile == "":
		p.Add("tls.cert_file", "is required with %s", configs.Key("tls.key_file"))
		ok = false
	case c.KeyFile == "":
		p.Add("tls.key_file", "is required with %s", configs.Key("tls.cert_file"))
		ok = false
	default:
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			p.Add("tls.cert_file", "with tls.key_file: %v", err)
			ok = false
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if !ok {
		return nil
	}
	return cfg
}

// Configs builds the target's Config and the engine's from the settings
// (the TLS files are read again: a file changed since validation is an
// error). The engine's runtime fields (Logger, Metrics) are the caller's.
func (s *Settings) Configs(nodeID string) (Config, bridge.Config, error) {
	var p configs.Problems
	tlsCfg := s.TLS.load(&p)
	if err := p.Err(); err != nil {
		return Config{}, bridge.Config{}, err
	}
	tc := Config{
		Brokers: s.Brokers, Topics: s.Topics, NodeID: nodeID, Delivery: s.Delivery,
		TransactionalID: s.TransactionalID, CheckpointTopic: s.CheckpointTopic, Compression: s.Compression,
		TLS: tlsCfg, SASL: s.SASL.mechanism(),
	}
	linger := s.Linger
	if linger == 0 {
		linger = bridge.NoLinger // linger 0s is none; the engine reads zero as its default
	}
	ec := bridge.Config{
		Name: "kafka", Topics: slices.Sorted(maps.Keys(s.Topics)), RejectedTopic: s.RejectedTopic, Order: s.Order,
		LiveThreshold: s.LiveThreshold, RateLimit: int64(s.RateLimit), MaxBatchBytes: int(s.MaxBatchBytes),
		MaxBatchRecords: s.MaxBatchRecords, Linger: linger, StallTimeout: s.StallTimeout, Backoff: s.Backoff,
		MaxBackoff: s.MaxBackoff,
	}
	return tc, ec, nil
}
