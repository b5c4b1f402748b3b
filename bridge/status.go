package bridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-iot/ferry/broker/state"
)

// Status is a bridge's state for the HTTP API.
type Status struct {
	Name                string    `json:"name"`
	State               string    `json:"state"` // connecting, connected, backing_off, stalled, stopped
	Order               string    `json:"order"`
	LastError           string    `json:"last_error,omitempty"`
	LastAck             time.Time `json:"last_ack"`
	RecordsSent         int64     `json:"records_sent"`
	BytesSent           int64     `json:"bytes_sent"` // key, value and header bytes, before compression
	WireBytes           int64     `json:"wire_bytes"` // written to the upstream (after compression; all requests), when the target counts them
	Reconnects          int64     `json:"reconnects"`
	RecordsDropped      int64     `json:"records_dropped"`      // dropped by retention before replication, seen by this bridge
	DroppedUnreplicated int64     `json:"dropped_unreplicated"` // the log's count for the bridged topics
	// RecordsResent counts records handed to a Send again after a failed
	// or unconfirmed one, since start. At least once: an upper bound of
	// the duplicates upstream. Exactly once: copies in aborted
	// transactions, which read_committed consumers never see.
	RecordsResent int64 `json:"records_resent"`
	// RecordsRejected counts records the bridge passed over for good —
	// refused by the upstream, or damaged on the edge's disk — with their
	// provenance in the rejected topic; LastRejected is the latest.
	RecordsRejected int64           `json:"records_rejected"`
	LastRejected    *RejectedStatus `json:"last_rejected,omitempty"`
	Lag             int64           `json:"lag"` // records not yet upstream, all partitions
	// WaitingSince is when the batch on its way was handed to the
	// upstream, while no acknowledgement has come back; nil otherwise.
	WaitingSince *time.Time `json:"waiting_since,omitempty"`
	// UpstreamReset describes the latest time the upstream held less than
	// this bridge had sent (its checkpoint missing or behind: a
	// reinstalled cluster, a deleted checkpoint topic); "" when never.
	UpstreamReset string            `json:"upstream_reset,omitempty"`
	Partitions    []PartitionStatus `json:"partitions"`
}

// RejectedStatus names a record the bridge passed over because the upstream
// refused it for good (the API's shape of a Rejected: topic, partition,
// offset, reason and when).
type RejectedStatus struct {
	TP
	Offset int64     `json:"offset"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// PartitionStatus is one edge partition's replication position.
type PartitionStatus struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Next      int64  `json:"next"`
	LiveFrom  int64  `json:"live_from,omitempty"`
	LiveNext  int64  `json:"live_next,omitempty"`
	End       int64  `json:"end_offset"`
	Lag       int64  `json:"lag"`
}

// publishStatus copies the cursors for Status (run goroutine only).
func (e *Engine) publishStatus() {
	parts := make([]partSnap, 0, len(e.cursors))
	for _, c := range e.order() {
		parts = append(parts, partSnap{tp: c.tp, p: c.p, prog: c.prog})
	}
	e.mu.Lock()
	e.parts = parts
	e.mu.Unlock()
}

// Status returns the bridge's current state.
func (e *Engine) Status() Status {
	e.mu.Lock()
	st := e.status
	if st.LastRejected != nil {
		lr := *st.LastRejected
		st.LastRejected = &lr
	}
	parts := e.parts
	e.mu.Unlock()
	st.Partitions = make([]PartitionStatus, 0, len(parts))
	seen := map[string]bool{}
	for _, ps := range parts {
		end := ps.p.HighWatermark()
		lag := max(end-ps.prog.Next-ps.prog.ahead(), 0)
		st.Partitions = append(st.Partitions, PartitionStatus{Topic: ps.tp.Topic, Partition: ps.tp.Partition,
			Next: ps.prog.Next, LiveFrom: ps.prog.LiveFrom, LiveNext: ps.prog.LiveNext, End: end, Lag: lag})
		st.Lag += lag
		if !seen[ps.tp.Topic] {
			seen[ps.tp.Topic] = true
			st.DroppedUnreplicated += ps.p.Topic().Stats().DroppedUnreplicated
		}
	}
	return st
}

// Local checkpoints: key "bridge/<name>\x00<topic>\x00<partition>" →
// Progress as JSON.
func (e *Engine) checkpointKey(tp TP) []byte {
	return []byte("bridge/" + e.cfg.Name + "\x00" + tp.Topic + "\x00" + strconv.Itoa(int(tp.Partition)))
}

func (e *Engine) loadCheckpoint(tp TP) (Progress, error) {
	var p Progress
	v, err := e.st.Get(e.checkpointKey(tp))
	if errors.Is(err, state.ErrNotFound) {
		return p, nil
	}
	if err != nil {
		return p, fmt.Errorf("bridge %s: read checkpoint %s: %w", e.cfg.Name, tp, err)
	}
	if err := json.Unmarshal(v, &p); err != nil {
		return p, fmt.Errorf("bridge %s: checkpoint %s is damaged (%q): %w", e.cfg.Name, tp, v, err)
	}
	return p, nil
}

// saveCheckpoints writes the cursors to the state store, at most every
// CheckpointInterval unless forced: one small badger write a second at
// most, whatever the batch rate, spares the SD card. Upstreams that keep
// their own checkpoints (Kafka exactly-once) correct a stale local one on
// connect; for the others a crash resends at most that interval's records.
func (e *Engine) saveCheckpoints(force bool) error {
	if !e.dirty || (!force && time.Since(e.lastSaved) < e.cfg.CheckpointInterval) {
		return nil
	}
	err := e.st.Update(func(tx *state.Txn) error {
		for tp, c := range e.cursors {
			v, _ := json.Marshal(c.prog)
			if err := tx.Set(e.checkpointKey(tp), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("bridge %s: store checkpoints: %w", e.cfg.Name, err)
	}
	e.dirty = false
	e.lastSaved = time.Now()
	return nil
}

// Metrics are the bridges' Prometheus collectors, labelled by bridge.
type Metrics struct {
	Records  *prometheus.CounterVec
	Bytes    *prometheus.CounterVec
	Batches  *prometheus.CounterVec
	Wire     *prometheus.CounterVec
	Resent   *prometheus.CounterVec
	Dropped  *prometheus.CounterVec
	Rejected *prometheus.CounterVec
	Connects *prometheus.CounterVec
	Failures *prometheus.CounterVec // bridge, kind: connect, send, stalled, misconfigured
	// UpstreamResets counts connects that found the upstream holding
	// less than the bridge had sent (checkUpstreamReset).
	UpstreamResets *prometheus.CounterVec
	SendSeconds    *prometheus.HistogramVec
	State          *prometheus.GaugeVec // bridge, state: 1 for the current one
}

// NewMetrics creates the collectors and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	l := []string{"bridge"}
	m := &Metrics{
		Records: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_bridge_records_sent_total",
			Help: "Records the upstream acknowledged."}, l),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_bridge_bytes_sent_total",
			Help: "Key, value and header bytes of acknowledged records (before compression; the target reports wire bytes)."}, l),
		Wire: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_bridge_wire_bytes_total",
			Help: "Bytes written to the upstream: requests of every kind after compression, retries included (targets that count them)."}, l),
		Batches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_bridge_batches_total",
			Help: "Acknowledged batches (Kafka exactly-once: committed transactions)."}, l),
		Resent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_bridge_records_resent_total",
			Help: "Records handed to the upstream again after a failed or unconfirmed send (at-least-once: an upper bound of the duplicates upstream; exactly-once: aborted, invisible)."}, l),
		Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_bridge_records_dropped_total",
			Help: "Records retention dropped (on_full: overwrite_oldest) before the bridge replicated them."}, l),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_bridge_records_rejected_total",
			Help: "Records the upstream refused for good (too large, invalid) and passed over; their provenance is in the rejected topic."}, l),
		Connects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_bridge_connects_total",
			Help: "Sessions opened with the upstream."}, l),
		UpstreamResets: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_bridge_upstream_resets_total",
			Help: "Partitions found at connect with the upstream's checkpoint missing or behind what the bridge had sent (a reinstalled cluster)."}, l),
		Failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_bridge_failures_total",
			Help: "Link failures by kind: connect, send, stalled (the watchdog saw no acknowledgement), misconfigured (credentials, certificates, missing upstream features)."}, []string{"bridge", "kind"}),
		SendSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ferry_bridge_send_seconds",
			Help: "Time for the upstream to acknowledge one batch.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 9)}, l),
		State: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ferry_bridge_state",
			Help: "1 for the bridge's current link state."}, []string{"bridge", "state"}),
	}
	if reg != nil {
		reg.MustRegister(m.Records, m.Bytes, m.Wire, m.Batches, m.Resent, m.Dropped, m.Rejected, m.Connects, m.UpstreamResets, m.Failures, m.SendSeconds, m.State)
	}
	return m
}

// touch creates bridge name's series at zero, so dashboards and alerts
// see every counter (a rejected-records alert, say) before its first
// increment.
func (m *Metrics) touch(name string) {
	for _, v := range []*prometheus.CounterVec{m.Records, m.Bytes, m.Wire, m.Batches, m.Resent, m.Dropped, m.Rejected, m.Connects, m.UpstreamResets} {
		v.WithLabelValues(name)
	}
	for _, kind := range []string{"connect", "send", "stalled", "misconfigured"} {
		m.Failures.WithLabelValues(name, kind)
	}
}

func (m *Metrics) setState(name, s string) {
	for _, x := range []string{StateConnecting, StateConnected, StateBackingOff, StateStalled, StateStopped} {
		v := 0.0
		if x == s {
			v = 1
		}
		m.State.WithLabelValues(name, x).Set(v)
	}
}
