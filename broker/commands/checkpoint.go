package commands

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/ferry-iot/ferry/broker/state"
)

// holdOwner names the dispatcher's retention hold on commands partitions.
const holdOwner = "ferry.commands"

// checkpoint is a commands partition's progress: every offset below Next
// that is not in Pending is finished (its response is durable). Pending
// holds at most MaxInFlight offsets.
type checkpoint struct {
	Version int     `json:"v"`
	Next    int64   `json:"next"`
	Pending []int64 `json:"pending,omitempty"` // ascending, all < Next
}

// low is the first offset the checkpoint still needs: where the retention
// hold goes.
func (c checkpoint) low() int64 {
	if len(c.Pending) > 0 {
		return c.Pending[0]
	}
	return c.Next
}

// checkpointKey is "cmd/<topic>/<partition>" (topic names cannot hold '/').
func checkpointKey(topic string, partition int32) []byte {
	return fmt.Appendf(nil, "cmd/%s/%s", topic, strconv.Itoa(int(partition)))
}

func encodeCheckpoint(c checkpoint) []byte {
	c.Version = 1
	b, _ := json.Marshal(c) // cannot fail: ints only
	return b
}

// decodeCheckpoint parses and checks a stored checkpoint.
func decodeCheckpoint(b []byte) (checkpoint, error) {
	var c checkpoint
	if err := json.Unmarshal(b, &c); err != nil {
		return c, err
	}
	switch {
	case c.Version != 1:
		return c, fmt.Errorf("version %d", c.Version)
	case c.Next < 0:
		return c, fmt.Errorf("next offset %d", c.Next)
	}
	for i, o := range c.Pending {
		if o < 0 || o >= c.Next || (i > 0 && o <= c.Pending[i-1]) {
			return c, fmt.Errorf("pending offsets not ascending below %d: %v", c.Next, c.Pending)
		}
	}
	return c, nil
}

// loadCheckpoint returns a partition's checkpoint, or found=false.
func (d *Dispatcher) loadCheckpoint(partition int32) (c checkpoint, found bool, err error) {
	key := checkpointKey(d.cfg.Topic, partition)
	b, err := d.st.Get(key)
	if errors.Is(err, state.ErrNotFound) {
		return c, false, nil
	}
	if err != nil {
		return c, false, fmt.Errorf("commands: load checkpoint %s: %w", key, err)
	}
	if c, err = decodeCheckpoint(b); err != nil {
		return c, false, fmt.Errorf("commands: checkpoint %s is damaged: %w", key, err)
	}
	return c, true, nil
}

// persist writes the checkpoints of partitions that made progress, in one
// transaction, then moves their retention holds up to what the stored
// checkpoints still need. Holds follow the stored checkpoint, not the
// in-memory one, because a restart resumes from the stored one.
func (d *Dispatcher) persist() error {
	type snap struct {
		ps *partState
		cp checkpoint
	}
	var snaps []snap
	d.mu.Lock()
	for _, ps := range d.mu.parts {
		if !ps.dirty {
			continue
		}
		ps.dirty = false
		cp := checkpoint{Next: ps.next, Pending: make([]int64, 0, len(ps.pending))}
		for o := range ps.pending {
			cp.Pending = append(cp.Pending, o)
		}
		slices.Sort(cp.Pending)
		snaps = append(snaps, snap{ps, cp})
	}
	d.mu.Unlock()
	if len(snaps) == 0 {
		return nil
	}
	err := d.st.Update(func(tx *state.Txn) error {
		for _, s := range snaps {
			if err := tx.Set(checkpointKey(d.cfg.Topic, s.ps.id), encodeCheckpoint(s.cp)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		d.mu.Lock()
		for _, s := range snaps {
			s.ps.dirty = true
		}
		d.mu.Unlock()
		return fmt.Errorf("commands: store checkpoint: %w", err)
	}
	for _, s := range snaps {
		s.ps.p.SetHold(holdOwner, s.cp.low())
	}
	return nil
}
