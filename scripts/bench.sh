#!/usr/bin/env bash
# scripts/bench.sh — the benchmarks behind BENCHMARKS.md, on this machine's disk.
#
#   scripts/bench.sh            log append (vs raw file, vs badger, slow fsync), recovery, MQTT ingest
#                               (vs plain mochi), 1,000-device memory and latency, Kafka consume and
#                               produce (vs in-process), bridge drain of 1 GiB (vs plain franz-go)
#   COUNT=10 scripts/bench.sh   more repetitions (default 6)
#   ONLY=kafka scripts/bench.sh one part: log, recovery, broker, kafka, bridge, wear, adapters or streams
#   (wear: the daemon with 1,000 devices at 1 Hz and 100 at 10 Hz, log.ack_delay from 0 to 250 ms;
#   TMPDIR must be on the disk to measure, not a tmpfs)
#
# Raw outputs go to bench-out/; benchstat (golang.org/x/perf/cmd/benchstat)
# summarizes them when it is installed. Recovery with cache=cold needs root
# (it drops the page cache).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BENCH_OUT:-bench-out}
mkdir -p "$out"
count=${COUNT:-6}
only=${ONLY:-}
part() { [ -z "$only" ] || [ "$only" = "$1" ]; }
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

if part log; then
  go test -run '^$' -bench '^(BenchmarkAppend|BenchmarkRawFileAppend|BenchmarkBadgerAppend)$' \
    -benchtime="${BENCHTIME:-2s}" -count="$count" -timeout 60m ./broker/commitlog/ | tee "$out/append.txt"
  go test -run '^$' -bench '^BenchmarkAppendSlowFsync$' -benchtime=20000x -count="$count" -timeout 60m ./broker/commitlog/ | tee "$out/slowfsync.txt"
fi
if part recovery; then
  go test -run '^$' -bench 'BenchmarkRecovery' -benchtime=3x -count=1 -timeout 60m ./broker/commitlog/ | tee "$out/recovery.txt"
fi
# The broker: QoS 1 ingest vs plain mochi, 1,000 devices' memory, latency at half the maximum rate.
if part broker; then
  go test -run '^$' -bench 'BenchmarkIngest' -benchtime=30000x -count="$count" -timeout 60m ./gateway/ | tee "$out/ingest.txt"
  go test -run '^$' -bench 'BenchmarkDeviceFleet' -benchtime=1x -count=1 -timeout 60m ./gateway/ | tee "$out/fleet.txt"
fi
# The Kafka listener: a franz-go consumer vs reading the segments in process; acks=-1 produce vs the
# log's own append path.
if part kafka; then
  go test -run '^$' -bench 'BenchmarkConsume' -benchtime=3x -count="$count" -timeout 60m ./broker/kafkaserver/ | tee "$out/consume.txt"
  go test -run '^$' -bench 'BenchmarkProduce' -benchtime=200000x -count="$count" -timeout 60m ./broker/kafkaserver/ | tee "$out/produce.txt"
fi
# The bridge: a 1 GiB backlog drained to kfake vs a plain franz-go producer, one run each
# (FERRY_BENCH_DRAIN_MB sets the backlog size).
if part bridge; then
  go test -run '^$' -bench 'BenchmarkDrain' -benchtime=1x -count=3 -timeout 60m ./bridge/kafka/ | tee "$out/drain.txt"
fi

# SD-card wear at fleet rates: fsyncs, segment and block-device bytes, GiB a day, PUBACK p50/p99.
if part wear; then
  go test -run '^$' -bench 'BenchmarkFleetWear' -benchtime=1x -count=1 -timeout 60m ./gateway/ | tee "$out/wear.txt"
  go test -run '^$' -bench 'BenchmarkFleetRecordBytes' -benchtime=3x -count=1 -timeout 60m ./broker/commitlog/ | tee "$out/recordbytes.txt"
fi

# Device adapters: Modbus TCP polls/s vs the library's bare client, an RTU line vs its limit at
# 9600-115200 baud, poll jitter of 200 devices at 1 s vs bare tickers, RSS added by 200 devices.
if part adapters; then
  go test -run '^$' -bench 'BenchmarkModbus' -benchtime=1x -count=1 -timeout 60m ./devices/modbus/ | tee "$out/modbus.txt"
  go test -run '^$' -bench 'BenchmarkAdapterRSS' -benchtime=1x -count=1 -timeout 60m ./gateway/ | tee "$out/adapter-rss.txt"
fi
# Stream pipelines: filter + tumbling average vs the log's own ReadRecords on the same records,
# heap per pipeline, upstream bytes with and without one-minute downsampling (1,000 devices, 1 Hz).
if part streams; then
  go test -run '^$' -bench 'BenchmarkPipeline' -benchtime=3x -count="$count" -timeout 60m ./broker/streams/ | tee "$out/streams.txt"
  go test -run '^$' -bench 'BenchmarkUpstreamDownsampling' -benchtime=1x -count=3 -timeout 60m ./gateway/ | tee "$out/downsampling.txt"
fi

if command -v benchstat >/dev/null 2>&1; then
  for f in append slowfsync ingest consume produce streams; do
    if [ -s "$out/$f.txt" ]; then
      benchstat "$out/$f.txt" > "$out/$f.stat"
      cat "$out/$f.stat"
    fi
  done
fi
