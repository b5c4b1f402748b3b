package commitlog

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/ferry-iot/ferry/configs"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

// FlushPolicy says when appended records are durable and acknowledged.
type FlushPolicy string

// Flush policies.
const (
	// FlushAlways acknowledges after the commit cycle's fsync (default).
	FlushAlways FlushPolicy = "always"
	// FlushInterval acknowledges after the write and fsyncs every
	// FlushInterval.
	FlushInterval FlushPolicy = "interval"
	// FlushNever acknowledges after the write and leaves flushing to the
	// kernel (and to segment rolls and clean shutdown).
	FlushNever FlushPolicy = "never"
)

// OnFull says what a topic does when a size limit is reached.
type OnFull string

// Full policies.
const (
	// OverwriteOldest deletes the oldest segments and counts what was
	// dropped (default).
	OverwriteOldest OnFull = "overwrite_oldest"
	// RejectNew fails appends with ErrLogFull until space frees up.
	RejectNew OnFull = "reject_new"
)

// CleanupPolicy is Kafka's cleanup.policy: "delete", "compact", or both
// as a comma-separated list ("compact,delete", in either order).
type CleanupPolicy string

// Cleanup policies.
const (
	// CleanupDelete deletes whole segments by age and size (default).
	CleanupDelete CleanupPolicy = "delete"
	// CleanupCompact keeps the newest record per key and, as in Kafka,
	// deletes nothing by age or retention_bytes; only the free-disk floor
	// can still drop its oldest segments (see the package doc).
	CleanupCompact CleanupPolicy = "compact"
	// CleanupCompactDelete compacts and also deletes by age and size.
	CleanupCompactDelete CleanupPolicy = "compact,delete"
)

// parts reports which policies c names and whether every name is known.
func (c CleanupPolicy) parts() (compact, del, ok bool) {
	ok = c != ""
	for rest, more := string(c), true; more; {
		var n string
		n, rest, more = strings.Cut(rest, ",")
		switch strings.TrimSpace(n) {
		case string(CleanupDelete):
			del = true
		case string(CleanupCompact):
			compact = true
		default:
			ok = false
		}
	}
	return compact, del, ok
}

// compacts reports whether the policy includes compaction.
func (c CleanupPolicy) compacts() bool { comp, _, _ := c.parts(); return comp }

// deletes reports whether the policy includes deletion by age and size.
func (c CleanupPolicy) deletes() bool { _, del, _ := c.parts(); return del }

// TopicConfig is a topic's configuration: the daemon decodes
// log.topics.<name> into it (mapstructure tags), Kafka clients set it
// through CreateTopics, it is stored with the topic (topic.json) and the
// HTTP API shows it (JSON). Zero fields take the defaults that
// EnsureDefaults documents.
type TopicConfig struct {
	// Partitions is the partition count (default 1). It can grow, never shrink.
	Partitions int `json:"partitions" mapstructure:"partitions"`
	// Flush is the flush policy (default always).
	Flush FlushPolicy `json:"flush" mapstructure:"flush"`
	// FlushInterval is the fsync period under FlushInterval (default 1 s).
	FlushInterval time.Duration `json:"flush_interval" mapstructure:"flush_interval"`
	// Retention is the age after which whole segments are deleted (default
	// 7 days); negative keeps data forever. Age is measured both by record
	// timestamps and by the log's own monotonic clock, and a segment goes
	// only when both say it is older.
	Retention time.Duration `json:"retention" mapstructure:"retention"`
	// RetentionBytes caps each partition's size; 0 or negative is no cap.
	// Like retention, it applies only when the cleanup policy includes
	// delete (Kafka ignores retention.bytes for cleanup.policy=compact).
	RetentionBytes int64 `json:"retention_bytes" mapstructure:"retention_bytes"`
	// OnFull is what happens at RetentionBytes or the disk's free floor
	// (default overwrite_oldest).
	OnFull OnFull `json:"on_full" mapstructure:"on_full"`
	// Compression is the codec of batches the log builds (default none).
	Compression Compression `json:"compression" mapstructure:"compression"`
	// Cleanup is delete (default), compact, or compact,delete.
	Cleanup CleanupPolicy `json:"cleanup_policy" mapstructure:"cleanup_policy"`
	// DeleteRetention is how long tombstones survive compaction (default 1 day).
	DeleteRetention time.Duration `json:"delete_retention" mapstructure:"delete_retention"`
	// MinCleanableDirtyRatio is the share of not-yet-compacted bytes that
	// triggers compaction (default 0.5).
	MinCleanableDirtyRatio float64 `json:"min_cleanable_dirty_ratio" mapstructure:"min_cleanable_dirty_ratio"`
	// SegmentBytes is the size at which a segment rolls (default 128 MiB,
	// at most 1 GiB).
	SegmentBytes int64 `json:"segment_bytes" mapstructure:"segment_bytes"`
	// SegmentAge rolls a non-empty segment after this long in log time
	// (default 7 days).
	SegmentAge time.Duration `json:"segment_age" mapstructure:"segment_age"`
	// MaxBatchBytes caps one batch the log builds (default 1 MiB); larger
	// raw batches are refused.
	MaxBatchBytes int `json:"max_batch_bytes" mapstructure:"max_batch_bytes"`
	// IndexIntervalBytes is the spacing of sparse index entries (default 4096).
	IndexIntervalBytes int `json:"index_interval_bytes" mapstructure:"index_interval_bytes"`
}

// Defaults, exported so configuration layers can document them.
const (
	DefaultPartitions             = 1
	DefaultFlushInterval          = time.Second
	DefaultRetention              = 7 * 24 * time.Hour
	DefaultDeleteRetention        = 24 * time.Hour
	DefaultMinCleanableDirtyRatio = 0.5
	DefaultSegmentBytes           = 128 << 20
	MaxSegmentBytes               = 1 << 30
	DefaultSegmentAge             = 7 * 24 * time.Hour
	DefaultMaxBatchBytes          = 1 << 20
	DefaultIndexIntervalBytes     = 4096
)

// EnsureDefaults fills zero fields with their defaults.
func (c *TopicConfig) EnsureDefaults() {
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.Flush == "" {
		c.Flush = FlushAlways
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.OnFull == "" {
		c.OnFull = OverwriteOldest
	}
	if c.Cleanup == "" {
		c.Cleanup = CleanupDelete
	}
	if c.DeleteRetention == 0 {
		c.DeleteRetention = DefaultDeleteRetention
	}
	if c.MinCleanableDirtyRatio == 0 {
		c.MinCleanableDirtyRatio = DefaultMinCleanableDirtyRatio
	}
	if c.SegmentBytes == 0 {
		c.SegmentBytes = DefaultSegmentBytes
	}
	if c.SegmentAge == 0 {
		c.SegmentAge = DefaultSegmentAge
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.IndexIntervalBytes == 0 {
		c.IndexIntervalBytes = DefaultIndexIntervalBytes
	}
}

// rollBytes is the size at which the active segment rolls: SegmentBytes,
// capped at an eighth of RetentionBytes so that size retention can delete
// in steps instead of wiping the partition.
func (c TopicConfig) rollBytes() int64 {
	if c.limitsBytes() {
		return min(c.SegmentBytes, max(c.RetentionBytes/8, 16<<10))
	}
	return c.SegmentBytes
}

// limitsBytes reports whether retention_bytes applies to the topic.
func (c TopicConfig) limitsBytes() bool { return c.RetentionBytes > 0 && c.Cleanup.deletes() }

// Validate reports every problem at once, each a *configs.FieldError
// naming its field (wrapping ErrInvalidConfig), so a configuration layer
// can prefix the key with its own path.
func (c *TopicConfig) Validate() error {
	p := configs.Problems{Kind: ErrInvalidConfig}
	bad := p.Add
	if c.Partitions < 1 || c.Partitions > 10000 {
		bad("partitions", "%d is outside 1..10000", c.Partitions)
	}
	switch c.Flush {
	case FlushAlways, FlushInterval, FlushNever:
	default:
		bad("flush", "%q is not always, interval or never", c.Flush)
	}
	if c.FlushInterval < time.Millisecond {
		bad("flush_interval", "%v is below 1ms", c.FlushInterval)
	}
	switch c.OnFull {
	case OverwriteOldest, RejectNew:
	default:
		bad("on_full", "%q is not overwrite_oldest or reject_new", c.OnFull)
	}
	if c.Compression < CompressionNone || c.Compression > CompressionZstd {
		bad("compression", "unknown codec %d", c.Compression)
	}
	if _, _, ok := c.Cleanup.parts(); !ok {
		bad("cleanup_policy", "%q is not delete, compact or compact,delete", c.Cleanup)
	}
	if c.DeleteRetention < 0 {
		bad("delete_retention", "%v is negative", c.DeleteRetention)
	}
	if c.MinCleanableDirtyRatio <= 0 || c.MinCleanableDirtyRatio > 1 {
		bad("min_cleanable_dirty_ratio", "%v is outside (0, 1]", c.MinCleanableDirtyRatio)
	}
	if c.SegmentBytes < 4096 || c.SegmentBytes > MaxSegmentBytes {
		bad("segment_bytes", "%d is outside 4096..%d", c.SegmentBytes, MaxSegmentBytes)
	}
	if c.SegmentAge < time.Second {
		bad("segment_age", "%v is below 1s", c.SegmentAge)
	}
	if c.MaxBatchBytes < 1024 || c.MaxBatchBytes > MaxBatchSize {
		bad("max_batch_bytes", "%d is outside 1024..%d", c.MaxBatchBytes, MaxBatchSize)
	}
	if c.IndexIntervalBytes < 64 {
		bad("index_interval_bytes", "%d is below 64", c.IndexIntervalBytes)
	}
	return p.Err()
}

var topicNameRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,200}$`)

// ValidTopicName applies Kafka's topic naming rules.
func ValidTopicName(name string) error {
	if !topicNameRE.MatchString(name) || name == "." || name == ".." || name[0] == '.' {
		return fmt.Errorf("%w: topic name %q (use 1-200 of [a-zA-Z0-9._-], not starting with '.')", ErrInvalidConfig, name)
	}
	return nil
}

// Clock supplies wall time (for record timestamps) and monotonic elapsed
// time (for the log's own clock, which survives wall-clock jumps).
type Clock interface {
	Now() time.Time
	Monotonic() time.Duration
}

type systemClock struct{ start time.Time }

func (c systemClock) Now() time.Time           { return time.Now() }
func (c systemClock) Monotonic() time.Duration { return time.Since(c.start) }

// Option configures a Log.
type Option func(*options)

type options struct {
	fs                vfs.FS
	clock             Clock
	logger            *slog.Logger
	ackDelay          time.Duration
	preallocate       bool
	syncBytes         int
	minFreeRatio      float64
	retentionInterval time.Duration
	maxPendingBytes   int
	syncParallelism   int
	syncObserver      func(time.Duration)
	pacing            bool
	retentionPaused   bool
	maxTopics         int
	maxPartitions     int
	maxOpenSegments   int
}

func defaultOptions() options {
	return options{
		fs:                vfs.OS,
		clock:             systemClock{start: time.Now()},
		logger:            slog.Default(),
		minFreeRatio:      0.1,
		retentionInterval: 30 * time.Second,
		maxPendingBytes:   8 << 20,
		syncParallelism:   4,
		pacing:            true,
		ackDelay:          DefaultAckDelay,
		preallocate:       true,
		syncBytes:         DefaultSyncBytes,
	}
}

// WithFS sets the filesystem (default vfs.OS).
func WithFS(fs vfs.FS) Option { return func(o *options) { o.fs = fs } }

// WithClock sets the clock (default the system clock).
func WithClock(c Clock) Option { return func(o *options) { o.clock = c } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithAckDelay sets the acknowledgement delay budget (default
// DefaultAckDelay): how long an append may wait for company before its
// commit cycle is cut, when the cycle holds too few bytes to be worth an
// fsync (WithSyncBytes). 0 cuts a cycle as soon as the syncer is free:
// one fsync per arrival at low rates. See cutWait.
func WithAckDelay(d time.Duration) Option { return func(o *options) { o.ackDelay = d } }

// WithPreallocate turns block reservation ahead of the active segment's
// writes on or off (default on; see committer.preallocate).
func WithPreallocate(on bool) Option { return func(o *options) { o.preallocate = on } }

// WithSyncBytes sets how many bytes a commit cycle must be expected to
// write for it to be cut at once, without waiting for the delay budget
// (default DefaultSyncBytes).
func WithSyncBytes(n int) Option { return func(o *options) { o.syncBytes = n } }

const (
	// DefaultAckDelay is the acknowledgement delay budget: at fleet rates
	// (many devices, each once a second) it sets the fsync rate, so the
	// bytes written per acknowledged record. Chosen from the curve in
	// BENCHMARKS.md: the shortest budget that keeps 1,000 devices at 1 Hz
	// under 6 GiB a day with PUBACK p99 under 150 ms.
	DefaultAckDelay = 140 * time.Millisecond
	// DefaultSyncBytes is the cycle size worth an fsync at once: an fsync
	// on ext4 writes about two 4 KiB blocks besides the new data (the
	// partly filled page again, and the inode's block), so 32 KiB of new
	// data keeps that overhead near a fifth.
	DefaultSyncBytes = 32 << 10
)

// WithMinFreeRatio sets the share of the filesystem kept free (default
// 0.1); 0 disables the free-disk limit.
func WithMinFreeRatio(r float64) Option { return func(o *options) { o.minFreeRatio = r } }

// WithRetentionInterval sets how often retention and compaction run
// (default 30 s); the committer also starts a pass early when the disk
// approaches its free floor.
func WithRetentionInterval(d time.Duration) Option {
	return func(o *options) { o.retentionInterval = d }
}

// WithMaxPendingBytes bounds the bytes waiting for the next commit cycle in
// one partition (default 8 MiB); appends beyond it wait, which bounds memory.
func WithMaxPendingBytes(n int) Option { return func(o *options) { o.maxPendingBytes = n } }

// WithSyncParallelism sets how many partitions are fsynced at once within a
// commit cycle (default 4).
func WithSyncParallelism(n int) Option { return func(o *options) { o.syncParallelism = n } }

// WithPacing turns just-in-time cycle cutting on or off (default on):
// while an fsync is in progress the committer keeps gathering appends and
// cuts the next cycle when that fsync is about to end, instead of at once.
// On storage with slow fsyncs (SD cards) this means fewer, fuller fsyncs.
func WithPacing(on bool) Option { return func(o *options) { o.pacing = on } }

// WithSyncObserver is called with the duration of every fsync round (for
// a latency histogram); it runs on the committer and must be quick.
func WithSyncObserver(fn func(time.Duration)) Option {
	return func(o *options) { o.syncObserver = fn }
}

// WithMaxTopics caps the topics the log holds (default 0: no cap).
// CreateTopic past it fails with a LimitError; topics already on disk
// always open.
func WithMaxTopics(n int) Option { return func(o *options) { o.maxTopics = n } }

// WithMaxPartitions caps the partitions of all topics together (default
// 0: no cap). Every partition holds at least its active segment's file
// open, so the cap also bounds the log's share of file descriptors.
// CreateTopic and UpdateTopic past it fail with a LimitError.
func WithMaxPartitions(n int) Option { return func(o *options) { o.maxPartitions = n } }

// WithMaxOpenSegments bounds the sealed segment files kept open (default
// 0: no bound, every segment's file stays open). Past it the least
// recently used file that no reader holds is closed, and reopened when it
// is next read; active segments' files always stay open.
func WithMaxOpenSegments(n int) Option { return func(o *options) { o.maxOpenSegments = n } }

// WithRetentionPaused opens the log with its housekeeping goroutine
// (retention and compaction) waiting for ResumeRetention, so that the
// owners of retention holds (bridges, consumers with stored checkpoints)
// can set them before any pass could delete what they still need (default:
// housekeeping runs from Open on).
func WithRetentionPaused() Option { return func(o *options) { o.retentionPaused = true } }

func (o *options) validate() error {
	var errs []error
	if o.fs == nil {
		errs = append(errs, fmt.Errorf("%w: fs is nil", ErrInvalidConfig))
	}
	if o.clock == nil {
		errs = append(errs, fmt.Errorf("%w: clock is nil", ErrInvalidConfig))
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if o.ackDelay < 0 {
		errs = append(errs, fmt.Errorf("%w: ack delay %v is negative", ErrInvalidConfig, o.ackDelay))
	}
	if o.syncBytes < 1 {
		o.syncBytes = 1
	}
	if o.minFreeRatio < 0 || o.minFreeRatio >= 1 {
		errs = append(errs, fmt.Errorf("%w: min free ratio %v is outside [0, 1)", ErrInvalidConfig, o.minFreeRatio))
	}
	if o.retentionInterval <= 0 {
		errs = append(errs, fmt.Errorf("%w: retention interval %v is not positive", ErrInvalidConfig, o.retentionInterval))
	}
	if o.maxPendingBytes < 64<<10 {
		errs = append(errs, fmt.Errorf("%w: max pending bytes %d is below 64 KiB", ErrInvalidConfig, o.maxPendingBytes))
	}
	if o.syncParallelism < 1 {
		o.syncParallelism = 1
	}
	return errors.Join(errs...)
}

// Settings is the log section of Ferry's configuration (log.*): the log's
// options and the topics it keeps. The daemon decodes the section into it
// (mapstructure tags) and asks it to validate itself.
type Settings struct {
	// MinFreeRatio is the share of the filesystem kept free (WithMinFreeRatio).
	MinFreeRatio float64 `mapstructure:"min_free_ratio"`
	// RetentionInterval is how often retention and compaction run.
	RetentionInterval time.Duration `mapstructure:"retention_interval"`
	// AckDelay is the acknowledgement delay budget (WithAckDelay).
	AckDelay time.Duration `mapstructure:"ack_delay"`
	// Preallocate reserves the active segment's blocks ahead of its writes
	// (WithPreallocate).
	Preallocate bool `mapstructure:"preallocate"`
	// Linger was a fixed wait before every commit cycle; AckDelay replaced
	// it. Only its zero value (the old default) is accepted.
	Linger time.Duration `mapstructure:"linger"`
	// MaxTopics, MaxPartitions and MaxOpenSegments are the caps of
	// WithMaxTopics, WithMaxPartitions and WithMaxOpenSegments (0: none).
	MaxTopics       int `mapstructure:"max_topics"`
	MaxPartitions   int `mapstructure:"max_partitions"`
	MaxOpenSegments int `mapstructure:"max_open_segments"`
	// Topics are the topics the log keeps, created (or updated) at open.
	Topics map[string]TopicConfig `mapstructure:"topics"`
}

// Validate reports every problem, each a *configs.FieldError keyed
// relative to the section ("topics.alarms.flush").
func (s *Settings) Validate() error {
	p := configs.Problems{Kind: ErrInvalidConfig}
	if s.MinFreeRatio < 0 || s.MinFreeRatio >= 1 {
		p.Add("min_free_ratio", "%v is outside [0, 1)", s.MinFreeRatio)
	}
	if s.RetentionInterval <= 0 {
		p.Add("retention_interval", "%v must be positive", s.RetentionInterval)
	}
	if s.AckDelay < 0 || s.AckDelay > 10*time.Second {
		p.Add("ack_delay", "%v is outside 0s..10s", s.AckDelay)
	}
	if s.Linger != 0 {
		p.Add("linger", "was replaced by %s, a delay budget rather than a fixed wait (set it instead; remove linger)", configs.Key("ack_delay"))
	}
	partitions := 0
	for _, name := range slices.Sorted(maps.Keys(s.Topics)) {
		if err := ValidTopicName(name); err != nil {
			p.Add("topics."+name, "invalid topic name (use 1-200 of [a-zA-Z0-9._-], not starting with '.')")
			continue
		}
		tc := s.Topics[name]
		tc.EnsureDefaults()
		partitions += tc.Partitions
		p.Nest("topics."+name, tc.Validate())
	}
	switch {
	case s.MaxTopics < 0:
		p.Add("max_topics", "%d is negative", s.MaxTopics)
	case s.MaxTopics > 0 && len(s.Topics) > s.MaxTopics:
		p.Add("max_topics", "%d is below the %d topics configured", s.MaxTopics, len(s.Topics))
	}
	switch {
	case s.MaxPartitions < 0:
		p.Add("max_partitions", "%d is negative", s.MaxPartitions)
	case s.MaxPartitions > 0 && partitions > s.MaxPartitions:
		p.Add("max_partitions", "%d is below the %d partitions configured", s.MaxPartitions, partitions)
	}
	if s.MaxOpenSegments < 0 {
		p.Add("max_open_segments", "%d is negative", s.MaxOpenSegments)
	}
	return p.Err()
}

// Partitions counts the partitions of the configured topics (defaults
// filled).
func (s *Settings) Partitions() int {
	n := 0
	for _, tc := range s.Topics {
		tc.EnsureDefaults()
		n += tc.Partitions
	}
	return n
}

// Options are the log options the settings stand for.
func (s *Settings) Options() []Option {
	return []Option{
		WithMinFreeRatio(s.MinFreeRatio), WithRetentionInterval(s.RetentionInterval), WithAckDelay(s.AckDelay), WithPreallocate(s.Preallocate),
		WithMaxTopics(s.MaxTopics), WithMaxPartitions(s.MaxPartitions), WithMaxOpenSegments(s.MaxOpenSegments),
	}
}
