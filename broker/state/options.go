package state

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	badgeropts "github.com/dgraph-io/badger/v4/options"
)

// Option configures a Store.
type Option func(*options)

type options struct {
	logger     *slog.Logger
	gcInterval time.Duration
	inMemory   bool
	reserve    uint64
	free       func(string) (uint64, error)
	rebuild    bool
}

// DefaultGCInterval is how often the value-log GC loop runs unless
// WithGCInterval says otherwise.
const DefaultGCInterval = 5 * time.Minute

// gcDiscardRatio rewrites a value-log file when at least half of it is
// garbage: a lifetime write amplification of about 2 (badger's advice).
const gcDiscardRatio = 0.5

func defaultOptions() options {
	return options{
		logger:     slog.Default(),
		gcInterval: DefaultGCInterval,
		reserve:    DefaultReserve,
	}
}

// WithLogger sets the logger that receives badger's warnings and errors
// (default slog.Default()); badger's info and debug lines are dropped. A
// nil logger discards everything.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithGCInterval sets the period of the value-log GC loop (default 5 min);
// zero or negative disables the loop.
func WithGCInterval(d time.Duration) Option { return func(o *options) { o.gcInterval = d } }

// WithReserve sets the free space below which writes are refused
// (default DefaultReserve; see space.go).
func WithReserve(bytes uint64) Option { return func(o *options) { o.reserve = bytes } }

// WithFreeSpace replaces the free-space lookup, for tests.
func WithFreeSpace(free func(dir string) (uint64, error)) Option {
	return func(o *options) { o.free = free }
}

// WithRebuildOnDamage makes Open move a store badger cannot open aside
// (kept for inspection, Store.Rebuilt names it) and start anew, instead
// of failing.
func WithRebuildOnDamage() Option { return func(o *options) { o.rebuild = true } }

// WithInMemory keeps everything in memory, for tests (default on disk).
// The directory given to Open is ignored and no GC loop runs.
func WithInMemory() Option { return func(o *options) { o.inMemory = true } }

// Badger sizes, chosen for a Raspberry Pi-class device and for 32-bit ARM
// (docs/libraries.md#badger).
const (
	// memTableSize is the in-memory write buffer, and so the size of every
	// level-0 table flushed from it. Badger allocates it up front as one
	// arena, so it is resident memory: 2 MiB holds thousands of registry
	// records and offsets, and keeps the daemon near its 64 MiB budget with
	// a thousand devices connected. Badger's default (64 MiB, times 5
	// memtables) alone would exceed what we budget for the whole daemon.
	memTableSize = 2 << 20
	// baseTableSize is the target SST size. It must be at least half of
	// memTableSize: a flushed table larger than 2×baseTableSize is written
	// corrupt on 32-bit ARM (ristretto's allocator overflows a shift).
	baseTableSize = 2 << 20
	// baseLevelSize is the size of level 1; small, since the state is small.
	baseLevelSize = 16 << 20
	// valueLogFileSize is tens of MiB: badger mmaps a value-log file at
	// twice its size, which fails on 32-bit address spaces with the 1 GiB
	// default, and the newest file is never garbage collected.
	valueLogFileSize = 16 << 20
	// valueThreshold keeps values below 1 KiB (registry records, offsets,
	// checkpoints) in the LSM tree. Badger requires it to be at most 15%
	// of memTableSize (its maximum batch size).
	valueThreshold = 1 << 10
	// inMemoryValueThreshold keeps every value inline for WithInMemory (no
	// value log): above MaxValueSize (badger panics on a value exactly at
	// the threshold in memory mode), within badger's 15% of memTableSize.
	inMemoryValueThreshold = MaxValueSize + 1
	// numMemtables is one active and one flushing memtable.
	numMemtables = 2
	// Level 0 compacts after 2 tables and stalls writes at 4, so it never
	// holds much memory in table indexes and blooms.
	numLevelZeroTables      = 2
	numLevelZeroTablesStall = 4
	// numCompactors is badger's minimum: 1 is rejected ("need at least 2")
	// and 0 would disable compaction, letting deletes grow the disk.
	numCompactors = 2
	// numGoroutines bounds the goroutines used by streams and iterators
	// (default 8); a Pi has 4 cores.
	numGoroutines = 2
)

// badgerOptions builds the badger options for a Store; each choice is
// explained at its constant above or inline.
func badgerOptions(dir string, o options) badger.Options {
	bo := badger.DefaultOptions(dir).WithValueThreshold(valueThreshold)
	if o.inMemory {
		// Badger refuses InMemory with a directory set. Without a value
		// log it refuses values above the threshold (and panics at exactly
		// the threshold), so raise it to its maximum, 1 MiB, above
		// MaxValueSize, to accept what the disk store accepts.
		bo = badger.DefaultOptions("").WithInMemory(true).WithValueThreshold(inMemoryValueThreshold)
	}
	return bo.
		WithMemTableSize(memTableSize).
		WithBaseTableSize(baseTableSize).
		WithNumMemtables(numMemtables).
		WithNumLevelZeroTables(numLevelZeroTables).
		WithNumLevelZeroTablesStall(numLevelZeroTablesStall).
		WithBaseLevelSize(baseLevelSize).
		WithValueLogFileSize(valueLogFileSize).
		// No compression: the values are small JSON records that compress
		// poorly per 4 KiB block, and compression would need a block cache
		// (badger panics with compression and BlockCacheSize 0).
		WithCompression(badgeropts.None).
		// No block cache: without compression or encryption a cache only
		// duplicates what the kernel's page cache already holds.
		WithBlockCacheSize(0).
		// IndexCacheSize 0 keeps all table indexes and blooms in memory
		// without a cache; with a few small tables that is the cheapest.
		WithIndexCacheSize(0).
		WithNumCompactors(numCompactors).
		WithNumGoroutines(numGoroutines).
		// Metrics off: they are expvar globals we do not export, and they
		// walk the directory to compute sizes.
		WithMetricsEnabled(false).
		// Conflict detection off: the Store serializes its writers, so
		// transactions cannot conflict, and badger need not track the
		// keys every transaction touches.
		WithDetectConflicts(false).
		// SyncWrites: every commit is msynced, so offsets and credentials
		// survive power loss, not only a crash of the process.
		WithSyncWrites(true).
		WithLogger(slogLogger{o.logger})
}

// slogLogger adapts a slog.Logger to badger.Logger, passing on warnings
// and errors only.
type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Errorf(format string, args ...any) {
	if s.l != nil {
		s.l.Error(strings.TrimSpace(fmt.Sprintf(format, args...)), "component", "badger")
	}
}

func (s slogLogger) Warningf(format string, args ...any) {
	if s.l != nil {
		s.l.Warn(strings.TrimSpace(fmt.Sprintf(format, args...)), "component", "badger")
	}
}

func (slogLogger) Infof(string, ...any)  {}
func (slogLogger) Debugf(string, ...any) {}
