package thingsboard

import (
	"encoding/json"
	"testing"
)

// A typical device publish: ~150 bytes, mixed types.
var benchTelemetry = []byte(`{"temperature":21.5,"humidity":73,"pressure":1013.25,"battery":"3.7","status":"ok","active":true,"rssi":-67,"fw":"1.4.2","uptime":86400}`)

var benchTimeseries = []byte(`[{"ts":1451649600000,"values":{"t":22.5,"h":40}},{"ts":1451649601000,"values":{"t":22.7,"h":41}},{"ts":1451649602000,"values":{"t":22.6,"h":40,"pos":{"lat":52.1,"lon":4.3}}}]`)

var benchGateway = []byte(`{"Device A":[{"ts":1483228800000,"values":{"temperature":42,"humidity":80}}],"Device B":[{"ts":1483228800000,"values":{"temperature":21.5}},{"humidity":"55"}]}`)

func BenchmarkParseTelemetry(b *testing.B) {
	b.Run("object", func(b *testing.B) { benchParse(b, benchTelemetry) })
	b.Run("timeseries", func(b *testing.B) { benchParse(b, benchTimeseries) })
}

func benchParse(b *testing.B, payload []byte) {
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		if _, err := ParseTelemetry(payload); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodingJSON is the reflection-based baseline the brief asks to
// beat: decoding the same object into map[string]any with UseNumber
// semantics skipped (it does not even type values the ThingsBoard way).
func BenchmarkEncodingJSON(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchTelemetry)))
	for b.Loop() {
		var m map[string]any
		if err := json.Unmarshal(benchTelemetry, &m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseGatewayTelemetry(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchGateway)))
	for b.Loop() {
		if _, err := ParseGatewayTelemetry(benchGateway); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendRecordValue(b *testing.B) {
	entries, err := ParseTelemetry(benchTelemetry)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendRecordValue(buf[:0], 1451649600512, entries[0].Values)
	}
	b.ReportMetric(float64(len(buf)), "bytes/record")
}

func BenchmarkParseTopic(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseTopic("v1/devices/me/attributes/request/42"); err != nil {
			b.Fatal(err)
		}
	}
}
