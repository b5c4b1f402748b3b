package main

import (
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/kafkaserver"
	"github.com/ferry-iot/ferry/broker/kafkaserver/group"
	"github.com/ferry-iot/ferry/broker/netguard"
)

// startKafka starts the consumer-group coordinator and the Kafka
// listener (kafka.listen empty: neither).
func (d *Daemon) startKafka(listeners *netguard.Metrics) error {
	kc := d.cfg.Kafka
	if kc.Listen == "" {
		return nil
	}
	var err error
	gcfg := kc.Groups
	gcfg.Logger = d.logger
	gcfg.Now = d.wallClock
	gcfg.PartitionExists = func(topic string, partition int32) bool {
		t, err := d.log.Topic(topic)
		if err != nil {
			return false
		}
		_, err = t.Partition(partition)
		return err == nil
	}
	d.groups, err = group.New(d.state, gcfg)
	if err != nil {
		return fmt.Errorf("kafka group coordinator: %w", err)
	}
	cfg := kc.Config
	cfg.Listeners, cfg.Logger, cfg.Metrics = listeners, d.logger, kafkaserver.NewMetrics(d.metrics)
	for name := range d.cfg.Log.Topics {
		cfg.ProtectedTopics = append(cfg.ProtectedTopics, name)
	}
	if d.cfg.Commands.Topic != "" {
		cfg.ProtectedTopics = append(cfg.ProtectedTopics, d.cfg.Commands.Topic, d.cfg.Commands.Responses)
	}
	if d.cfg.RPC.ClientRequests != "" {
		cfg.ProtectedTopics = append(cfg.ProtectedTopics, d.cfg.RPC.ClientRequests, d.cfg.RPC.ClientReplies)
	}
	if d.kafka, err = kafkaserver.New(cfg, d.log, d.groups, d.state); err != nil {
		return err
	}
	d.kafka.Start()
	d.metrics.MustRegister(&groupCollector{groups: d.groups, log: d.log})
	d.logger.Info("kafka listener started", "addr", d.kafka.Addr().String(), "tls", cfg.TLSCert != "", "sasl", len(kc.SASLUsers) > 0)
	return nil
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// KafkaAddr is the Kafka listener's bound address (nil when off).
func (d *Daemon) KafkaAddr() net.Addr {
	if d.kafka == nil {
		return nil
	}
	return d.kafka.Addr()
}

// groupJSON is a consumer group in the HTTP API.
type groupJSON struct {
	Name         string            `json:"name"`
	State        string            `json:"state"`
	ProtocolType string            `json:"protocol_type"`
	Protocol     string            `json:"protocol"`
	Generation   int32             `json:"generation"`
	Leader       string            `json:"leader"`
	Members      []memberJSON      `json:"members"`
	Offsets      []groupOffsetJSON `json:"offsets,omitempty"`
}

type memberJSON struct {
	ID         string             `json:"id"`
	InstanceID string             `json:"instance_id,omitempty"`
	ClientID   string             `json:"client_id"`
	ClientHost string             `json:"client_host"`
	Assigned   map[string][]int32 `json:"assigned,omitempty"`
}

type groupOffsetJSON struct {
	Topic      string    `json:"topic"`
	Partition  int32     `json:"partition"`
	Offset     int64     `json:"offset"`
	EndOffset  int64     `json:"end_offset"`
	Lag        int64     `json:"lag"`
	Metadata   string    `json:"metadata,omitempty"`
	CommitTime time.Time `json:"commit_time"`
}

func toGroupJSON(gi group.GroupInfo) groupJSON {
	g := groupJSON{Name: gi.Name, State: gi.State, ProtocolType: gi.ProtocolType, Protocol: gi.Protocol,
		Generation: gi.Generation, Leader: gi.Leader, Members: []memberJSON{}}
	for _, m := range gi.Members {
		g.Members = append(g.Members, memberJSON{ID: m.ID, InstanceID: m.InstanceID, ClientID: m.ClientID, ClientHost: m.ClientHost, Assigned: m.Assigned})
	}
	return g
}

func (d *Daemon) listGroups(w http.ResponseWriter, _ *http.Request) {
	if d.groups == nil {
		writeError(w, http.StatusNotFound, "the Kafka listener is off (kafka.listen is empty)")
		return
	}
	out := []groupJSON{}
	for _, gi := range d.groups.Groups() {
		out = append(out, toGroupJSON(gi))
	}
	writeJSON(w, http.StatusOK, map[string]any{"groups": out})
}

func (d *Daemon) getGroup(w http.ResponseWriter, r *http.Request) {
	if d.groups == nil {
		writeError(w, http.StatusNotFound, "the Kafka listener is off (kafka.listen is empty)")
		return
	}
	name := r.PathValue("group")
	gi, ok := d.groups.Group(name)
	if !ok {
		writeError(w, http.StatusNotFound, "no consumer group %q", name)
		return
	}
	g := toGroupJSON(gi)
	for tp, c := range d.groups.Offsets(name) {
		o := groupOffsetJSON{Topic: tp.Topic, Partition: tp.Partition, Offset: c.Offset, EndOffset: -1, Lag: -1, Metadata: c.Metadata, CommitTime: c.CommitTime}
		if t, err := d.log.Topic(tp.Topic); err == nil {
			if p, err := t.Partition(tp.Partition); err == nil {
				o.EndOffset = p.HighWatermark()
				o.Lag = max(o.EndOffset-c.Offset, 0)
			}
		}
		g.Offsets = append(g.Offsets, o)
	}
	sort.Slice(g.Offsets, func(i, j int) bool {
		a, b := g.Offsets[i], g.Offsets[j]
		return a.Topic < b.Topic || (a.Topic == b.Topic && a.Partition < b.Partition)
	})
	writeJSON(w, http.StatusOK, g)
}

// groupCollector exports group counts by state and consumer lag (high
// watermark minus committed offset) per group and partition.
type groupCollector struct {
	groups *group.Coordinator
	log    *commitlog.Log
}

var (
	groupsDesc = prometheus.NewDesc("ferry_kafka_groups", "Consumer groups by state.", []string{"state"}, nil)
	lagDesc    = prometheus.NewDesc("ferry_kafka_group_lag", "Records between a group's committed offset and the partition's high watermark.",
		[]string{"group", "topic", "partition"}, nil)
)

func (g *groupCollector) Describe(ch chan<- *prometheus.Desc) { ch <- groupsDesc; ch <- lagDesc }

func (g *groupCollector) Collect(ch chan<- prometheus.Metric) {
	states := map[string]int{}
	for _, gi := range g.groups.Groups() {
		states[gi.State]++
	}
	for st, n := range states {
		ch <- prometheus.MustNewConstMetric(groupsDesc, prometheus.GaugeValue, float64(n), st)
	}
	g.groups.ForEachOffset(func(name string, tp group.TopicPartition, off group.Committed) {
		t, err := g.log.Topic(tp.Topic)
		if err != nil {
			return
		}
		p, err := t.Partition(tp.Partition)
		if err != nil {
			return
		}
		lag := max(p.HighWatermark()-off.Offset, 0)
		ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(lag), name, tp.Topic, strconv.Itoa(int(tp.Partition)))
	})
}
