package commitlog

import (
	"context"
	"sync"
	"sync/atomic"
)

// Future is the outcome of an append: it completes when the records are
// durable under the topic's flush policy (or failed). Callers may hold many
// futures at once to pipeline appends.
type Future struct {
	done      chan struct{}
	remaining atomic.Int32

	mu        sync.Mutex
	err       error
	partition int32
	offset    int64
	set       bool
}

func newFuture(parts int) *Future {
	f := &Future{done: make(chan struct{}), offset: -1, partition: -1}
	f.remaining.Store(int32(parts))
	return f
}

// failedFuture returns a future that is already complete with err.
func failedFuture(err error) *Future {
	f := newFuture(1)
	f.complete(-1, -1, err)
	return f
}

// complete records one part's result; the future is done when every part
// reported.
func (f *Future) complete(partition int32, offset int64, err error) {
	f.mu.Lock()
	if err != nil && f.err == nil {
		f.err = err
	}
	if err == nil && !f.set {
		f.partition, f.offset, f.set = partition, offset, true
	}
	f.mu.Unlock()
	if f.remaining.Add(-1) == 0 {
		close(f.done)
	}
}

// Done is closed when the append completed.
func (f *Future) Done() <-chan struct{} { return f.done }

// Err returns the append's error once Done is closed (nil before).
func (f *Future) Err() error {
	select {
	case <-f.done:
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.err
	default:
		return nil
	}
}

// Offset returns the offset of the first record, and its partition, once
// Done is closed. When one Topic.Append spread records over several
// partitions, it names the first partition that committed.
func (f *Future) Offset() (partition int32, offset int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.partition, f.offset
}

// Wait blocks until the append completes or ctx ends, and returns the
// offset of the first record.
func (f *Future) Wait(ctx context.Context) (int64, error) {
	select {
	case <-f.done:
	case <-ctx.Done():
		return -1, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.offset, f.err
}
