package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/ferry-iot/ferry/bridge"
	"github.com/ferry-iot/ferry/bridge/kafka"
	"github.com/ferry-iot/ferry/broker/commitlog"
)

// bridgeMemoryShare is the share of memory_limit the bridge's two batches
// (one in flight, the next read ahead) may take together.
const bridgeMemoryShare = 4

// validateKafkaBridge checks bridges.kafka (only when brokers are set),
// naming every problem with its full key.
func (c *Config) validateKafkaBridge(bad func(key, format string, args ...any)) {
	kb := c.Bridges.Kafka
	if len(kb.Brokers) == 0 {
		return
	}
	for i, b := range kb.Brokers {
		key := fmt.Sprintf("bridges.kafka.brokers[%d]", i)
		host, port, err := net.SplitHostPort(b)
		if err != nil {
			bad(key, "%q is not host:port", b)
			continue
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			bad(key, "%q: port %q is not 1..65535", b, port)
		}
		if host == "" {
			bad(key, "%q has no host", b)
		}
	}
	if len(kb.Topics) == 0 {
		bad("bridges.kafka.topics", "must map at least one log topic to an upstream topic")
	}
	for edge, up := range kb.Topics {
		key := "bridges.kafka.topics." + edge
		if _, ok := c.Log.Topics[edge]; !ok && edge != c.Commands.Responses {
			bad(key, "is not a log topic (log.topics.%s)", edge)
		}
		switch {
		case up == "":
			bad(key, "upstream topic name is empty")
		case kafka.ValidTopicName(up) != nil: // Kafka's rule: upstream names may be longer than the edge log's
			bad(key, "upstream topic %q is not a Kafka topic name (1-249 of [a-zA-Z0-9._-])", up)
		case kb.Delivery == kafka.ExactlyOnce && up == kb.CheckpointTopic:
			bad(key, "upstream topic %q is bridges.kafka.checkpoint_topic", up)
		}
	}
	if err := commitlog.ValidTopicName(kb.RejectedTopic); err != nil {
		bad("bridges.kafka.rejected_topic", "%q: %v", kb.RejectedTopic, err)
	} else if _, ok := kb.Topics[kb.RejectedTopic]; ok {
		bad("bridges.kafka.topics."+kb.RejectedTopic, "is bridges.kafka.rejected_topic, which the bridge cannot replicate")
	}
	switch kb.Delivery {
	case kafka.ExactlyOnce:
		if kafka.ValidTopicName(kb.CheckpointTopic) != nil {
			bad("bridges.kafka.checkpoint_topic", "%q is not a Kafka topic name (1-249 of [a-zA-Z0-9._-])", kb.CheckpointTopic)
		}
	case kafka.AtLeastOnce:
	default:
		bad("bridges.kafka.delivery", "%q is not exactly_once or at_least_once", kb.Delivery)
	}
	switch kb.Compression {
	case "zstd", "lz4", "snappy", "gzip", "none":
	default:
		bad("bridges.kafka.compression", "%q is not zstd, lz4, snappy, gzip or none", kb.Compression)
	}
	switch kb.Order {
	case bridge.OldestFirst, bridge.LiveFirst:
	default:
		bad("bridges.kafka.order", "%q is not oldest_first or live_first", kb.Order)
	}
	switch strings.ToLower(kb.SASL.Mechanism) {
	case "":
		if kb.SASL.Username != "" || kb.SASL.Password != "" {
			bad("bridges.kafka.sasl.mechanism", "is empty but sasl.username or sasl.password is set (plain, scram-sha-256 or scram-sha-512)")
		}
	case "plain", "scram-sha-256", "scram-sha-512":
		if kb.SASL.Username == "" {
			bad("bridges.kafka.sasl.username", "is required with sasl.mechanism %s", kb.SASL.Mechanism)
		}
		if kb.SASL.Password == "" {
			bad("bridges.kafka.sasl.password", "is required with sasl.mechanism %s", kb.SASL.Mechanism)
		}
	default:
		bad("bridges.kafka.sasl.mechanism", "%q is not plain, scram-sha-256 or scram-sha-512", kb.SASL.Mechanism)
	}
	loadBridgeTLS(kb.TLS, bad)
	if _, err := parseSize(kb.RateLimit); err != nil {
		bad("bridges.kafka.rate_limit", "%v", err)
	}
	maxBatch, err := parseSize(kb.MaxBatchBytes)
	if err != nil || maxBatch < 64<<10 || maxBatch > 64<<20 {
		bad("bridges.kafka.max_batch_bytes", "%q is not a size within 64KiB..64MiB", kb.MaxBatchBytes)
	} else if limit, err := parseSize(c.MemoryLimit); err == nil && limit > 0 && 2*maxBatch > limit/bridgeMemoryShare {
		bad("bridges.kafka.max_batch_bytes", "%s: two batches (one in flight, the next read ahead) exceed a quarter of memory_limit %s; "+
			"lower bridges.kafka.max_batch_bytes to at most %s or raise memory_limit", kb.MaxBatchBytes, c.MemoryLimit, formatSize(limit/bridgeMemoryShare/2))
	}
	if kb.MaxBatchRecords < 1 || kb.MaxBatchRecords > 1_000_000 {
		bad("bridges.kafka.max_batch_records", "%d is outside 1..1000000", kb.MaxBatchRecords)
	}
	if kb.LiveThreshold < 1 {
		bad("bridges.kafka.live_threshold", "%d must be at least 1", kb.LiveThreshold)
	}
	if kb.StallTimeout <= 0 {
		bad("bridges.kafka.stall_timeout", "%v must be positive", kb.StallTimeout)
	}
	if kb.Linger < 0 || (kb.StallTimeout > 0 && kb.Linger >= kb.StallTimeout) {
		bad("bridges.kafka.linger", "%v is outside [0, bridges.kafka.stall_timeout)", kb.Linger)
	}
	if kb.Backoff <= 0 {
		bad("bridges.kafka.backoff", "%v must be positive", kb.Backoff)
	}
	if kb.MaxBackoff < kb.Backoff {
		bad("bridges.kafka.max_backoff", "%v is below bridges.kafka.backoff %v", kb.MaxBackoff, kb.Backoff)
	}
}

// loadBridgeTLS reads bridges.kafka.tls, files included, into the
// tls.Config the Kafka target dials with, reporting every problem with bad
// under its full key. Validation calls it, so that a missing or unreadable
// certificate is a configuration problem reported with the others, and so
// does start-up, for the config itself. It returns nil when TLS is off or
// a problem was reported.
func loadBridgeTLS(c BridgeTLSConfig, bad func(key, format string, args ...any)) *tls.Config {
	if !c.Enabled {
		for key, set := range map[string]bool{"ca_file": c.CAFile != "", "cert_file": c.CertFile != "", "key_file": c.KeyFile != "",
			"insecure_skip_verify": c.InsecureSkipVerify} {
			if set {
				bad("bridges.kafka.tls."+key, "is set but bridges.kafka.tls.enabled is false")
			}
		}
		return nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.InsecureSkipVerify} //nolint:gosec // the user's explicit choice
	ok := true
	if c.CAFile != "" {
		pool := x509.NewCertPool()
		if pem, err := os.ReadFile(c.CAFile); err != nil {
			bad("bridges.kafka.tls.ca_file", "%v", err)
			ok = false
		} else if !pool.AppendCertsFromPEM(pem) {
			bad("bridges.kafka.tls.ca_file", "%s holds no PEM certificate", c.CAFile)
			ok = false
		}
		cfg.RootCAs = pool
	}
	switch {
	case c.CertFile == "" && c.KeyFile == "":
	case c.CertFile == "":
		bad("bridges.kafka.tls.cert_file", "is required with bridges.kafka.tls.key_file")
		ok = false
	case c.KeyFile == "":
		bad("bridges.kafka.tls.key_file", "is required with bridges.kafka.tls.cert_file")
		ok = false
	default:
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			bad("bridges.kafka.tls.cert_file", "with bridges.kafka.tls.key_file: %v", err)
			ok = false
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if !ok {
		return nil
	}
	return cfg
}

// bridgeTLS is loadBridgeTLS for start-up: the problems (files changed
// since validation) as one error.
func bridgeTLS(c BridgeTLSConfig) (*tls.Config, error) {
	var problems []string
	cfg := loadBridgeTLS(c, func(key, format string, args ...any) {
		problems = append(problems, key+": "+fmt.Sprintf(format, args...))
	})
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "; "))
	}
	return cfg, nil
}

// startBridges starts the configured upstream bridges.
func (d *Daemon) startBridges() error {
	kb := d.cfg.Bridges.Kafka
	if len(kb.Brokers) == 0 {
		return nil
	}
	tcfg := kafka.Config{
		Brokers: kb.Brokers, Topics: kb.Topics, NodeID: d.cfg.NodeID, Delivery: kb.Delivery,
		TransactionalID: kb.TransactionalID, CheckpointTopic: kb.CheckpointTopic, Compression: kb.Compression,
		Logger: d.logger,
	}
	var err error
	if tcfg.TLS, err = bridgeTLS(kb.TLS); err != nil {
		return err
	}
	tcfg.SASL = bridgeSASL(kb.SASL)
	tg, err := kafka.New(tcfg)
	if err != nil {
		return err
	}
	topics := make([]string, 0, len(kb.Topics))
	for edge := range kb.Topics {
		topics = append(topics, edge)
	}
	rateLimit, _ := parseSize(kb.RateLimit)
	maxBatch, _ := parseSize(kb.MaxBatchBytes)
	linger := kb.Linger
	if linger == 0 {
		linger = bridge.NoLinger // bridges.kafka.linger 0s is none; the engine reads zero as its default
	}
	en, err := bridge.New(bridge.Config{
		Name: "kafka", Topics: topics, RejectedTopic: kb.RejectedTopic, Order: kb.Order, LiveThreshold: kb.LiveThreshold,
		RateLimit: rateLimit, MaxBatchBytes: int(maxBatch), MaxBatchRecords: kb.MaxBatchRecords, Linger: linger,
		StallTimeout: kb.StallTimeout, Backoff: kb.Backoff, MaxBackoff: kb.MaxBackoff,
		Logger: d.logger, Metrics: d.bridgeMetrics(),
	}, d.log, d.state, tg)
	if err != nil {
		return fmt.Errorf("bridges.kafka: %w", err)
	}
	en.Start()
	d.bridges = append(d.bridges, en)
	d.logger.Info("bridge started", "bridge", "kafka", "brokers", strings.Join(kb.Brokers, ","), "delivery", kb.Delivery, "order", kb.Order)
	return nil
}

func (d *Daemon) bridgeMetrics() *bridge.Metrics {
	if d.bridgeM == nil {
		d.bridgeM = bridge.NewMetrics(d.metrics)
		d.metrics.MustRegister(&bridgeCollector{d: d})
	}
	return d.bridgeM
}

func bridgeSASL(c BridgeSASLConfig) sasl.Mechanism {
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

func (d *Daemon) listBridges(w http.ResponseWriter, _ *http.Request) {
	out := []bridge.Status{}
	for _, b := range d.bridges {
		out = append(out, b.Status())
	}
	writeJSON(w, http.StatusOK, map[string]any{"bridges": out})
}

// bridgeCollector exports each bridge's lag per partition and its last
// acknowledgement time, read from Status at scrape time.
type bridgeCollector struct{ d *Daemon }

var (
	bridgeLagDesc = prometheus.NewDesc("ferry_bridge_lag", "Records in the edge log not yet acknowledged by the upstream.",
		[]string{"bridge", "topic", "partition"}, nil)
	bridgeAckDesc = prometheus.NewDesc("ferry_bridge_last_ack_timestamp_seconds", "When the upstream last acknowledged a batch (0: never).",
		[]string{"bridge"}, nil)
	bridgeDroppedDesc = prometheus.NewDesc("ferry_bridge_dropped_unreplicated", "Records of the bridged topics that retention dropped before they were replicated.",
		[]string{"bridge"}, nil)
)

func (c *bridgeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- bridgeLagDesc
	ch <- bridgeAckDesc
	ch <- bridgeDroppedDesc
}

func (c *bridgeCollector) Collect(ch chan<- prometheus.Metric) {
	for _, b := range c.d.bridges {
		st := b.Status()
		for _, p := range st.Partitions {
			ch <- prometheus.MustNewConstMetric(bridgeLagDesc, prometheus.GaugeValue, float64(p.Lag), st.Name, p.Topic, strconv.Itoa(int(p.Partition)))
		}
		var ack float64
		if !st.LastAck.IsZero() {
			ack = float64(st.LastAck.UnixNano()) / 1e9
		}
		ch <- prometheus.MustNewConstMetric(bridgeAckDesc, prometheus.GaugeValue, ack, st.Name)
		ch <- prometheus.MustNewConstMetric(bridgeDroppedDesc, prometheus.GaugeValue, float64(st.DroppedUnreplicated), st.Name)
	}
}
