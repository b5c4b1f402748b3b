package commitlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-iot/ferry/configs"
)

// Topic is a named set of partitions sharing one configuration.
type Topic struct {
	log  *Log
	name string
	dir  string
	cfg  atomic.Pointer[TopicConfig]

	mu    sync.RWMutex // guards parts, which only grows
	parts []*Partition

	rr    atomic.Uint32 // round robin for records without a key
	stats topicStats
}

type topicStats struct {
	rejected       atomic.Int64
	droppedRecords atomic.Int64
	droppedBytes   atomic.Int64
	expiredRecords atomic.Int64
	expiredBytes   atomic.Int64
	compactedBytes atomic.Int64
	droppedHeld    atomic.Int64
	badBatches     atomic.Int64
}

// TopicStats are a topic's counters since the log opened.
type TopicStats struct {
	// Rejected counts appends refused by on_full=reject_new.
	Rejected int64 `json:"rejected_appends"`
	// DroppedRecords and DroppedBytes count what on_full=overwrite_oldest
	// deleted before its age was up (size or free-disk limits).
	DroppedRecords int64 `json:"dropped_records"`
	DroppedBytes   int64 `json:"dropped_bytes"`
	// ExpiredRecords and ExpiredBytes count what age retention deleted.
	ExpiredRecords int64 `json:"expired_records"`
	ExpiredBytes   int64 `json:"expired_bytes"`
	// DroppedUnreplicated counts dropped records that a retention hold
	// (a bridge) still needed.
	DroppedUnreplicated int64 `json:"dropped_unreplicated_records"`
	// CompactedBytes counts bytes compaction removed.
	CompactedBytes int64 `json:"compacted_bytes"`
	// InvalidBatches counts raw batches AppendBatch refused (framing, CRC,
	// offsets that would not be dense, control batches).
	InvalidBatches int64 `json:"invalid_batches"`
}

// Name returns the topic's name.
func (t *Topic) Name() string { return t.name }

// Config returns the topic's configuration.
func (t *Topic) Config() TopicConfig { return *t.cfg.Load() }

// Partitions returns the topic's partitions.
func (t *Topic) Partitions() []*Partition {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return append([]*Partition(nil), t.parts...)
}

// NumPartitions returns the partition count.
func (t *Topic) NumPartitions() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.parts)
}

// Partition returns partition id.
func (t *Topic) Partition(id int32) (*Partition, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if id < 0 || int(id) >= len(t.parts) {
		return nil, fmt.Errorf("%w: topic %s has no partition %d (it has %d)", ErrUnknownPartition, t.name, id, len(t.parts))
	}
	return t.parts[id], nil
}

// Stats returns the topic's counters.
func (t *Topic) Stats() TopicStats {
	return TopicStats{
		Rejected:       t.stats.rejected.Load(),
		DroppedRecords: t.stats.droppedRecords.Load(),
		DroppedBytes:   t.stats.droppedBytes.Load(),
		ExpiredRecords: t.stats.expiredRecords.Load(),
		ExpiredBytes:   t.stats.expiredBytes.Load(),
		CompactedBytes: t.stats.compactedBytes.Load(),
		InvalidBatches: t.stats.badBatches.Load(),

		DroppedUnreplicated: t.stats.droppedHeld.Load(),
	}
}

// PartitionFor returns the partition for key: Kafka's default partitioner
// for keys; for a nil key, the next partition in rotation.
func (t *Topic) PartitionFor(key []byte) int32 {
	n := t.NumPartitions()
	if key == nil {
		return int32(t.rr.Add(1) % uint32(n))
	}
	return KeyPartition(key, n)
}

// Append routes records to partitions by key (records without a key in one
// call go together to the next partition in rotation, so they spread evenly
// across calls) and returns a future that completes when all are durable.
func (t *Topic) Append(ctx context.Context, recs []Record) *Future {
	t.mu.RLock()
	parts := t.parts
	t.mu.RUnlock()
	n := len(parts)
	if len(recs) == 0 {
		return failedFuture(nil)
	}
	nullPart := int32(-1)
	pick := func(key []byte) int32 {
		if key != nil {
			return KeyPartition(key, n)
		}
		if nullPart < 0 {
			nullPart = int32(t.rr.Add(1) % uint32(n))
		}
		return nullPart
	}
	first := pick(recs[0].Key)
	same := true
	for i := 1; i < len(recs) && same; i++ {
		same = pick(recs[i].Key) == first
	}
	if same {
		f := newFuture(1)
		parts[first].append(ctx, recs, f)
		return f
	}
	groups := make(map[int32][]Record)
	var order []int32
	for _, r := range recs {
		id := pick(r.Key)
		if _, ok := groups[id]; !ok {
			order = append(order, id)
		}
		groups[id] = append(groups[id], r)
	}
	f := newFuture(len(order))
	for _, id := range order {
		parts[id].append(ctx, groups[id], f)
	}
	return f
}

// topicConfigJSON is TopicConfig's JSON form (topic.json, the HTTP API):
// its names, durations as Go duration strings, the codec by name.
type topicConfigJSON struct {
	Partitions             int           `json:"partitions"`
	Flush                  FlushPolicy   `json:"flush"`
	FlushInterval          string        `json:"flush_interval"`
	Retention              string        `json:"retention"`
	RetentionBytes         int64         `json:"retention_bytes"`
	OnFull                 OnFull        `json:"on_full"`
	Compression            string        `json:"compression"`
	Cleanup                CleanupPolicy `json:"cleanup_policy"`
	DeleteRetention        string        `json:"delete_retention"`
	MinCleanableDirtyRatio float64       `json:"min_cleanable_dirty_ratio"`
	SegmentBytes           int64         `json:"segment_bytes"`
	SegmentAge             string        `json:"segment_age"`
	MaxBatchBytes          int           `json:"max_batch_bytes"`
	IndexIntervalBytes     int           `json:"index_interval_bytes"`
}

// MarshalJSON writes the config with durations as Go duration strings.
func (c TopicConfig) MarshalJSON() ([]byte, error) { return json.Marshal(c.toJSON()) }

func (c TopicConfig) toJSON() topicConfigJSON {
	return topicConfigJSON{
		Partitions: c.Partitions, Flush: c.Flush, FlushInterval: c.FlushInterval.String(), Retention: c.Retention.String(),
		RetentionBytes: c.RetentionBytes, OnFull: c.OnFull, Compression: c.Compression.String(), Cleanup: c.Cleanup,
		DeleteRetention: c.DeleteRetention.String(), MinCleanableDirtyRatio: c.MinCleanableDirtyRatio,
		SegmentBytes: c.SegmentBytes, SegmentAge: c.SegmentAge.String(), MaxBatchBytes: c.MaxBatchBytes,
		IndexIntervalBytes: c.IndexIntervalBytes,
	}
}

// UnmarshalJSON reads what MarshalJSON writes; a bad value is a
// *configs.FieldError naming its field.
func (c *TopicConfig) UnmarshalJSON(b []byte) error {
	var f topicConfigJSON
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return c.fromJSON(f)
}

func (c *TopicConfig) fromJSON(f topicConfigJSON) error {
	*c = TopicConfig{
		Partitions: f.Partitions, Flush: f.Flush, RetentionBytes: f.RetentionBytes, OnFull: f.OnFull,
		Cleanup: f.Cleanup, MinCleanableDirtyRatio: f.MinCleanableDirtyRatio,
		SegmentBytes: f.SegmentBytes, MaxBatchBytes: f.MaxBatchBytes, IndexIntervalBytes: f.IndexIntervalBytes,
	}
	if f.Compression != "" {
		codec, err := ParseCompression(f.Compression)
		if err != nil {
			return &configs.FieldError{Kind: ErrInvalidConfig, Key: "compression", Problem: fmt.Sprintf("unknown codec %q", f.Compression)}
		}
		c.Compression = codec
	}
	for _, d := range []struct {
		field string
		s     string
		dst   *time.Duration
	}{{"flush_interval", f.FlushInterval, &c.FlushInterval}, {"retention", f.Retention, &c.Retention},
		{"delete_retention", f.DeleteRetention, &c.DeleteRetention}, {"segment_age", f.SegmentAge, &c.SegmentAge}} {
		if d.s == "" {
			continue
		}
		var err error
		if *d.dst, err = time.ParseDuration(d.s); err != nil {
			return &configs.FieldError{Kind: ErrInvalidConfig, Key: d.field, Problem: err.Error()}
		}
	}
	return nil
}

// topicFile is topic.json: the topic's name and configuration, written
// atomically.
type topicFile struct {
	Version int    `json:"version"`
	Name    string `json:"name"`
	topicConfigJSON
}

func encodeTopicFile(name string, c TopicConfig) ([]byte, error) {
	return json.MarshalIndent(topicFile{Version: 1, Name: name, topicConfigJSON: c.toJSON()}, "", "  ")
}

func decodeTopicFile(b []byte) (string, TopicConfig, error) {
	var f topicFile
	if err := json.Unmarshal(b, &f); err != nil {
		var fe *configs.FieldError
		if errors.As(err, &fe) {
			return "", TopicConfig{}, err
		}
		return "", TopicConfig{}, fmt.Errorf("%w: %s: %w", ErrInvalidConfig, topicFileName, err)
	}
	var c TopicConfig
	if err := c.fromJSON(f.topicConfigJSON); err != nil {
		return "", c, err
	}
	c.EnsureDefaults()
	return f.Name, c, c.Validate()
}
