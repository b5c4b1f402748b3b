package commands

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the dispatcher's Prometheus collectors.
type Metrics struct {
	Received  prometheus.Counter     // records read from the commands topic (redeliveries included)
	Delivered prometheus.Counter     // RPCs that reached the device: answered, one-way sent, or timed out
	Answered  prometheus.Counter     // commands answered with status ok
	Failed    *prometheus.CounterVec // delivered commands that failed, by reason: timeout, error
	Expired   prometheus.Counter     // commands answered "expired"
	Invalid   *prometheus.CounterVec // records answered as invalid, by reason (InvalidError.Reason)
	Lost      prometheus.Counter     // commands deleted by log retention before they were processed
	Errors    *prometheus.CounterVec // internal failures, by operation: read, append, checkpoint
	Pending   prometheus.Gauge       // commands held in memory (at most MaxInFlight)
	Waiting   prometheus.Gauge       // commands waiting for their device to become reachable
}

// NewMetrics creates the collectors and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_commands_received_total", Help: "Records read from the commands topic (redeliveries after a restart included).",
		}),
		Delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_commands_delivered_total", Help: "Commands delivered to devices as RPC (answered, one-way sent, or timed out).",
		}),
		Answered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_commands_answered_total", Help: "Commands answered with status ok.",
		}),
		Failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_commands_failed_total", Help: "Commands whose delivery failed, by reason (timeout, error).",
		}, []string{"reason"}),
		Expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_commands_expired_total", Help: "Commands answered expired: the device was not reachable in time.",
		}),
		Invalid: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_commands_invalid_total", Help: "Records answered as invalid commands, by reason.",
		}, []string{"reason"}),
		Lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_commands_lost_total", Help: "Command offsets deleted by log retention before they were processed.",
		}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_commands_errors_total", Help: "Internal failures of the command dispatcher, by operation (read, append, checkpoint).",
		}, []string{"op"}),
		Pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_commands_pending", Help: "Commands held in memory, waiting or being delivered.",
		}),
		Waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_commands_waiting_offline", Help: "Commands waiting for their device to become reachable.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Received, m.Delivered, m.Answered, m.Failed, m.Expired, m.Invalid, m.Lost,
			m.Errors, m.Pending, m.Waiting)
	}
	return m
}
