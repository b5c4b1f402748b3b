package main

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-iot/ferry/bridge"
	"github.com/ferry-iot/ferry/bridge/kafka"
	"github.com/ferry-iot/ferry/configs"
)

// bridgeMemoryShare is the share of memory_limit the bridge's two batches
// (one in flight, the next read ahead) may take together.
const bridgeMemoryShare = 4

// validateKafkaBridge checks bridges.kafka (only when brokers are set):
// the section by its owner (kafka.Settings), and what involves other
// sections here: the edge topics must be log topics or a stream
// pipeline's output or late topic, and the bridge's two
// batches must fit its share of memory_limit.
func (c *Config) validateKafkaBridge(p *configs.Problems) {
	kb := &c.Bridges.Kafka
	if len(kb.Brokers) == 0 {
		return
	}
	p.Nest("bridges.kafka", kb.Validate())
	for edge := range kb.Topics {
		if _, ok := c.Log.Topics[edge]; !ok && edge != c.Commands.Responses && !c.streamTopic(edge) {
			p.Add("bridges.kafka.topics."+edge, "is not a log topic (log.topics.%s) nor a stream pipeline's output (streams[].to)", edge)
		}
	}
	if limit := c.MemoryLimit; limit > 0 && 2*kb.MaxBatchBytes > limit/bridgeMemoryShare {
		p.Add("bridges.kafka.max_batch_bytes", "%v: two batches (one in flight, the next read ahead) exceed a quarter of memory_limit %v; "+
			"lower bridges.kafka.max_batch_bytes to at most %v or raise memory_limit", kb.MaxBatchBytes, limit, limit/bridgeMemoryShare/2)
	}
}

// startBridges starts the configured upstream bridges.
func (d *Daemon) startBridges() error {
	kb := d.cfg.Bridges.Kafka
	if len(kb.Brokers) == 0 {
		return nil
	}
	tcfg, ecfg, err := kb.Configs(d.cfg.NodeID)
	if err != nil {
		return fmt.Errorf("bridges.kafka: %w", err)
	}
	tcfg.Logger = d.logger
	tg, err := kafka.New(tcfg)
	if err != nil {
		return err
	}
	ecfg.Logger, ecfg.Metrics = d.logger, d.bridgeMetrics()
	en, err := bridge.New(ecfg, d.log, d.state, tg)
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

func (d *Daemon) listBridges(w http.ResponseWriter, _ *http.Request) {
	out := []bridge.Status{}
	for _, b := range d.bridges {
		out = append(out, b.Status())
	}
	writeJSON(w, http.StatusOK, map[string]any{"bridges": out})
}

// resendBridge makes a bridge send a partition again from an offset: for an
// upstream that was reset (its status says upstream_reset).
func (d *Daemon) resendBridge(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Topic     string `json:"topic"`
		Partition *int32 `json:"partition"`
		Offset    *int64 `json:"offset"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	if req.Topic == "" || req.Partition == nil || req.Offset == nil {
		writeError(w, http.StatusBadRequest, "topic, partition and offset are required")
		return
	}
	for _, b := range d.bridges {
		if b.Status().Name != r.PathValue("name") {
			continue
		}
		err := b.Resend(req.Topic, *req.Partition, *req.Offset)
		switch {
		case errors.Is(err, bridge.ErrNoSuchPartition):
			writeError(w, http.StatusNotFound, "%v", err)
		case err != nil:
			writeError(w, http.StatusBadRequest, "%v", err)
		default:
			d.logger.Warn("bridge: sending a partition again, as asked through the API", "bridge", r.PathValue("name"),
				"topic", req.Topic, "partition", *req.Partition, "from", *req.Offset)
			writeJSON(w, http.StatusAccepted, map[string]any{"bridge": r.PathValue("name"), "topic": req.Topic,
				"partition": *req.Partition, "from": *req.Offset})
		}
		return
	}
	writeError(w, http.StatusNotFound, "no bridge %q", r.PathValue("name"))
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
