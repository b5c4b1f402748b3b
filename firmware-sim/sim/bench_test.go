package sim

import (
	"fmt"
	"testing"
)

// BenchmarkRun measures the simulator itself against an in-process mochi
// broker: b.N telemetry messages spread over the devices, reporting
// acknowledged messages per second and publish → PUBACK latencies.
func BenchmarkRun(b *testing.B) {
	for _, bc := range []struct{ devices, inflight int }{{1, 1}, {8, 1}, {8, 16}} {
		b.Run(fmt.Sprintf("devices=%d/inflight=%d", bc.devices, bc.inflight), func(b *testing.B) {
			br := startBroker(b, "127.0.0.1:0", newTBState())
			perDevice := max(b.N/bc.devices, 1)
			b.ResetTimer()
			s, err := Run(b.Context(), Config{Broker: br.url(), Devices: bc.devices, Messages: perDevice, Inflight: bc.inflight}, nil)
			b.StopTimer()
			if err != nil || s.Acked != s.Sent {
				b.Fatalf("summary %+v, err %v", s, err)
			}
			b.ReportMetric(float64(s.Acked)/b.Elapsed().Seconds(), "msgs/s")
			b.ReportMetric(float64(s.P50.Microseconds()), "p50-µs")
			b.ReportMetric(float64(s.P99.Microseconds()), "p99-µs")
			b.ReportMetric(0, "ns/op")
		})
	}
}
