#!/usr/bin/env bash
# scripts/bench.sh — the benchmarks behind BENCHMARKS.md, on this machine's disk.
#
#   scripts/bench.sh            append (log vs raw file vs badger) and recovery
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

if command -v benchstat >/dev/null 2>&1; then
  benchstat "$out/append.txt" > "$out/append.stat"
  cat "$out/append.stat"
fi
