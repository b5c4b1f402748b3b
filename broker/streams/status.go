package streams

import "github.com/ferry-iot/ferry/broker/commitlog"

// A task's status, for the API and the metrics.

// Status is a pipeline's state for the API.
type Status struct {
	Name       string           `json:"name"`
	State      string           `json:"state"` // starting, restoring, running, paused, failed, stopped
	RecordsIn  int64            `json:"records_in"`
	RecordsOut int64            `json:"records_out"`
	Late       int64            `json:"late"`
	DeadLetter int64            `json:"dead_letter"`
	Commits    int64            `json:"commits"`
	StreamTime int64            `json:"stream_time"`
	Lag        map[string]int64 `json:"lag"` // input "topic/partition" → records not yet read
	LastError  string           `json:"last_error,omitempty"`
}

// publish makes the input positions and stream time visible to Status.
func (t *Task) publish(streamTime int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.status.StreamTime = streamTime
	if t.positions == nil {
		t.positions = map[*commitlog.Partition]position{}
	}
	for _, in := range t.inputs {
		t.positions[in.p] = position{in.topic, in.next}
	}
}

type position struct {
	topic string
	next  int64
}

// Status reports the pipeline's state.
func (t *Task) Status() Status {
	t.mu.Lock()
	s := t.status
	s.Lag = make(map[string]int64, len(t.positions))
	for p, pos := range t.positions {
		s.Lag[tp(pos.topic, p.ID())] = max(0, p.HighWatermark()-pos.next)
	}
	t.mu.Unlock()
	s.RecordsIn, s.RecordsOut = t.counters.in.Load(), t.counters.out.Load()
	s.Late, s.DeadLetter, s.Commits = t.counters.late.Load(), t.counters.dead.Load(), t.counters.commits.Load()
	return s
}

func (t *Task) setState(state string) {
	t.mu.Lock()
	t.status.State = state
	t.mu.Unlock()
}

func (t *Task) setError(err error) {
	t.mu.Lock()
	t.status.LastError = err.Error()
	t.mu.Unlock()
}
