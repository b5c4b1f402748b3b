package commitlog

// A Watcher wakes its owner when any partition it watches changes: its
// high watermark moves, its topic is deleted or the log closes. It is the
// long poll over several partitions that a Kafka fetch and the bridge
// need, without a select over one channel per partition.
//
// Watch a partition before reading it, so that a change after the read is
// not missed; then wait on C. Watches stay until Stop, so a loop that
// reads and waits again re-registers nothing. A Watcher is used by one
// goroutine.
type Watcher struct {
	c     chan struct{}
	parts []*Partition
}

// NewWatcher returns a Watcher watching nothing.
func NewWatcher() *Watcher { return &Watcher{c: make(chan struct{}, 1)} }

// Watch adds p; watching a partition twice is watching it once.
func (w *Watcher) Watch(p *Partition) {
	p.notifyMu.Lock()
	_, had := p.watchers[w]
	if !had {
		if p.watchers == nil {
			p.watchers = map[*Watcher]struct{}{}
		}
		p.watchers[w] = struct{}{}
	}
	p.notifyMu.Unlock()
	if !had {
		w.parts = append(w.parts, p)
	}
}

// C receives when a watched partition changed since C last received (one
// signal stands for any number of changes).
func (w *Watcher) C() <-chan struct{} { return w.c }

// Stop removes every watch. The Watcher may watch again afterwards.
func (w *Watcher) Stop() {
	for _, p := range w.parts {
		p.notifyMu.Lock()
		delete(p.watchers, w)
		p.notifyMu.Unlock()
	}
	clear(w.parts)
	w.parts = w.parts[:0]
}

// signal notes a change without blocking.
func (w *Watcher) signal() {
	select {
	case w.c <- struct{}{}:
	default:
	}
}
