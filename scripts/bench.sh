#!/usr/bin/env bash
# scripts/bench.sh — the benchmarks behind BENCHMARKS.md, on this machine's disk.
#
#   scripts/bench.sh            log append (vs raw file, vs badger), recovery, MQTT ingest (vs plain
#                               mochi), 1,000-device memory and latency
#   COUNT=10 scripts/bench.sh   more repetitions
#
# Raw outputs go to bench-out/; benchstat (golang.org/x/perf/cmd/benchstat)
# summarizes them when it is installed. Recovery with cache=cold needs root
# (it drops the page cache).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BENCH_OUT:-bench-out}
mkdir -p "$out"
count=${COUNT:-5}
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

go test -run '^$' -bench 'BenchmarkAppend|BenchmarkRawFileAppend|BenchmarkBadgerAppend' \
  -benchtime="${BENCHTIME:-2s}" -count="$count" -timeout 60m ./broker/log/ | tee "$out/append.txt"
go test -run '^$' -bench 'BenchmarkRecovery' -benchtime=3x -count=1 -timeout 60m ./broker/log/ | tee "$out/recovery.txt"
# The broker: QoS 1 ingest vs plain mochi, 1,000 devices' memory, latency at half the maximum rate.
go test -run '^$' -bench 'BenchmarkIngest' -benchtime=30000x -count="$count" -timeout 60m ./gateway/ | tee "$out/ingest.txt"
go test -run '^$' -bench 'BenchmarkDeviceFleet' -benchtime=1x -count=1 -timeout 60m ./gateway/ | tee "$out/fleet.txt"

if command -v benchstat >/dev/null 2>&1; then
  benchstat "$out/append.txt" > "$out/append.stat"
  benchstat "$out/ingest.txt" > "$out/ingest.stat"
  cat "$out/append.stat" "$out/ingest.stat"
fi
