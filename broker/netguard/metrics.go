package netguard

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the listeners' collectors, labelled by listener name; one
// set serves every guarded listener of a process.
type Metrics struct {
	AcceptErrors *prometheus.CounterVec // failed accepts (EMFILE, ...)
	Refused      *prometheus.CounterVec // sockets closed at once: the connection cap was full of authenticated ones
	Evicted      *prometheus.CounterVec // pending sockets closed to make room
	AuthTimeouts *prometheus.CounterVec // pending sockets whose deadline passed
	Open         *prometheus.GaugeVec   // sockets open
	Pending      *prometheus.GaugeVec   // sockets not yet authenticated
	Accepting    *prometheus.GaugeVec   // 1 while accepts succeed, 0 while they fail
}

// NewMetrics creates the collectors and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	lbl := []string{"listener"}
	m := &Metrics{
		AcceptErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_listener_accept_errors_total", Help: "Failed accepts (out of file descriptors and the like), retried with backoff.",
		}, lbl),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_listener_refused_total", Help: "Connections closed at accept because the connection cap was reached.",
		}, lbl),
		Evicted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_listener_evicted_total", Help: "Unauthenticated connections closed to make room for new ones.",
		}, lbl),
		AuthTimeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_listener_auth_timeouts_total", Help: "Connections closed because they did not authenticate in time.",
		}, lbl),
		Open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_listener_connections", Help: "Open connections, authenticated or not.",
		}, lbl),
		Pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_listener_pending_connections", Help: "Connections that have not authenticated yet.",
		}, lbl),
		Accepting: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_listener_accepting", Help: "1 while the listener accepts connections, 0 while accepts fail.",
		}, lbl),
	}
	if reg != nil {
		reg.MustRegister(m.AcceptErrors, m.Refused, m.Evicted, m.AuthTimeouts, m.Open, m.Pending, m.Accepting)
	}
	return m
}

// labelled is one listener's children of the vectors.
type labelled struct {
	acceptErrors, refused, evicted, authTimeouts prometheus.Counter
	open, pending, accepting                     prometheus.Gauge
}

func (m *Metrics) forListener(name string) labelled {
	return labelled{
		acceptErrors: m.AcceptErrors.WithLabelValues(name), refused: m.Refused.WithLabelValues(name),
		evicted: m.Evicted.WithLabelValues(name), authTimeouts: m.AuthTimeouts.WithLabelValues(name),
		open: m.Open.WithLabelValues(name), pending: m.Pending.WithLabelValues(name),
		accepting: m.Accepting.WithLabelValues(name),
	}
}
