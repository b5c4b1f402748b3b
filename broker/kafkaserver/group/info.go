package group

import (
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// GroupInfo is a snapshot of a group for the HTTP API and metrics.
type GroupInfo struct {
	Name         string
	State        string // "Empty", "PreparingRebalance", "CompletingRebalance", "Stable"
	ProtocolType string
	Protocol     string // "" while Empty
	Leader       string
	Generation   int32
	Members      []MemberInfo // in join order
}

// MemberInfo is a snapshot of a member.
type MemberInfo struct {
	ID         string
	InstanceID string // "" for a dynamic member
	ClientID   string
	ClientHost string
	// Assigned is the member's assignment from the last SyncGroup,
	// decoded when the protocol type is "consumer" (else nil).
	Assigned map[string][]int32
}

// TopicPartition names a partition.
type TopicPartition struct {
	Topic     string
	Partition int32
}

// Committed is a committed offset.
type Committed struct {
	Offset      int64
	LeaderEpoch int32 // -1 if unknown
	Metadata    string
	CommitTime  time.Time // millisecond precision

	// seen is when this process committed or loaded it, on the
	// coordinator's monotonic clock: what retention counts from.
	seen time.Duration
}

// Groups returns every group, sorted by name, including groups that only
// hold committed offsets (Empty).
func (c *Coordinator) Groups() []GroupInfo {
	gs := c.snapshotGroups()
	out := make([]GroupInfo, 0, len(gs))
	for _, g := range gs {
		g.mu.Lock()
		if g.state != stateDead {
			out = append(out, g.infoLocked())
		}
		g.mu.Unlock()
	}
	return out
}

// Group returns a snapshot of the named group.
func (c *Coordinator) Group(name string) (GroupInfo, bool) {
	c.mu.Lock()
	g := c.mu.groups[name]
	c.mu.Unlock()
	if g == nil {
		return GroupInfo{}, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state == stateDead {
		return GroupInfo{}, false
	}
	return g.infoLocked(), true
}

func (g *group) infoLocked() GroupInfo {
	gi := GroupInfo{
		Name:         g.name,
		State:        g.state.String(),
		ProtocolType: g.protocolType,
		Protocol:     g.protocol,
		Leader:       g.leader,
		Generation:   g.generation,
	}
	for _, m := range g.membersLocked() {
		mi := MemberInfo{ID: m.id, ClientID: m.clientID, ClientHost: m.clientHost}
		if m.instanceID != nil {
			mi.InstanceID = *m.instanceID
		}
		if g.protocolType == protocolTypeConsumer && len(m.assignment) > 0 {
			mi.Assigned = decodeAssignment(m.assignment)
		}
		gi.Members = append(gi.Members, mi)
	}
	return gi
}

// decodeAssignment decodes a ConsumerMemberAssignment; nil if it is not one.
func decodeAssignment(b []byte) map[string][]int32 {
	var a kmsg.ConsumerMemberAssignment
	if err := a.ReadFrom(b); err != nil {
		return nil
	}
	out := make(map[string][]int32, len(a.Topics))
	for _, t := range a.Topics {
		out[t.Topic] = append(out[t.Topic], t.Partitions...)
	}
	return out
}

// Offsets returns the committed offsets of a group (nil if it has none).
func (c *Coordinator) Offsets(group string) map[TopicPartition]Committed {
	c.mu.Lock()
	g := c.mu.groups[group]
	c.mu.Unlock()
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.offsets) == 0 {
		return nil
	}
	return maps.Clone(g.offsets)
}

// ForEachOffset calls fn for every committed offset, group by group in
// name order and by topic and partition within a group. fn runs without
// any lock held; it sees each group's offsets as of one moment.
func (c *Coordinator) ForEachOffset(fn func(group string, tp TopicPartition, off Committed)) {
	for _, g := range c.snapshotGroups() {
		g.mu.Lock()
		offs := maps.Clone(g.offsets)
		g.mu.Unlock()
		tps := slices.SortedFunc(maps.Keys(offs), compareTP)
		for _, tp := range tps {
			fn(g.name, tp, offs[tp])
		}
	}
}
