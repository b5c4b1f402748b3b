package adapter

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the adapters' Prometheus metrics. A nil *Metrics records
// nothing.
type Metrics struct {
	Polls      *prometheus.CounterVec   // bus, device
	Errors     *prometheus.CounterVec   // bus, device, kind
	Skipped    *prometheus.CounterVec   // bus, device: polls skipped while degraded
	Latency    *prometheus.HistogramVec // bus: successful and failed polls
	Lag        *prometheus.HistogramVec // bus: poll start minus its due time
	Busy       *prometheus.CounterVec   // bus: seconds the line was in use
	Up         *prometheus.GaugeVec     // bus, device: 1 while polls succeed
	Records    *prometheus.CounterVec   // bus, device
	SinkFailed *prometheus.CounterVec   // bus, device: records the log refused
	RPC        *prometheus.CounterVec   // bus, device, outcome (ok or an error kind)
}

// NewMetrics registers the adapter metrics with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	bd := []string{"bus", "device"}
	m := &Metrics{
		Polls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_adapter_polls_total",
			Help: "Polls of adapter devices."}, bd),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_adapter_poll_errors_total",
			Help: "Failed polls by kind: timeout, exception, protocol, connection, device."}, append(bd, "kind")),
		Skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_adapter_polls_skipped_total",
			Help: "Polls skipped because the device was degraded after failing repeatedly."}, bd),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ferry_adapter_poll_seconds",
			Help: "Time a poll held its bus.", Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12)}, []string{"bus"}),
		Lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ferry_adapter_poll_lag_seconds",
			Help: "How late a poll started after it fell due (schedule jitter).", Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12)}, []string{"bus"}),
		Busy: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_adapter_bus_busy_seconds_total",
			Help: "Seconds the bus was in use (its rate is the line's busy share)."}, []string{"bus"}),
		Up: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ferry_adapter_device_up",
			Help: "1 while the device's polls succeed."}, bd),
		Records: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_adapter_records_total",
			Help: "Telemetry and attribute records adapters stored."}, bd),
		SinkFailed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_adapter_records_failed_total",
			Help: "Adapter records the log refused (full disk, full topic)."}, bd),
		RPC: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_adapter_rpc_total",
			Help: "RPC to adapter devices by outcome."}, append(bd, "outcome")),
	}
	if reg != nil {
		reg.MustRegister(m.Polls, m.Errors, m.Skipped, m.Latency, m.Lag, m.Busy, m.Up, m.Records, m.SinkFailed, m.RPC)
	}
	return m
}

// deviceSeries are a device's and its bus's series, resolved once: a
// label lookup per poll costs more than the poll's own bookkeeping.
type deviceSeries struct {
	polls, records prometheus.Counter
	up             prometheus.Gauge
	latency, lag   prometheus.Observer
	busy           prometheus.Counter
}

func (m *Metrics) series(bus, device string) *deviceSeries {
	if m == nil {
		return nil
	}
	return &deviceSeries{polls: m.Polls.WithLabelValues(bus, device), records: m.Records.WithLabelValues(bus, device),
		up: m.Up.WithLabelValues(bus, device), latency: m.Latency.WithLabelValues(bus), lag: m.Lag.WithLabelValues(bus),
		busy: m.Busy.WithLabelValues(bus)}
}

func (m *Metrics) polled(d *device, lat time.Duration, kind string) {
	if m == nil {
		return
	}
	d.series.polls.Inc()
	d.series.latency.Observe(lat.Seconds())
	if kind != "" {
		m.Errors.WithLabelValues(d.bus.name, d.info.Name, kind).Inc()
	}
}

func (m *Metrics) lag(d *device, lag time.Duration) {
	if m != nil {
		d.series.lag.Observe(max(lag, 0).Seconds())
	}
}

func (m *Metrics) busy(b *bus, d time.Duration) {
	if m != nil {
		b.busySeries.Add(d.Seconds())
	}
}

func (m *Metrics) skipped(d *device, n uint64) {
	if m != nil && n > 0 {
		m.Skipped.WithLabelValues(d.bus.name, d.info.Name).Add(float64(n))
	}
}

func (m *Metrics) up(d *device, up bool) {
	if m == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	d.series.up.Set(v)
}

func (m *Metrics) records(d *device, n int) {
	if m != nil && n > 0 {
		d.series.records.Add(float64(n))
	}
}

func (m *Metrics) sinkFailed(d *device) {
	if m != nil {
		m.SinkFailed.WithLabelValues(d.bus.name, d.info.Name).Inc()
	}
}

func (m *Metrics) rpc(d *device, err error) {
	if m == nil {
		return
	}
	outcome := "ok"
	if err != nil {
		outcome = KindOf(err)
	}
	m.RPC.WithLabelValues(d.bus.name, d.info.Name, outcome).Inc()
}
