package sim

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// The latency histogram is log-linear, like HdrHistogram: values below
// 2^subBits ns have a bucket each, and every further power of two is
// split into 2^subBits buckets, so a bucket is at most 1/64 (1.6 %) wide
// relative to its value. Recording is lock-free and memory is fixed
// (about 30 KiB), however long the run.
const (
	subBits    = 6
	subBuckets = 1 << subBits
	numBuckets = (64 - subBits + 1) * subBuckets
)

type latencyHist struct {
	counts [numBuckets]atomic.Int64
	total  atomic.Int64
	max    atomic.Int64
}

func (h *latencyHist) record(d time.Duration) {
	v := max(int64(d), 0)
	h.counts[bucketOf(uint64(v))].Add(1)
	h.total.Add(1)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// quantile returns the upper bound of the bucket holding the q-quantile,
// capped at the largest value recorded; 0 when nothing was recorded.
func (h *latencyHist) quantile(q float64) time.Duration {
	total := h.total.Load()
	if total == 0 {
		return 0
	}
	rank := int64(q*float64(total) + 0.999999999)
	rank = min(max(rank, 1), total)
	var seen int64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return time.Duration(min(bucketUpper(i), uint64(h.max.Load())))
		}
	}
	return time.Duration(h.max.Load()) // counts raced ahead of total
}

func (h *latencyHist) maximum() time.Duration { return time.Duration(h.max.Load()) }

// bucketOf returns the bucket index of v nanoseconds.
func bucketOf(v uint64) int {
	if v < subBuckets {
		return int(v)
	}
	exp := bits.Len64(v) - 1 // v is in [2^exp, 2^(exp+1)), exp >= subBits
	shift := exp - subBits
	return (shift+1)*subBuckets + int(v>>shift) - subBuckets
}

// bucketUpper returns the largest value that falls into bucket i.
func bucketUpper(i int) uint64 {
	if i < subBuckets {
		return uint64(i)
	}
	shift := i/subBuckets - 1
	mantissa := uint64(i%subBuckets + subBuckets)
	return (mantissa+1)<<shift - 1
}
