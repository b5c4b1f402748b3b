package group

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/ferry-iot/ferry/broker/state"
	"github.com/ferry-iot/ferry/configs"
)

// Defaults filled in by New for zero Config fields.
const (
	DefaultMinSessionTimeout = 6 * time.Second    // group.min.session.timeout.ms
	DefaultMaxSessionTimeout = 30 * time.Minute   // group.max.session.timeout.ms
	DefaultOffsetsRetention  = 7 * 24 * time.Hour // offsets.retention.minutes
	DefaultMaxGroups         = 10000              // groups held in memory
	DefaultMaxGroupSize      = 1000               // members (and pending members) per group
)

// Fixed limits and constants.
const (
	housekeepingInterval = time.Minute        // how often offsets retention runs
	maxGroupIDLen        = 2048               // bytes; keeps store keys far below state.MaxKeySize
	maxTopicLen          = 249                // Kafka's topic name limit
	maxMetadataLen       = 4096               // offset.metadata.max.bytes
	deleteBatch          = 1000               // offset keys deleted per store transaction
	allGroupOperations   = 1<<3 | 1<<6 | 1<<8 // READ, DELETE, DESCRIBE: AuthorizedOperations with no ACLs
	emptyGroupLogName    = "(empty group name)"
)

// Config configures a Coordinator. Zero fields take the defaults above.
type Config struct {
	// MinSessionTimeout and MaxSessionTimeout bound a JoinGroup's session
	// timeout (default 6 s and 30 min); outside them the join fails with
	// INVALID_SESSION_TIMEOUT.
	MinSessionTimeout time.Duration `mapstructure:"group_min_session_timeout"`
	MaxSessionTimeout time.Duration `mapstructure:"group_max_session_timeout"`
	// InitialRebalanceDelay delays the completion of the first rebalance
	// of an empty group, so members starting together land in one
	// generation (default 0; Kafka's is 3 s). Each new member arriving
	// within the delay extends it, up to the rebalance timeout.
	InitialRebalanceDelay time.Duration `mapstructure:"group_initial_rebalance_delay"`
	// OffsetsRetention is how long a group may stay empty before its
	// committed offsets are deleted; an offset committed while the group
	// was empty counts from its commit (default 7 days).
	OffsetsRetention time.Duration `mapstructure:"offsets_retention"`
	// PartitionExists, if set, is asked about every partition of an
	// OffsetCommit (with no lock held); unknown ones get
	// UNKNOWN_TOPIC_OR_PARTITION. nil: every partition exists.
	PartitionExists func(topic string, partition int32) bool `mapstructure:"-"`
	// MaxGroups caps the groups held (default 10000); a JoinGroup or
	// OffsetCommit that would create one more gets GROUP_MAX_SIZE_REACHED.
	// Groups loaded from the store at New are never refused.
	MaxGroups int `mapstructure:"max_groups"`
	// MaxGroupSize caps members plus pending members of one group
	// (default 1000; GROUP_MAX_SIZE_REACHED).
	MaxGroupSize int `mapstructure:"max_group_size"`
	// Logger receives rebalances, expiries and store errors; nil discards.
	Logger *slog.Logger `mapstructure:"-"`
	// Now is the clock (nil: time.Now), for tests.
	Now func() time.Time `mapstructure:"-"`
	// Monotonic is time the daemon has run (nil: since New), for tests.
	// Offsets retention counts it, not wall time: an NTP step after weeks
	// switched off must not expire every offset at once.
	Monotonic func() time.Duration `mapstructure:"-"`
}

// Validate reports every problem of settings read from a configuration,
// each a *configs.FieldError named by its mapstructure key (the daemon's
// kafka section holds them).
func (cfg *Config) Validate() error {
	var p configs.Problems
	if cfg.MinSessionTimeout <= 0 || cfg.MaxSessionTimeout < cfg.MinSessionTimeout {
		p.Add("group_min_session_timeout", "%v..%v is not a positive range (group_max_session_timeout)", cfg.MinSessionTimeout, cfg.MaxSessionTimeout)
	}
	if cfg.InitialRebalanceDelay < 0 {
		p.Add("group_initial_rebalance_delay", "%v is negative", cfg.InitialRebalanceDelay)
	}
	if cfg.OffsetsRetention <= 0 {
		p.Add("offsets_retention", "%v must be positive", cfg.OffsetsRetention)
	}
	if cfg.MaxGroups < 1 {
		p.Add("max_groups", "%d must be at least 1", cfg.MaxGroups)
	}
	if cfg.MaxGroupSize < 1 {
		p.Add("max_group_size", "%d must be at least 1", cfg.MaxGroupSize)
	}
	return p.Err()
}

// fill sets defaults and validates, reporting every problem at once.
func (cfg *Config) fill() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("group: config: "+format, args...)) }
	dur := func(name string, d *time.Duration, def time.Duration) {
		switch {
		case *d < 0:
			bad("%s: negative (%v)", name, *d)
		case *d == 0:
			*d = def
		}
	}
	dur("MinSessionTimeout", &cfg.MinSessionTimeout, DefaultMinSessionTimeout)
	dur("MaxSessionTimeout", &cfg.MaxSessionTimeout, DefaultMaxSessionTimeout)
	dur("InitialRebalanceDelay", &cfg.InitialRebalanceDelay, 0)
	dur("OffsetsRetention", &cfg.OffsetsRetention, DefaultOffsetsRetention)
	if cfg.MinSessionTimeout > cfg.MaxSessionTimeout {
		bad("MinSessionTimeout (%v) above MaxSessionTimeout (%v)", cfg.MinSessionTimeout, cfg.MaxSessionTimeout)
	}
	num := func(name string, n *int, def int) {
		switch {
		case *n < 0:
			bad("%s: negative (%d)", name, *n)
		case *n == 0:
			*n = def
		}
	}
	num("MaxGroups", &cfg.MaxGroups, DefaultMaxGroups)
	num("MaxGroupSize", &cfg.MaxGroupSize, DefaultMaxGroupSize)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Monotonic == nil {
		start := time.Now()
		cfg.Monotonic = func() time.Duration { return time.Since(start) }
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return errors.Join(errs...)
}

// Internal errors from lockGroup, turned into Kafka codes by codeOf.
var (
	errClosed        = errors.New("group: coordinator closed")
	errTooManyGroups = errors.New("group: too many groups")
)

// codeOf maps lockGroup's errors to the Kafka error code answered.
func codeOf(err error) int16 {
	if errors.Is(err, errTooManyGroups) {
		return kerr.GroupMaxSizeReached.Code
	}
	return kerr.CoordinatorNotAvailable.Code
}

// Coordinator is the classic consumer-group coordinator of one broker. It
// is safe for concurrent use.
type Coordinator struct {
	store *state.Store
	cfg   Config
	log   *slog.Logger

	// mu guards the group map and the closed flag. It is a leaf lock:
	// taken after a group's mu, never held while taking one.
	mu struct {
		sync.Mutex
		groups map[string]*group
		closed bool
	}

	closing chan struct{}  // closed by Close: wakes blocked calls, stops run
	kick    chan struct{}  // wakes run when a deadline earlier than wakeAt appears
	wakeAt  atomic.Int64   // unix nanos of run's next wake; MaxInt64 while it scans
	wg      sync.WaitGroup // run

	refused       atomic.Int64 // groups refused since the last log line
	refusedLogged atomic.Int64 // unix nanos of that line
}

// New fills cfg's defaults, loads the committed offsets from store (their
// groups start Empty) and starts the coordinator's timer goroutine. The
// store stays the caller's: Close does not close it.
func New(store *state.Store, cfg Config) (*Coordinator, error) {
	err := cfg.fill()
	if store == nil {
		err = errors.Join(err, errors.New("group: nil state store"))
	}
	if err != nil {
		return nil, err
	}
	c := &Coordinator{
		store:   store,
		cfg:     cfg,
		log:     cfg.Logger,
		closing: make(chan struct{}),
		kick:    make(chan struct{}, 1),
	}
	c.mu.groups = make(map[string]*group)
	if err := c.load(); err != nil {
		return nil, err
	}
	c.wakeAt.Store(math.MaxInt64)
	c.wg.Add(1)
	go c.run()
	return c, nil
}

// Close stops the timer goroutine and waits for it. Blocked JoinGroup and
// SyncGroup calls return COORDINATOR_NOT_AVAILABLE, and so do later calls.
// Closing twice is a no-op.
func (c *Coordinator) Close() error {
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		return nil
	}
	c.mu.closed = true
	c.mu.Unlock()
	close(c.closing)
	c.wg.Wait()
	return nil
}

func (c *Coordinator) now() time.Time { return c.cfg.Now() }

// mono is the monotonic clock offsets retention runs on.
func (c *Coordinator) mono() time.Duration {
	if c.cfg.Monotonic == nil { // a bare Coordinator in a unit test
		return 0
	}
	return c.cfg.Monotonic()
}

// refusedGroup logs a group refused for MaxGroups, at most once a minute
// with the number refused since the last line.
func (c *Coordinator) refusedGroup(name string) {
	n := c.refused.Add(1)
	now := time.Now().UnixNano()
	last := c.refusedLogged.Load()
	if now-last < int64(time.Minute) || !c.refusedLogged.CompareAndSwap(last, now) {
		return
	}
	c.refused.Add(-n)
	c.log.Warn("group: refusing new groups: too many groups", "limit", c.cfg.MaxGroups,
		"refused", n, "last", logName(name))
}

// lockGroup returns the named group with its mu held. A missing group is
// created (Empty) if create is set, else lockGroup returns nil, nil.
// Errors: errClosed, errTooManyGroups.
func (c *Coordinator) lockGroup(name string, create bool) (*group, error) {
	for {
		c.mu.Lock()
		if c.mu.closed {
			c.mu.Unlock()
			return nil, errClosed
		}
		g := c.mu.groups[name]
		if g == nil {
			if !create {
				c.mu.Unlock()
				return nil, nil
			}
			if len(c.mu.groups) >= c.cfg.MaxGroups {
				c.mu.Unlock()
				c.refusedGroup(name)
				return nil, errTooManyGroups
			}
			g = newGroup(c, strings.Clone(name), c.now())
			c.mu.groups[name] = g
		}
		c.mu.Unlock()
		g.mu.Lock()
		// A group is marked Dead and leaves the map under its own mu, so
		// a Dead group here is already gone from the map: look again.
		if g.state != stateDead {
			return g, nil
		}
		g.mu.Unlock()
	}
}

// snapshotGroups returns the live groups, sorted by name.
func (c *Coordinator) snapshotGroups() []*group {
	c.mu.Lock()
	gs := make([]*group, 0, len(c.mu.groups))
	for _, g := range c.mu.groups {
		gs = append(gs, g)
	}
	c.mu.Unlock()
	slices.SortFunc(gs, func(a, b *group) int { return strings.Compare(a.name, b.name) })
	return gs
}

func (c *Coordinator) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.closed
}

// schedule makes sure run wakes up by at: every deadline (session,
// rebalance, sync, join delay) is passed here when it is set. Deadlines
// that only move later need no call: run wakes at the old one, finds
// nothing due and sleeps until the new earliest.
func (c *Coordinator) schedule(at time.Time) {
	if at.UnixNano() < c.wakeAt.Load() {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
}

// run is the coordinator's one goroutine: it expires sessions, completes
// rebalances whose time is up and runs offsets retention once a minute.
func (c *Coordinator) run() {
	defer c.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	nextHousekeeping := c.now().Add(housekeepingInterval)
	for {
		// While we scan, every schedule kicks: a deadline set behind our
		// scan is then not missed.
		c.wakeAt.Store(math.MaxInt64)
		now := c.now()
		if !now.Before(nextHousekeeping) {
			c.housekeep()
			nextHousekeeping = now.Add(housekeepingInterval)
		}
		next := nextHousekeeping
		for _, g := range c.snapshotGroups() {
			g.mu.Lock()
			if g.state != stateDead {
				next = earliest(next, g.tickLocked(now))
			}
			g.mu.Unlock()
		}
		c.wakeAt.Store(next.UnixNano())
		t.Reset(max(0, next.Sub(now)))
		select {
		case <-c.closing:
			return
		case <-c.kick:
		case <-t.C:
		}
	}
}

// earliest returns the earlier of two times, a zero time meaning none.
func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}

// newMemberID returns prefix + "-" + a random (version 4) UUID, as Kafka
// does with the client id, or the instance id of a static member.
func newMemberID(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand since Go 1.24)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%s-%x-%x-%x-%x-%x", prefix, b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// validGroupID is the rule for APIs that need a real group: non-empty.
// Every API refuses names that could not be stored.
func validGroupID(name string) bool { return name != "" && len(name) <= maxGroupIDLen }

func logName(name string) string {
	if name == "" {
		return emptyGroupLogName
	}
	if len(name) > 64 {
		return name[:64] + "..."
	}
	return name
}
