package kafkaserver

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Metrics are the listener's Prometheus collectors.
type Metrics struct {
	Connections    prometheus.Gauge
	BufferFull     prometheus.Counter       // connections closed: no room for their frame under MaxBufferedBytes
	Requests       *prometheus.CounterVec   // api, error ("NONE" for success)
	RequestSeconds *prometheus.HistogramVec // api
	Malformed      *prometheus.CounterVec   // reason
	Unsupported    *prometheus.CounterVec   // api
	FetchBytes     *prometheus.CounterVec   // topic
	SendfileBytes  prometheus.Counter
	ProduceBytes   *prometheus.CounterVec // topic
	ProduceRecords *prometheus.CounterVec // topic
	Duplicates     prometheus.Counter     // idempotent retries answered from producer state
	AuthFailures   prometheus.Counter
}

// NewMetrics creates the collectors and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_kafka_connections", Help: "Open Kafka protocol connections."}),
		BufferFull: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_kafka_buffer_full_total", Help: "Connections closed because their request found no room under kafka.max_buffered_bytes in time."}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_kafka_requests_total", Help: "Kafka requests answered, by API and by the first error code in the answer (NONE: success)."},
			[]string{"api", "error"}),
		RequestSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ferry_kafka_request_seconds", Help: "Time from reading a request to writing its answer (Fetch includes its long poll).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}, []string{"api"}),
		Malformed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_kafka_malformed_total", Help: "Connections closed for a request that could not be parsed or was not allowed, by reason."},
			[]string{"reason"}),
		Unsupported: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_kafka_unsupported_total", Help: "Requests for an API or version Ferry does not serve (answered UNSUPPORTED_VERSION)."},
			[]string{"api"}),
		FetchBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_kafka_fetch_bytes_total", Help: "Record batch bytes served by Fetch."}, []string{"topic"}),
		SendfileBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_kafka_sendfile_bytes_total", Help: "Fetch bytes sent from segment files with sendfile (zero copy)."}),
		ProduceBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_kafka_produce_bytes_total", Help: "Record batch bytes accepted by Produce."}, []string{"topic"}),
		ProduceRecords: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_kafka_produce_records_total", Help: "Records accepted by Produce."}, []string{"topic"}),
		Duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_kafka_produce_duplicates_total", Help: "Idempotent Produce batches recognised as retries and answered with their original offset."}),
		AuthFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_kafka_auth_failures_total", Help: "Failed SASL authentications."}),
	}
	if reg != nil {
		reg.MustRegister(m.Connections, m.BufferFull, m.Requests, m.RequestSeconds, m.Malformed,
			m.Unsupported, m.FetchBytes, m.SendfileBytes, m.ProduceBytes, m.ProduceRecords, m.Duplicates, m.AuthFailures)
	}
	return m
}

func (m *Metrics) observe(key, errc int16, _ int, d time.Duration) {
	name := apiName(key)
	m.Requests.WithLabelValues(name, errName(errc)).Inc()
	m.RequestSeconds.WithLabelValues(name).Observe(d.Seconds())
}

func apiName(key int16) string {
	if _, ok := apiByKey[key]; ok {
		return kmsg.NameForKey(key)
	}
	return "Unknown"
}

func errName(code int16) string {
	if code == 0 {
		return "NONE"
	}
	if err := kerr.ErrorForCode(code); err != nil {
		if ke, ok := err.(*kerr.Error); ok {
			return ke.Message
		}
	}
	return strconv.Itoa(int(code))
}
