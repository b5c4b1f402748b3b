package commitlog

import (
	"fmt"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/ferry-iot/ferry/devices/thingsboard"
	"github.com/ferry-iot/ferry/firmware-sim/sim"
)

// fleetRecords builds n seconds of a fleet's telemetry records as the
// MQTT ingest stores them (key = device, value = {"ts":..,"values":{..}},
// headers device and device_type), in arrival order: every device once a
// second, payload shapes rotating as firmware-sim's do.
func fleetRecords(tb testing.TB, devices, seconds int, deviceHeader bool) []Record {
	tb.Helper()
	start := time.UnixMilli(1_780_000_000_000)
	shapes := sim.DefaultShapes()
	var recs []Record
	for s := range seconds {
		for d := range devices {
			now := start.Add(time.Duration(s)*time.Second + time.Duration(d)*time.Second/time.Duration(devices))
			entries, err := thingsboard.ParseTelemetry(sim.Telemetry(shapes[s%len(shapes)], d, s, now))
			if err != nil {
				tb.Fatal(err)
			}
			name := fmt.Sprintf("sim-device-%d", d)
			h := []Header{{Key: "device_type", Value: []byte("default")}}
			if deviceHeader {
				h = append([]Header{{Key: "device", Value: []byte(name)}}, h...)
			}
			for _, e := range entries {
				ts := e.Ts
				if ts == 0 {
					ts = now.UnixMilli()
				}
				recs = append(recs, Record{Key: []byte(name), Value: thingsboard.AppendRecordValue(nil, ts, e.Values), Timestamp: ts, Headers: h})
			}
		}
	}
	return recs
}

// BenchmarkFleetRecordBytes measures the bytes a fleet record takes in a
// segment by the levers the log controls: records per batch (what the
// commit policy's delay buys), the zstd level, and whether the device
// header (the same bytes as the key) is kept. It reports stored bytes per
// record and the CPU the compression takes per record.
//
//	go test -run '^$' -bench FleetRecordBytes ./broker/commitlog/
func BenchmarkFleetRecordBytes(b *testing.B) {
	levels := []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression}
	for _, header := range []bool{true, false} {
		recs := fleetRecords(b, 1000, 8, header)
		for _, per := range []int{1, 10, 50, 100, 250, 1000} {
			for _, lvl := range levels {
				b.Run(fmt.Sprintf("device_header=%v/per_batch=%d/zstd=%s", header, per, lvl), func(b *testing.B) {
					enc, err := zstd.NewWriter(nil, zstd.WithWindowSize(64<<10), zstd.WithEncoderConcurrency(1),
						zstd.WithZeroFrames(true), zstd.WithEncoderCRC(false), zstd.WithEncoderLevel(lvl))
					if err != nil {
						b.Fatal(err)
					}
					var stored, raw, n int64
					var out, batch []byte
					b.ResetTimer()
					for b.Loop() {
						stored, raw, n = 0, 0, 0
						for i := 0; i < len(recs); i += per {
							bb := &batchBuilder{}
							for _, r := range recs[i:min(i+per, len(recs))] {
								bb.add(&r, r.Timestamp)
							}
							out = enc.EncodeAll(bb.records, out[:0])
							codec, body := CompressionZstd, out
							if len(out) >= len(bb.records) {
								codec, body = CompressionNone, bb.records
							}
							batch = appendBatch(batch[:0], batchFields{attributes: int16(codec), lastDelta: bb.count - 1,
								firstTs: bb.firstTs, maxTs: bb.maxTs, producerID: -1, producerEpoch: -1, baseSequence: -1, count: bb.count}, body)
							stored += int64(len(batch))
							raw += int64(len(bb.records))
							n += int64(bb.count)
						}
					}
					b.ReportMetric(float64(stored)/float64(n), "B/record")
					b.ReportMetric(float64(raw)/float64(n), "raw_B/record")
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(int64(b.N)*n), "ns/record")
					b.ReportMetric(0, "ns/op")
				})
			}
		}
	}
}
