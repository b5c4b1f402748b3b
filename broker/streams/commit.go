package streams

// The commit protocol: changed state and a marker in one changelog
// append, then the outputs; finishing a commit's outputs after a crash.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

// marker is a commit record's value.
type marker struct {
	Seq         int64            `json:"seq"`
	Fingerprint string           `json:"fp"`
	StreamTime  int64            `json:"st"`
	Inputs      map[string]int64 `json:"in"`
	Outputs     []output         `json:"out,omitempty"`
	HWM         map[string]int64 `json:"hwm,omitempty"`
}

// output is one output record of a commit.
type output struct {
	Topic     string             `json:"t"`
	Partition int32              `json:"p"`
	Key       []byte             `json:"k,omitempty"`
	Value     []byte             `json:"v"`
	Timestamp int64              `json:"ts"`
	Headers   []commitlog.Header `json:"h,omitempty"`
}

func tp(topic string, partition int32) string {
	return topic + "/" + strconv.Itoa(int(partition))
}

// commit writes the changed state and the marker, then the outputs. A
// commit once begun is finished even when ctx ends (a clean stop must not
// leave outputs for the next start); only waiting out a full topic ends
// with ctx.
func (t *Task) commit(ctx context.Context, c *pctx) error {
	stop := ctx
	ctx = context.WithoutCancel(ctx)
	m := &marker{Seq: t.seq + 1, Fingerprint: t.fp, StreamTime: c.streamTime,
		Inputs: make(map[string]int64, len(t.inputs)), Outputs: c.outputs}
	for _, in := range t.inputs {
		m.Inputs[tp(in.topic, in.p.ID())] = in.next
	}
	var recs []commitlog.Record
	for _, sn := range t.state {
		sn.s.flush(func(key string, val []byte) {
			k := sn.id + "\x00" + key
			delete(t.repair, k)
			delete(t.hasRepair, k)
			recs = append(recs, commitlog.Record{Key: []byte(k), Value: val})
		})
	}
	for k := range t.hasRepair {
		recs = append(recs, commitlog.Record{Key: []byte(k), Value: t.repair[k]})
	}
	if len(m.Outputs) > 0 {
		m.HWM = map[string]int64{}
		for i := range m.Outputs {
			o := &m.Outputs[i]
			o.Headers = append(o.Headers,
				commitlog.Header{Key: "ferry.stream", Value: []byte(t.top.name)},
				commitlog.Header{Key: "ferry.commit", Value: []byte(fmt.Sprintf("%d.%d", m.Seq, i))})
			key := tp(o.Topic, o.Partition)
			if _, ok := m.HWM[key]; !ok {
				p, err := t.partition(o.Topic, o.Partition)
				if err != nil {
					return err
				}
				m.HWM[key] = p.HighWatermark()
			}
		}
	}
	val, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("commit marker: %w", err)
	}
	recs = append(recs, commitlog.Record{Key: []byte(commitKey), Value: val})
	if _, err := t.changelog.Append(ctx, recs).Wait(ctx); err != nil {
		return fmt.Errorf("changelog: %w", err)
	}
	t.seq = m.Seq
	t.streamTime = c.streamTime
	for _, in := range t.inputs {
		t.committed[in.p] = m.Inputs[tp(in.topic, in.p.ID())]
	}
	t.hold()
	clear(t.repair)
	clear(t.hasRepair)
	c.outputs, c.outBytes = nil, 0
	t.counters.commits.Add(1)
	return t.writeOutputs(ctx, stop, m, nil)
}

// finishOutputs appends the outputs of m that are not in their
// partitions yet: each partition is scanned from the high watermark m
// recorded for this pipeline's records of commit m.Seq.
func (t *Task) finishOutputs(ctx context.Context, m *marker) error {
	if len(m.Outputs) == 0 {
		return nil
	}
	present := map[string]int{} // partition → highest output index found
	prefix := strconv.FormatInt(m.Seq, 10) + "."
	for key, from := range m.HWM {
		topic, pstr, _ := cutLast(key, "/")
		id, _ := strconv.Atoi(pstr)
		p, err := t.partition(topic, int32(id))
		if err != nil {
			return err
		}
		present[key] = -1
		from = max(from, p.StartOffset())
		for from < p.HighWatermark() {
			recs, next, _, err := p.ReadRecords(from, 1<<20)
			if err != nil {
				return fmt.Errorf("finish commit %d: read %s: %w", m.Seq, key, err)
			}
			for i := range recs {
				r := &recs[i]
				if string(headerOf(r.Headers, "ferry.stream")) != t.top.name {
					continue
				}
				if idx, ok := strings.CutPrefix(string(headerOf(r.Headers, "ferry.commit")), prefix); ok {
					if n, err := strconv.Atoi(idx); err == nil && n > present[key] {
						present[key] = n
					}
				}
			}
			if next <= from {
				break
			}
			from = next
		}
	}
	return t.writeOutputs(context.WithoutCancel(ctx), ctx, m, present)
}

// writeOutputs appends m's outputs, per partition in order, skipping
// those at or below present[partition] (nil: none present). A full topic
// (reject_new) is waited out, not dropped, until stop ends.
func (t *Task) writeOutputs(ctx, stop context.Context, m *marker, present map[string]int) error {
	groups := map[string][]int{}
	var order []string
	for i := range m.Outputs {
		key := tp(m.Outputs[i].Topic, m.Outputs[i].Partition)
		if present != nil && i <= present[key] {
			continue
		}
		if _, ok := groups[key]; !ok {
			order = append(order, key)
		}
		groups[key] = append(groups[key], i)
	}
	futures := make([]*commitlog.Future, len(order))
	for j, key := range order {
		idx := groups[key]
		o := &m.Outputs[idx[0]]
		p, err := t.partition(o.Topic, o.Partition)
		if err != nil {
			return err
		}
		recs := make([]commitlog.Record, len(idx))
		for k, i := range idx {
			o := &m.Outputs[i]
			recs[k] = commitlog.Record{Key: o.Key, Value: o.Value, Timestamp: o.Timestamp, Headers: o.Headers}
		}
		futures[j] = p.Append(ctx, recs)
	}
	full := false
	for j, f := range futures {
		if _, err := f.Wait(ctx); err != nil {
			if errors.Is(err, commitlog.ErrLogFull) {
				full = true
				continue
			}
			return fmt.Errorf("output %s: %w", order[j], err)
		}
		t.counters.out.Add(int64(len(groups[order[j]])))
	}
	if !full {
		if t.Status().State == "paused" {
			t.setState("running")
		}
		return nil
	}
	// Some partition is full: wait, then append what is still missing.
	t.setState("paused")
	t.setError(fmt.Errorf("output topic full (on_full: reject_new): paused"))
	select {
	case <-stop.Done():
		return stop.Err()
	case <-time.After(t.opts.Retry):
	}
	return t.finishOutputs(stop, m)
}

func (t *Task) partition(topic string, id int32) (*commitlog.Partition, error) {
	top, err := t.log.Topic(topic)
	if err != nil {
		return nil, fmt.Errorf("output topic %s: %w", topic, err)
	}
	return top.Partition(id)
}

func cutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
}
