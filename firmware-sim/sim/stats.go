package sim

import (
	"sync/atomic"
	"time"
)

// Summary is a run's counters. Sent, Acked, Failed and Unconfirmed count
// telemetry messages only; once Run has returned,
// Sent == Acked + Failed + Unconfirmed.
type Summary struct {
	// Devices is the configured fleet size. Connected is, during the run,
	// the number of devices with an open connection, and in Run's final
	// Summary the number that were connected when they stopped.
	Devices, Connected int
	// Sent counts telemetry publishes; Acked, Failed and Unconfirmed their
	// outcomes (see Outcome). Messages still in flight are in Sent only.
	Sent, Acked, Failed, Unconfirmed int64
	// Retried counts publishes paho refused at once because the
	// connection had just dropped (neither stored nor written); the device
	// sent the same message again once reconnected, so they are not in
	// Sent twice.
	Retried int64
	// Reconnects counts successful automatic reconnections.
	Reconnects int64
	// RPCAnswered counts server-side RPC requests answered and the answer
	// acknowledged.
	RPCAnswered int64
	// Provisioned counts devices that self-provisioned successfully.
	Provisioned int64
	// Attributes counts client-attribute updates acknowledged.
	Attributes int64
	// P50, P99 and Max are publish → PUBACK latencies of Acked messages
	// (for QoS 0, publish → written), with about 1.6 % resolution.
	P50, P99, Max time.Duration
}

// MessageResult is the outcome of one telemetry message, handed to
// Config.OnMessage.
type MessageResult struct {
	Device  int
	Seq     int
	Outcome Outcome
	Latency time.Duration // publish → completion (or → giving up)
	Err     error         // the publish token's error, if any
}

// stats are the counters all devices of a run share.
type stats struct {
	sent, acked, failed, unconfirmed atomic.Int64
	reconnects, rpcAnswered, retried atomic.Int64
	provisioned, attributes          atomic.Int64
	connected                        atomic.Int64 // devices with an open connection now
	connectedAtEnd                   atomic.Int64 // devices connected when they stopped
	latency                          latencyHist
}

func (s *stats) count(o Outcome, took time.Duration) {
	switch o {
	case Acked:
		s.acked.Add(1)
		s.latency.record(took)
	case Unconfirmed:
		s.unconfirmed.Add(1)
	default:
		s.failed.Add(1)
	}
}

// summary snapshots the counters; final picks connectedAtEnd for Connected.
func (s *stats) summary(devices int, final bool) Summary {
	connected := s.connected.Load()
	if final {
		connected = s.connectedAtEnd.Load()
	}
	return Summary{
		Devices:     devices,
		Connected:   int(connected),
		Sent:        s.sent.Load(),
		Acked:       s.acked.Load(),
		Failed:      s.failed.Load(),
		Unconfirmed: s.unconfirmed.Load(),
		Retried:     s.retried.Load(),
		Reconnects:  s.reconnects.Load(),
		RPCAnswered: s.rpcAnswered.Load(),
		Provisioned: s.provisioned.Load(),
		Attributes:  s.attributes.Load(),
		P50:         s.latency.quantile(0.50),
		P99:         s.latency.quantile(0.99),
		Max:         s.latency.maximum(),
	}
}
