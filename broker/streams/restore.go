package streams

// Restoring a task from its changelog: the state, the input positions,
// and the last commit's outputs finished.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

// restore rebuilds the state from the changelog, finishes the last
// commit's outputs and sets the input positions.
func (t *Task) restore(ctx context.Context) error {
	name := t.top.name
	cl, err := topicOrCreate(t.log, name+".changelog", commitlog.TopicConfig{Partitions: 1, Cleanup: commitlog.CleanupCompact,
		MaxBatchBytes: 8 << 20, SegmentBytes: 16 << 20})
	if err != nil {
		return fmt.Errorf("changelog: %w", err)
	}
	if t.changelog, err = cl.Partition(0); err != nil {
		return fmt.Errorf("changelog: %w", err)
	}
	extra := []string{name + ".dlq"}
	if t.top.late {
		extra = append(extra, name+".late")
	}
	t.outTopics = map[string]*commitlog.Topic{}
	for _, topic := range append(t.top.Outputs(), extra...) {
		top, err := topicOrCreate(t.log, topic, commitlog.TopicConfig{})
		if err != nil {
			return fmt.Errorf("output topic %s: %w", topic, err)
		}
		t.outTopics[topic] = top
	}

	committed := map[string][]byte{}
	pending := map[string][]byte{}
	var lastVal []byte
	var lastOff int64
	for off := t.changelog.StartOffset(); off < t.changelog.HighWatermark(); {
		recs, next, _, err := t.changelog.ReadRecords(off, 1<<20)
		if err != nil {
			return fmt.Errorf("changelog at %d: %w", off, err)
		}
		for i := range recs {
			r := &recs[i]
			if r.Offset < off {
				continue
			}
			if string(r.Key) != commitKey {
				pending[string(r.Key)] = r.Value
				continue
			}
			lastVal, lastOff = r.Value, r.Offset // only the last marker is decoded
			for k, v := range pending {
				if v == nil {
					delete(committed, k)
				} else {
					committed[k] = v
				}
			}
			clear(pending)
		}
		if next <= off {
			break
		}
		off = next
	}

	var last *marker
	if lastVal != nil {
		last = &marker{}
		if err := json.Unmarshal(lastVal, last); err != nil {
			return fmt.Errorf("changelog commit at %d: %w", lastOff, err)
		}
	}
	t.seq, t.streamTime = 0, 0
	t.repair, t.hasRepair = map[string][]byte{}, map[string]bool{}
	// Entries after the last marker belong to a commit that did not
	// finish: the next commit writes the committed value over each.
	for k := range pending {
		t.repair[k], t.hasRepair[k] = committed[k], true
	}
	if last != nil {
		t.seq, t.streamTime = last.Seq, last.StreamTime
		if last.Fingerprint != t.fp {
			t.opts.Logger.Warn("stream pipeline changed in a way its stored state does not fit; starting with empty state",
				"pipeline", name, "entries", len(committed))
			for k := range committed {
				t.repair[k], t.hasRepair[k] = nil, true
			}
			committed = map[string][]byte{}
			t.streamTime = 0
		}
	}
	t.resetState()
	for k, v := range committed {
		id, key, ok := strings.Cut(k, "\x00")
		if !ok {
			continue
		}
		for _, sn := range t.state {
			if sn.id == id {
				if err := sn.s.restore(key, v); err != nil {
					return err
				}
			}
		}
	}
	if last != nil {
		if err := t.finishOutputs(ctx, last); err != nil {
			return err
		}
	}

	t.inputs = t.inputs[:0]
	t.committed = map[*commitlog.Partition]int64{}
	add := func(topic string, src *source, tbl *Table) error {
		top, err := topicOrCreate(t.log, topic, commitlog.TopicConfig{})
		if err != nil {
			return fmt.Errorf("input %s: %w", topic, err)
		}
		for _, p := range top.Partitions() {
			in := &input{p: p, topic: topic, src: src, table: tbl}
			if off, ok := lastInput(last, topic, p.ID()); ok {
				in.next = off
			} else if t.opts.StartLatest {
				in.next = p.HighWatermark()
			} else {
				in.next = p.StartOffset()
			}
			t.inputs = append(t.inputs, in)
			t.committed[p] = in.next
		}
		return nil
	}
	for _, s := range t.top.sources {
		for _, topic := range s.topics {
			if err := add(topic, s, nil); err != nil {
				return err
			}
		}
	}
	for _, tbl := range t.top.tables {
		if err := add(tbl.topic, nil, tbl); err != nil {
			return err
		}
	}
	t.hold()
	return nil
}

// hold asks retention to keep what the pipeline has not committed yet.
func (t *Task) hold() {
	for _, in := range t.inputs {
		in.p.SetHold("stream:"+t.top.name, t.committed[in.p])
	}
}

// topicOrCreate is the topic name, created with cfg when it does not
// exist yet (an existing topic keeps its configuration: the daemon's
// log.topics or a Kafka client's CreateTopics made it).
func topicOrCreate(l *commitlog.Log, name string, cfg commitlog.TopicConfig) (*commitlog.Topic, error) {
	t, err := l.Topic(name)
	if errors.Is(err, commitlog.ErrUnknownTopic) {
		t, err = l.CreateTopic(name, cfg)
		if errors.Is(err, commitlog.ErrTopicExists) {
			return l.Topic(name)
		}
	}
	return t, err
}

func lastInput(m *marker, topic string, partition int32) (int64, bool) {
	if m == nil {
		return 0, false
	}
	off, ok := m.Inputs[tp(topic, partition)]
	return off, ok
}

// resetState empties every step's state.
func (t *Task) resetState() {
	for _, tbl := range t.top.tables {
		clear(tbl.rows)
		clear(tbl.dirty)
	}
	for _, n := range t.top.nodes {
		switch p := n.proc.(type) {
		case *windowProc:
			clear(p.wins)
			p.dirty = p.dirty[:0]
			p.nextClose = 0
		case *alertProc:
			clear(p.raised)
			clear(p.dirty)
		}
	}
}
