package kafkaserver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/state"
)

// Idempotent producer state, as Kafka keeps it: per producer id and
// partition the epoch and the sequence ranges of the last five batches, so
// a retried batch (same first and last sequence) is answered with its
// original offset instead of being stored twice, and a gap is refused.
// A retry of sequences stored before the last five batches is answered
// DUPLICATE_SEQUENCE_NUMBER (no offset is known any more; see checkLocked),
// and a batch stored only in part OUT_OF_ORDER_SEQUENCE_NUMBER.
//
// The state lives in memory. After a restart, the first idempotent batch
// for a partition rebuilds it from the batch headers of the partition's
// last rebuildOffsets offsets (producer id, epoch and sequences are in every
// stored batch), which covers the retries a client sends right after the
// restart. Producer ids come from a counter in the state store, reserved in
// blocks, so ids are never reused.

const (
	batchesToRetain = 5
	pidBlock        = 1000
	rebuildOffsets  = 8192
	maxProducerRefs = 100_000 // producer×partition entries kept; the least recently used go first
)

var pidKey = []byte("kafka/next_producer_id")

type pidPart struct {
	pid   int64
	topic string
	part  int32
}

// seqBatch is one accepted batch: its sequence range and its append.
type seqBatch struct {
	first, last int32
	base        int64             // valid once f is done (or when f is nil: rebuilt from the log)
	f           *commitlog.Future // nil for rebuilt entries
}

type producerState struct {
	mu      sync.Mutex // held across check and append, so one producer's batches queue in order
	epoch   int16
	batches []seqBatch // oldest first, at most batchesToRetain
	used    uint64     // LRU clock
}

type producers struct {
	st *state.Store

	mu      sync.Mutex
	next    int64                         // guarded by mu: next id to hand out
	limit   int64                         // guarded by mu: first id not reserved in the store
	states  map[pidPart]*producerState    // guarded by mu
	rebuilt map[*commitlog.Partition]bool // guarded by mu
	clock   uint64                        // guarded by mu
}

func newProducers(st *state.Store) (*producers, error) {
	p := &producers{st: st, states: map[pidPart]*producerState{}, rebuilt: map[*commitlog.Partition]bool{}}
	if st == nil {
		p.next, p.limit = 1, 1<<62
		return p, nil
	}
	v, err := st.Get(pidKey)
	switch {
	case errors.Is(err, state.ErrNotFound):
		p.next = 1
	case err != nil:
		return nil, fmt.Errorf("kafkaserver: read producer id counter: %w", err)
	case len(v) != 8:
		return nil, fmt.Errorf("kafkaserver: producer id counter has %d bytes, want 8", len(v))
	default:
		p.next = int64(binary.BigEndian.Uint64(v))
	}
	p.limit = p.next
	return p, nil
}

// allocate hands out a producer id never given before.
func (p *producers) allocate() (int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.next >= p.limit {
		limit := p.next + pidBlock
		if p.st != nil {
			if err := p.st.Set(pidKey, binary.BigEndian.AppendUint64(nil, uint64(limit))); err != nil {
				return 0, fmt.Errorf("kafkaserver: reserve producer ids: %w", err)
			}
		}
		p.limit = limit
	}
	id := p.next
	p.next++
	return id, nil
}

// known reports whether id was handed out by this store.
func (p *producers) known(id int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return id >= 1 && id < p.next
}

// entry returns the state for pid on partition part, creating it (and
// rebuilding the partition's producer states from its tail once).
func (p *producers) entry(pid int64, part *commitlog.Partition) *producerState {
	k := pidPart{pid, part.Topic().Name(), part.ID()}
	p.mu.Lock()
	if !p.rebuilt[part] {
		p.rebuilt[part] = true
		p.mu.Unlock()
		found := rebuildFromLog(part)
		p.mu.Lock()
		for pk, ps := range found {
			if _, ok := p.states[pk]; !ok {
				p.states[pk] = ps
			}
		}
	}
	ps := p.states[k]
	if ps == nil {
		ps = &producerState{epoch: -1}
		p.states[k] = ps
		if len(p.states) > maxProducerRefs {
			p.evictLocked()
		}
	}
	p.clock++
	ps.used = p.clock
	p.mu.Unlock()
	return ps
}

// evictLocked drops the least recently used tenth of the entries.
func (p *producers) evictLocked() {
	cut := p.clock - uint64(maxProducerRefs*9/10)
	for k, ps := range p.states {
		if ps.used < cut {
			delete(p.states, k)
		}
	}
}

// rebuildFromLog collects producer states from the batch headers of the
// partition's newest offsets.
func rebuildFromLog(part *commitlog.Partition) map[pidPart]*producerState {
	out := map[pidPart]*producerState{}
	off := max(part.StartOffset(), part.HighWatermark()-rebuildOffsets)
	var buf []byte
	for off < part.HighWatermark() {
		sl, err := part.Read(off, 1<<20)
		if err != nil || sl.Len == 0 {
			if sl != nil {
				sl.Release()
			}
			return out
		}
		buf, err = sl.AppendTo(buf[:0])
		sl.Release()
		if err != nil {
			return out
		}
		next := off
		_ = commitlog.SplitBatches(buf, func(h commitlog.BatchHeader, _ []byte) error {
			next = h.NextOffset()
			if h.ProducerID < 0 || h.BaseSequence < 0 {
				return nil
			}
			k := pidPart{h.ProducerID, part.Topic().Name(), part.ID()}
			ps := out[k]
			if ps == nil || h.ProducerEpoch > ps.epoch {
				ps = &producerState{epoch: h.ProducerEpoch}
				out[k] = ps
			}
			ps.push(seqBatch{first: h.BaseSequence, last: h.BaseSequence + h.LastOffsetDelta, base: h.BaseOffset})
			return nil
		})
		if next <= off {
			return out
		}
		off = next
	}
	return out
}

func (ps *producerState) push(b seqBatch) {
	if len(ps.batches) == batchesToRetain {
		copy(ps.batches, ps.batches[1:])
		ps.batches = ps.batches[:batchesToRetain-1]
	}
	ps.batches = append(ps.batches, b)
}

// checkLocked decides what to do with an idempotent batch: append it
// (dup == nil, code 0), answer it from an earlier append (dup != nil), or
// refuse it (code != 0).
func (ps *producerState) checkLocked(epoch int16, first, last int32) (dup *seqBatch, code int16) {
	ps.pruneFailedLocked()
	switch {
	case ps.epoch >= 0 && epoch < ps.epoch:
		return nil, kerr.InvalidProducerEpoch.Code
	case ps.epoch >= 0 && epoch > ps.epoch:
		if first != 0 {
			return nil, kerr.OutOfOrderSequenceNumber.Code
		}
		return nil, 0
	case len(ps.batches) == 0:
		return nil, 0 // unknown producer on this partition: any first sequence (KIP-360)
	}
	for i := range ps.batches {
		if b := ps.batches[i]; b.first == first && b.last == last {
			return &b, 0 // a copy: push shifts the slice
		}
	}
	prev := ps.batches[len(ps.batches)-1].last
	if next := prev + 1; first == next || (prev == 1<<31-1 && first == 0) {
		return nil, 0
	}
	if first <= prev && last <= prev {
		// Every sequence is already stored, but not as one of the
		// batches retained: a retry older than the last five, or one
		// cut differently. Kafka answers OUT_OF_ORDER_SEQUENCE_NUMBER
		// here, which the Java producer treats as fatal; the code the
		// protocol has for it is DUPLICATE_SEQUENCE_NUMBER, which the
		// Java producer and franz-go take as success without an
		// offset — true, and nothing is stored twice.
		return nil, kerr.DuplicateSequenceNumber.Code
	}
	// A gap, or a batch that is stored only in part (storing it would
	// duplicate the stored part, answering it would lose the rest).
	return nil, kerr.OutOfOrderSequenceNumber.Code
}

// pruneFailedLocked forgets trailing batches whose append failed, so the
// client's retry of them is appended instead of answered with the old
// error (a reject_new topic may have space again).
func (ps *producerState) pruneFailedLocked() {
	for n := len(ps.batches); n > 0; n-- {
		f := ps.batches[n-1].f
		if f == nil {
			return
		}
		select {
		case <-f.Done():
			if f.Err() == nil {
				return
			}
			ps.batches = ps.batches[:n-1]
		default:
			return
		}
	}
}

// recordLocked remembers an accepted batch.
func (ps *producerState) recordLocked(epoch int16, first, last int32, f *commitlog.Future) {
	if epoch != ps.epoch {
		ps.epoch = epoch
		ps.batches = ps.batches[:0]
	}
	ps.push(seqBatch{first: first, last: last, base: -1, f: f})
}

// offset returns a (possibly still pending) batch's base offset.
func (b *seqBatch) offset(ctx context.Context) (int64, error) {
	if b.f == nil {
		return b.base, nil
	}
	return b.f.Wait(ctx)
}
