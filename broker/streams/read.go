package streams

// Reading a task's inputs: one reader goroutine per input partition
// reads ahead; the task takes the head with the smallest timestamp.

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

// nextInput is the input whose next record has the smallest timestamp,
// nil when every input is caught up.
func (t *Task) nextInput() (*input, error) {
	var best *input
	for _, in := range t.inputs {
		if len(in.buf) == 0 {
			if err := t.fill(in); err != nil {
				return nil, err
			}
			if len(in.buf) == 0 {
				continue
			}
		}
		if best == nil || in.buf[0].Timestamp < best.buf[0].Timestamp {
			best = in
		}
	}
	return best, nil
}

func (t *Task) fill(in *input) error {
	if in.next < in.readTo {
		in.next = in.readTo // the rest of the last read was compacted away or damaged
	}
	if in.next >= in.p.HighWatermark() {
		return nil
	}
	var res readResult
	select {
	case res = <-in.ahead: // the reader has it, or is reading it
	case <-t.stop.Done():
		return t.stop.Err()
	}
	if res.err != nil {
		return fmt.Errorf("read %s/%d at %d: %w", in.topic, in.p.ID(), res.from, res.err)
	}
	if res.from > in.next {
		t.opts.Logger.Warn("stream pipeline input lost to retention before it was read", "pipeline", t.top.name,
			"topic", in.topic, "partition", in.p.ID(), "from", in.next, "to", res.from)
		in.next = res.from
	}
	in.buf, in.readTo = res.recs, res.next
	if len(in.buf) == 0 {
		in.buf = nil
		in.next = max(in.next, res.next)
	}
	return nil
}

// readResult is one read of an input partition by its reader.
type readResult struct {
	recs       []commitlog.Record // from offset from on
	from, next int64
	err        error
}

// startReaders starts one goroutine per input that reads its partition
// ahead of processing (a read of 128 KiB, decoded, waiting in a channel),
// so reading and processing use two cores. They stop with ctx; stop
// waits for them.
func (t *Task) startReaders(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, in := range t.inputs {
		in.ahead = make(chan readResult, 1)
		in.readTo = in.next
		wg.Add(1)
		go func() {
			defer wg.Done()
			readAhead(ctx, in.p, in.next, in.ahead)
		}()
	}
	return func() { cancel(); wg.Wait() }
}

func readAhead(ctx context.Context, p *commitlog.Partition, pos int64, out chan<- readResult) {
	for {
		changed := p.Changed()
		if pos >= p.HighWatermark() {
			select {
			case <-changed:
				continue
			case <-ctx.Done():
				return
			}
		}
		pos = max(pos, p.StartOffset())
		recs, next, _, err := p.ReadRecords(pos, 128<<10)
		if errors.Is(err, commitlog.ErrOffsetOutOfRange) {
			continue // retention moved the start: read from there
		}
		i := 0
		for i < len(recs) && recs[i].Offset < pos {
			i++
		}
		select {
		case out <- readResult{recs: recs[i:], from: pos, next: next, err: err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
		pos = max(pos, next)
	}
}
