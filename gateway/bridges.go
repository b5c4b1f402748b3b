package main

import (
	"crypto/tls"
	"crypto/x509"
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
	bkafka "github.com/ferry-iot/ferry/bridge/kafka"
)

// validateKafkaBridge checks bridges.kafka (only when brokers are set).
func (c *Config) validateKafkaBridge(bad func(key, format string, args ...any)) {
	kb := c.Bridges.Kafka
	if len(kb.Brokers) == 0 {
		return
	}
	for i, b := range kb.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			bad(fmt.Sprintf("bridges.kafka.brokers[%d]", i), "%q is not host:port", b)
		}
	}
	if len(kb.Topics) == 0 {
		bad("bridges.kafka.topics", "must map at least one log topic to an upstream topic")
	}
	for edge, up := range kb.Topics {
		if _, ok := c.Log.Topics[edge]; !ok && edge != c.Commands.Responses {
			bad("bridges.kafka.topics."+edge, "is not a log topic (log.topics.%s)", edge)
		}
		if up == "" {
			bad("bridges.kafka.topics."+edge, "upstream topic name is empty")
		}
	}
	switch kb.Delivery {
	case bkafka.ExactlyOnce, bkafka.AtLeastOnce:
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
	case "plain", "scram-sha-256", "scram-sha-512":
		if kb.SASL.Username == "" {
			bad("bridges.kafka.sasl.username", "is required with sasl.mechanism")
		}
	default:
		bad("bridges.kafka.sasl.mechanism", "%q is not plain, scram-sha-256 or scram-sha-512", kb.SASL.Mechanism)
	}
	if (kb.TLS.CertFile == "") != (kb.TLS.KeyFile == "") {
		bad("bridges.kafka.tls.cert_file", "cert_file and key_file must be set together")
	}
	if n, err := parseSize(kb.RateLimit); err != nil || n < 0 {
		bad("bridges.kafka.rate_limit", "%q is not a byte count (%v)", kb.RateLimit, err)
	}
	if n, err := parseSize(kb.MaxBatchBytes); err != nil || n < 64<<10 || n > 64<<20 {
		bad("bridges.kafka.max_batch_bytes", "%q is not a size within 64KiB..64MiB", kb.MaxBatchBytes)
	}
	if kb.StallTimeout <= 0 || kb.Backoff <= 0 || kb.MaxBackoff < kb.Backoff {
		bad("bridges.kafka.stall_timeout", "stall_timeout, backoff must be positive and max_backoff >= backoff")
	}
}

// startBridges starts the configured upstream bridges.
func (d *Daemon) startBridges() error {
	kb := d.cfg.Bridges.Kafka
	if len(kb.Brokers) == 0 {
		return nil
	}
	tcfg := bkafka.Config{
		Brokers: kb.Brokers, Topics: kb.Topics, NodeID: d.cfg.NodeID, Delivery: kb.Delivery,
		TransactionalID: kb.TransactionalID, CheckpointTopic: kb.CheckpointTopic, Compression: kb.Compression,
		Logger: d.logger,
	}
	var err error
	if tcfg.TLS, err = bridgeTLS(kb.TLS); err != nil {
		return err
	}
	tcfg.SASL = bridgeSASL(kb.SASL)
	tg, err := bkafka.New(tcfg)
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
		linger = -1 // the engine reads zero as its default and a negative linger as none
	}
	en, err := bridge.New(bridge.Config{
		Name: "kafka", Topics: topics, Order: kb.Order, LiveThreshold: kb.LiveThreshold,
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

func bridgeTLS(c BridgeTLSConfig) (*tls.Config, error) {
	if !c.Enabled {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.InsecureSkipVerify} //nolint:gosec // the user's explicit choice
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("bridges.kafka.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("bridges.kafka.tls.ca_file: %s holds no PEM certificate", c.CAFile)
		}
		cfg.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("bridges.kafka.tls.cert_file/key_file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
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
