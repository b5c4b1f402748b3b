package registry

import (
	"sync"
	"sync/atomic"

	"github.com/ferry-iot/ferry/broker/state"
)

// Write is a registry change on its way to the store. It completes (Done
// is closed) once the change is durable or has failed; Err then says which.
//
// Writes commit in the order they were made, and a failed commit fails
// every write queued after it too (their in-memory effects are undone), so
// a successful Write implies that every Write made before it succeeded:
// waiting for the last of several Writes is waiting for all of them.
type Write struct {
	done chan struct{}
	err  error  // set before done is closed
	seq  uint64 // queue position, set by enqueue

	sets    []kv
	deletes [][]byte
	// prefixDelete, when set, deletes every stored key with this prefix
	// (a device's attributes) in the same transaction. Such a write commits
	// alone, after everything queued before it, so the keys it finds are
	// exactly the ones written so far.
	prefixDelete []byte
	size         int
	undo         func()            // reverts the in-memory change (called under wmu); nil: none
	wrap         func(error) error // names the change in its error
}

type kv struct{ k, v []byte }

// Done is closed when the write is durable or has failed.
func (w *Write) Done() <-chan struct{} { return w.done }

// Latest returns whichever of a and b was made later (either may be nil):
// waiting for it is waiting for both.
func Latest(a, b *Write) *Write {
	switch {
	case a == nil:
		return b
	case b == nil || a.seq > b.seq:
		return a
	}
	return b
}

// pending returns w if it has not completed yet, else nil.
func (w *Write) pending() *Write {
	if w == nil {
		return nil
	}
	select {
	case <-w.done:
		return nil
	default:
		return w
	}
}

// Wait waits for the write and returns its outcome.
func (w *Write) Wait() error {
	<-w.done
	return w.err
}

func (w *Write) set(k, v []byte) {
	w.sets = append(w.sets, kv{k, v})
	w.size += len(k) + len(v)
}

func (w *Write) delete(k []byte) {
	w.deletes = append(w.deletes, k)
	w.size += len(k)
}

func (w *Write) ops() int { return len(w.sets) + len(w.deletes) }

// Batches are bounded so that one badger transaction stays well inside
// badger's batch limit (15% of the 2 MiB memtable for inline values); a
// single write larger than that commits alone.
const (
	maxBatchOps   = 1000
	maxBatchBytes = 96 << 10
)

// writer commits queued writes in order, coalescing the writes that queue
// up while a commit is in progress into one transaction (one sync).
//
// Its goroutine runs only while writes are queued: enqueue starts it, and
// it exits when the queue is empty; whoever waits for a Write waits for it.
// mu is a leaf lock.
type writer struct {
	mu      sync.Mutex
	queue   []*Write // guarded by mu: made, not yet committed, in order
	running bool     // guarded by mu: the commit goroutine is alive
	seq     uint64   // guarded by mu: the last Write's seq

	commits atomic.Uint64 // transactions committed (or attempted)
	writes  atomic.Uint64 // writes completed, either way
}

// enqueue queues w. The caller holds Registry.wmu and has applied w's
// in-memory effect already, so queue order is the order of those effects.
func (r *Registry) enqueue(w *Write) *Write {
	w.done = make(chan struct{})
	r.w.mu.Lock()
	r.w.seq++
	w.seq = r.w.seq
	r.w.queue = append(r.w.queue, w)
	if !r.w.running {
		r.w.running = true
		go r.commitLoop()
	}
	r.w.mu.Unlock()
	return w
}

// commitLoop is the writer's goroutine: it commits batches until the queue
// is empty.
func (r *Registry) commitLoop() {
	for {
		batch := r.nextBatch()
		if batch == nil {
			return
		}
		err := r.commit(batch)
		r.w.commits.Add(1)
		if err != nil {
			r.failFrom(batch, err)
			continue
		}
		for _, w := range batch {
			r.finish(w, nil)
		}
	}
}

// nextBatch takes the writes to commit together: consecutive writes up to
// the batch bounds, a prefix delete always alone. It returns nil (and
// marks the writer idle) when nothing is queued.
func (r *Registry) nextBatch() []*Write {
	r.w.mu.Lock()
	defer r.w.mu.Unlock()
	q := r.w.queue
	if len(q) == 0 {
		r.w.running = false
		r.w.queue = nil
		return nil
	}
	n, ops, size := 1, q[0].ops(), q[0].size
	if q[0].prefixDelete == nil {
		for n < len(q) && q[n].prefixDelete == nil &&
			ops+q[n].ops() <= maxBatchOps && size+q[n].size <= maxBatchBytes {
			ops += q[n].ops()
			size += q[n].size
			n++
		}
	}
	batch := make([]*Write, n)
	copy(batch, q)
	clear(q[:n])
	r.w.queue = q[n:]
	return batch
}

// commit writes the batch in one transaction.
func (r *Registry) commit(batch []*Write) error {
	var scanned [][]byte
	if p := batch[0].prefixDelete; p != nil {
		err := r.st.Scan(p, func(k, _ []byte) error {
			scanned = append(scanned, k)
			return nil
		})
		if err != nil {
			return err
		}
	}
	return r.st.Update(func(tx *state.Txn) error {
		for _, k := range scanned {
			if err := tx.Delete(k); err != nil {
				return err
			}
		}
		for _, w := range batch {
			for _, k := range w.deletes {
				if err := tx.Delete(k); err != nil {
					return err
				}
			}
			for _, s := range w.sets {
				if err := tx.Set(s.k, s.v); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// failFrom fails the batch and every write queued after it, undoing their
// in-memory effects newest first, under wmu so that no writer validates
// against the state being undone.
func (r *Registry) failFrom(batch []*Write, err error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.w.mu.Lock()
	rest := r.w.queue
	r.w.queue = nil
	r.w.mu.Unlock()
	all := append(batch, rest...)
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].undo != nil {
			all[i].undo()
		}
	}
	for _, w := range all {
		r.finish(w, err)
	}
}

func (r *Registry) finish(w *Write, err error) {
	if err != nil && w.wrap != nil {
		err = w.wrap(err)
	}
	w.err = err
	w.sets, w.deletes, w.undo, w.wrap = nil, nil, nil, nil // entries keep their Write: keep it small
	r.w.writes.Add(1)
	close(w.done)
}

// Stats are the writer's counters.
type Stats struct {
	Writes  uint64 // registry changes completed (durable or failed)
	Commits uint64 // store transactions they took: fewer than Writes when writes were coalesced
}

// Stats returns the writer's counters.
func (r *Registry) Stats() Stats {
	return Stats{Writes: r.w.writes.Load(), Commits: r.w.commits.Load()}
}
