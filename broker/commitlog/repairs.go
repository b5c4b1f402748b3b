package commitlog

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"
)

// Nothing the log repairs, passes over or removes is silent. Every such
// event is a Repair: one log line naming what and how much, a count by
// kind (Stats.Repairs, for /metrics) and an entry in the list Repairs
// returns (the latest maxRepairs, for /healthz).

// Repair kinds.
const (
	RepairDamage       = "damage"        // damaged bytes passed over (Damage has the offsets)
	RepairTruncated    = "truncated"     // an active segment's invalid tail cut at open
	RepairIndexRebuilt = "index_rebuilt" // a segment index rebuilt from a scan
	RepairGap          = "gap"           // offsets missing between two segments (a segment file gone)
	RepairStray        = "stray_segment" // a segment file Ferry did not write, moved aside
	RepairLeftover     = "leftover"      // an interrupted create, delete or rewrite of Ferry's, removed
	RepairForeign      = "not_ours"      // a file or directory in the log Ferry did not make: left alone
	RepairMetadata     = "metadata"      // a topic's settings file missing or unreadable: rebuilt
)

// Repair is one thing the log found and fixed, passed over or left alone.
type Repair struct {
	Kind      string    `json:"kind"`
	Topic     string    `json:"topic,omitempty"`
	Partition int32     `json:"partition"` // -1: not a partition's
	Detail    string    `json:"detail"`    // what, and how much, in words
	At        time.Time `json:"at"`
}

// maxRepairs bounds the repairs kept for Repairs.
const maxRepairs = 256

type repairLog struct {
	mu     sync.Mutex
	list   []Repair
	counts map[string]int64
}

// noteRepair records r (Partition -1 for none) and logs it once, at
// level, with attrs.
func (l *Log) noteRepair(level slog.Level, r Repair, attrs ...any) {
	r.At = l.opts.clock.Now()
	l.repairs.mu.Lock()
	if l.repairs.counts == nil {
		l.repairs.counts = map[string]int64{}
	}
	l.repairs.counts[r.Kind]++
	if len(l.repairs.list) == maxRepairs {
		copy(l.repairs.list, l.repairs.list[1:])
		l.repairs.list = l.repairs.list[:maxRepairs-1]
	}
	l.repairs.list = append(l.repairs.list, r)
	l.repairs.mu.Unlock()
	args := []any{"kind", r.Kind}
	if r.Topic != "" {
		args = append(args, "topic", r.Topic)
	}
	if r.Partition >= 0 {
		args = append(args, "partition", r.Partition)
	}
	l.opts.logger.Log(context.Background(), level, "commitlog: "+r.Detail, append(args, attrs...)...)
}

// Repairs returns the latest repairs (at most 256), oldest first.
func (l *Log) Repairs() []Repair {
	l.repairs.mu.Lock()
	defer l.repairs.mu.Unlock()
	return append([]Repair(nil), l.repairs.list...)
}

func (l *Log) repairCounts() map[string]int64 {
	l.repairs.mu.Lock()
	defer l.repairs.mu.Unlock()
	return maps.Clone(l.repairs.counts)
}

// partitionRepair is a Repair of p, its detail formatted.
func (p *Partition) repair(kind, format string, args ...any) Repair {
	return Repair{Kind: kind, Topic: p.topic.name, Partition: p.id, Detail: fmt.Sprintf(format, args...)}
}
