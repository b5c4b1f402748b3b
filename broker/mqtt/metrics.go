package mqtt

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the broker's Prometheus collectors.
type Metrics struct {
	Messages       *prometheus.CounterVec // publishes received, by ThingsBoard topic kind
	Records        *prometheus.CounterVec // records appended, by log topic
	Rejected       *prometheus.CounterVec // refused input, by reason
	Provisioned    *prometheus.CounterVec // provisioning requests, by outcome
	Connected      prometheus.Gauge       // authenticated device connections
	Online         prometheus.Gauge       // devices with at least one connection
	Takeovers      prometheus.Counter     // connections that displaced one of the same device and client id
	IllegalReasons prometheus.Counter     // reason codes MQTT 5 does not allow on their packet, replaced
	ClosedV3       prometheus.Counter     // MQTT 3.x connections closed where MQTT 5 gets a DISCONNECT
	ClientRPC      *prometheus.CounterVec // client-side RPC forwarded to a backend, by outcome
	AckLatency     prometheus.Histogram   // publish received → PUBACK decided
	StorageErrors  prometheus.Counter     // appends that failed
	Downlinks      prometheus.Counter     // messages written to devices
	RPCs           prometheus.Counter     // server-side RPCs sent
}

// NewMetrics creates the collectors and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_mqtt_messages_total", Help: "MQTT publishes received from devices, by topic kind.",
		}, []string{"kind"}),
		Records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_records_ingested_total", Help: "Records appended to the log from MQTT, by log topic.",
		}, []string{"topic"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_mqtt_rejected_total", Help: "Refused MQTT input, by reason.",
		}, []string{"reason"}),
		Provisioned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_provisioning_requests_total", Help: "Device provisioning requests, by outcome.",
		}, []string{"outcome"}),
		Connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_connected_devices", Help: "Authenticated MQTT device connections.",
		}),
		Online: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_devices_online", Help: "Devices with at least one authenticated MQTT connection of their own.",
		}),
		Takeovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_mqtt_session_takeovers_total", Help: "Connections that took over the session of an earlier connection of the same device and client id.",
		}),
		IllegalReasons: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_mqtt_illegal_reason_codes_total", Help: "Reason codes MQTT 5 does not allow on their packet type, replaced by 0x80 (should stay 0).",
		}),
		ClientRPC: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_client_rpc_total", Help: "Client-side RPC requests forwarded to a backend and their replies, by outcome (forwarded, answered, timeout, unmatched_reply, invalid_reply).",
		}, []string{"outcome"}),
		ClosedV3: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_mqtt_closed_v3_total", Help: "MQTT 3.x connections closed by the broker (3.1.1 has no server DISCONNECT).",
		}),
		AckLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ferry_mqtt_puback_latency_seconds",
			Help:    "Time from receiving a QoS 1 publish to sending its PUBACK (storage included).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}),
		StorageErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_mqtt_storage_errors_total", Help: "Publishes whose records could not be stored (never acknowledged as success).",
		}),
		Downlinks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_mqtt_downlinks_total", Help: "Messages written to devices (responses, pushes, RPC).",
		}),
		RPCs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_rpc_requests_total", Help: "Server-side RPC requests sent to devices.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Messages, m.Records, m.Rejected, m.Provisioned, m.Connected, m.Online, m.Takeovers, m.IllegalReasons, m.ClientRPC, m.ClosedV3, m.AckLatency,
			m.StorageErrors, m.Downlinks, m.RPCs)
	}
	return m
}
