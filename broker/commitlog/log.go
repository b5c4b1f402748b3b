package commitlog

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

const topicFileName = "topic.json"

// Log is a set of topics stored under one directory, with one committer
// goroutine writing every partition and one housekeeping goroutine for
// retention and compaction.
type Log struct {
	dir  string
	opts options

	createMu    sync.Mutex // serializes topic creation, update and deletion
	housekeepMu sync.Mutex // one retention or compaction pass at a time
	mu          sync.RWMutex
	topics      map[string]*Topic // guarded by mu
	closed      bool              // guarded by mu

	commit        *committer // the append pipeline (commit.go)
	retentionKick chan struct{}
	resume        chan struct{} // closed once housekeeping may run (WithRetentionPaused)
	resumeOnce    sync.Once
	quit          chan struct{}
	wg            sync.WaitGroup

	clockBase  int64 // log-clock ms at open
	monoAtOpen time.Duration

	diskLow atomic.Bool // below the free-disk floor
	// diskFull is set while a full-disk spell refuses appends (diskfull.go);
	// diskFullChecked is when the free space was last looked at (ns).
	diskFull        atomic.Bool
	diskFullChecked atomic.Int64
	freeBudget      atomic.Int64 // bytes that may be written before the next disk check

	files *segmentFiles // sealed segment files kept open (files.go)

	repairs repairLog // what open and reads repaired (repairs.go)

	stats struct {
		indexRebuilds    atomic.Int64
		indexWriteErrors atomic.Int64
		damaged          atomic.Int64
		damagedOffsets   atomic.Int64
		diskFullWrites   atomic.Int64
		diskFullSpells   atomic.Int64
	}
}

// Stats are the log's counters since it opened.
type Stats struct {
	BytesWritten int64         // bytes written to segment files
	Syncs        int64         // fsync rounds
	SyncTime     time.Duration // total time in fsync rounds
	DiskLow      bool          // below the free-disk floor
	// IndexRebuilds counts segment indexes rebuilt because they were
	// missing or wrong, at open or when a read found a wrong entry.
	IndexRebuilds int64
	// IndexWriteErrors counts rebuilt indexes that could not be written
	// (served from memory until the next open).
	IndexWriteErrors int64
	// DamagedSegments counts damage found in segments (at open or by
	// reads): damaged batches passed over, or a segment's damaged rest;
	// each is also listed in its partition's RecoveryReport.Damaged.
	DamagedSegments int64
	// DamagedOffsets counts the offsets that damage made unreadable.
	DamagedOffsets int64
	// Repairs counts repairs by kind (Repair*), since open.
	Repairs map[string]int64
	// DiskFull is true while appends are refused for a full disk;
	// DiskFullSpells counts such spells, DiskFullWrites the writes that
	// found no room (each undone).
	DiskFull       bool
	DiskFullSpells int64
	DiskFullWrites int64
	// OpenSealedFiles is the number of sealed segment files open now, and
	// SealedFileCloses how many the WithMaxOpenSegments bound has closed.
	OpenSealedFiles  int
	SealedFileCloses int64
}

// Open opens (or creates) the log in dir and recovers every partition.
func Open(dir string, opts ...Option) (*Log, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	l := &Log{
		dir: dir, opts: o,
		topics:        map[string]*Topic{},
		retentionKick: make(chan struct{}, 1),
		resume:        make(chan struct{}),
		quit:          make(chan struct{}),
		files:         &segmentFiles{fs: o.fs, max: o.maxOpenSegments},
	}
	l.commit = newCommitter(l)
	if err := l.load(); err != nil {
		l.closeFiles()
		return nil, err
	}
	l.checkDisk()
	if !o.retentionPaused {
		l.ResumeRetention()
	}
	l.commit.start()
	l.wg.Add(1)
	go l.housekeepingLoop()
	return l, nil
}

type loadedTopic struct {
	t      *Topic
	states []partitionState
	errs   []error
}

// load opens every topic. It first reads every partition's state to
// restore the log clock, then opens the partitions.
func (l *Log) load() error {
	fs := l.opts.fs
	if err := fs.MkdirAll(l.dir, 0o755); err != nil {
		return fmt.Errorf("commitlog: create %s: %w", l.dir, err)
	}
	// Make the directory itself durable: its entry and its parents'.
	for d := filepath.Clean(l.dir); ; d = filepath.Dir(d) {
		if err := fs.SyncDir(d); err != nil {
			return fmt.Errorf("commitlog: sync %s: %w", d, err)
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	names, err := fs.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("commitlog: list %s: %w", l.dir, err)
	}
	var loaded []loadedTopic
	for _, n := range names {
		path := filepath.Join(l.dir, n)
		if strings.HasPrefix(n, ".") {
			if !leftoverTopicDir(n) {
				l.noteRepair(slog.LevelWarn, Repair{Kind: RepairForeign, Partition: -1,
					Detail: fmt.Sprintf("left alone %s: not a file Ferry makes", path)})
				continue
			}
			if err := fs.RemoveAll(path); err != nil {
				return fmt.Errorf("commitlog: remove leftover %s: %w", path, err)
			}
			l.noteRepair(slog.LevelWarn, Repair{Kind: RepairLeftover, Partition: -1,
				Detail: fmt.Sprintf("removed %s, left by an interrupted topic create or delete", path)})
			continue
		}
		name, cfg, ok, err := l.loadTopicFile(path, n)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		t := &Topic{log: l, name: name, dir: path}
		t.cfg.Store(&cfg)
		lt := loadedTopic{t: t}
		for i := 0; i < cfg.Partitions; i++ {
			pdir := filepath.Join(path, strconv.Itoa(i))
			if ok, err := vfs.Exists(fs, pdir); err != nil {
				return fmt.Errorf("commitlog: topic %q partition %d: stat %s: %w", name, i, pdir, err)
			} else if !ok { // created by an UpdateTopic that crashed
				if err := fs.MkdirAll(pdir, 0o755); err != nil {
					return fmt.Errorf("commitlog: topic %q partition %d: create %s: %w", name, i, pdir, err)
				}
				if err := fs.SyncDir(path); err != nil {
					return fmt.Errorf("commitlog: topic %q partition %d: sync %s: %w", name, i, path, err)
				}
			}
			st, err := readState(fs, pdir)
			lt.states = append(lt.states, st)
			lt.errs = append(lt.errs, err)
			if err == nil {
				l.clockBase = max(l.clockBase, st.LogClockMs)
			}
		}
		loaded = append(loaded, lt)
	}
	l.monoAtOpen = l.opts.clock.Monotonic()
	for _, lt := range loaded {
		for i := range lt.states {
			p, err := l.openPartition(lt.t, int32(i), filepath.Join(lt.t.dir, strconv.Itoa(i)), lt.states[i], lt.errs[i])
			if err != nil {
				for _, p := range lt.t.parts {
					releaseAll(p.segs)
				}
				return err // names the topic and partition
			}
			lt.t.parts = append(lt.t.parts, p)
			if err := l.afterOpen(p); err != nil {
				return err
			}
		}
		l.topics[lt.t.name] = lt.t
	}
	return nil
}

// leftoverTopicDir reports whether n is a hidden directory Ferry makes
// while creating or deleting a topic (".<topic>.creating",
// ".<topic>.deleting").
func leftoverTopicDir(n string) bool {
	for _, suf := range []string{".creating", ".deleting"} {
		if t, ok := strings.CutSuffix(n, suf); ok && len(t) > 1 && ValidTopicName(t[1:]) == nil {
			return true
		}
	}
	return false
}

// loadTopicFile reads the settings of the topic in directory path (named
// n). A missing or unreadable file is rebuilt from the directory — as
// many partitions as it holds, default settings, which the daemon's
// configuration then updates — with the unreadable one kept aside; a
// directory with neither settings nor partitions is not a topic and is
// left alone (ok false). Only a failure to write the rebuilt file is an
// error.
func (l *Log) loadTopicFile(path, n string) (name string, cfg TopicConfig, ok bool, err error) {
	fs := l.opts.fs
	file := filepath.Join(path, topicFileName)
	b, rerr := vfs.ReadFile(fs, file)
	if rerr == nil {
		name, cfg, rerr = decodeTopicFile(b)
		if rerr == nil && name != n {
			rerr = fmt.Errorf("it names topic %q", name)
		}
		if rerr == nil {
			return name, cfg, true, nil
		}
	}
	parts := 0
	if entries, err := fs.ReadDir(path); err == nil {
		for ; slices.Contains(entries, strconv.Itoa(parts)); parts++ {
		}
	}
	if parts == 0 || ValidTopicName(n) != nil {
		l.noteRepair(slog.LevelWarn, Repair{Kind: RepairForeign, Partition: -1,
			Detail: fmt.Sprintf("left alone %s: no topic settings (%v) and no partitions", path, rerr)})
		return "", TopicConfig{}, false, nil
	}
	kept := ""
	if ok, _ := vfs.Exists(fs, file); ok {
		kept = fmt.Sprintf("%s.bad-%d", file, l.opts.clock.Now().Unix())
		if err := fs.Rename(file, kept); err != nil {
			return "", TopicConfig{}, false, fmt.Errorf("commitlog: %s: keep the unreadable settings aside: %w", path, err)
		}
	}
	cfg = TopicConfig{Partitions: parts}
	cfg.EnsureDefaults()
	meta, err := encodeTopicFile(n, cfg)
	if err == nil {
		err = vfs.WriteFileAtomic(fs, file, meta)
	}
	if err != nil {
		return "", TopicConfig{}, false, fmt.Errorf("commitlog: %s: rebuild %s: %w", path, topicFileName, err)
	}
	detail := fmt.Sprintf("rebuilt the settings of topic %q from its directory (%d partitions, default settings until the configuration updates them): %v", n, parts, rerr)
	if kept != "" {
		detail += "; the unreadable file is kept as " + kept
	}
	l.noteRepair(slog.LevelWarn, Repair{Kind: RepairMetadata, Topic: n, Partition: -1, Detail: detail})
	return n, cfg, true, nil
}

// afterOpen gives segments of unknown age the current log time, marks the
// partition unclean on disk and reports what recovery did.
func (l *Log) afterOpen(p *Partition) error {
	now := l.logNowMs()
	for _, s := range p.segs {
		if s.logTime.Load() < 0 {
			s.logTime.Store(now)
		}
	}
	if a := p.segs[len(p.segs)-1]; a.createdLog == 0 || a.createdLog > now {
		a.createdLog = now
	}
	if err := p.writeState(false); err != nil {
		if !isNoSpace(err) {
			return fmt.Errorf("mark open: %w", err) // writeState names the topic and partition
		}
		// A full disk must not stop the start. The old state stays; should
		// it say "clean" and the daemon then crash, the next open still
		// CRC-checks the active segment's unindexed tail.
		l.noteRepair(slog.LevelWarn, p.repair(RepairMetadata, "cannot mark the partition open on a full disk (it is marked at the next roll or close): %v", err))
	}
	r := p.report
	if !r.Clean || len(r.IndexRebuilt) > 0 || len(r.Damaged) > 0 {
		l.opts.logger.Info("commitlog: partition recovered", "topic", r.Topic, "partition", r.Partition,
			"clean", r.Clean, "scanned_bytes", r.ScannedBytes, "truncated_bytes", r.TruncatedBytes,
			"indexes_rebuilt", len(r.IndexRebuilt), "damaged_segments", len(r.Damaged), "next_offset", p.next)
	}
	return nil
}

// logNowMs is the log's own clock: it advances with the monotonic clock
// while the log is open and resumes from its persisted value on open, so
// wall-clock jumps (a Raspberry Pi setting its clock from NTP) never age
// data.
func (l *Log) logNowMs() int64 {
	return l.clockBase + (l.opts.clock.Monotonic() - l.monoAtOpen).Milliseconds()
}

// Dir returns the log's directory.
func (l *Log) Dir() string { return l.dir }

// Stats returns the log's counters.
func (l *Log) Stats() Stats {
	return Stats{
		BytesWritten: l.commit.written.Load(),
		Syncs:        l.commit.syncs.Load(),
		SyncTime:     time.Duration(l.commit.syncNanos.Load()),
		DiskLow:      l.diskLow.Load(),

		IndexRebuilds:    l.stats.indexRebuilds.Load(),
		IndexWriteErrors: l.stats.indexWriteErrors.Load(),
		DamagedSegments:  l.stats.damaged.Load(),
		DamagedOffsets:   l.stats.damagedOffsets.Load(),
		Repairs:          l.repairCounts(),
		DiskFull:         l.diskFull.Load(),
		DiskFullSpells:   l.stats.diskFullSpells.Load(),
		DiskFullWrites:   l.stats.diskFullWrites.Load(),
		OpenSealedFiles:  l.files.Open(),
		SealedFileCloses: l.files.closed.Load(),
	}
}

// Topic returns the named topic.
func (l *Log) Topic(name string) (*Topic, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return nil, ErrClosed
	}
	t, ok := l.topics[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownTopic, name)
	}
	return t, nil
}

// Topics returns every topic, sorted by name.
func (l *Log) Topics() []*Topic {
	l.mu.RLock()
	ts := make([]*Topic, 0, len(l.topics))
	for _, t := range l.topics {
		ts = append(ts, t)
	}
	l.mu.RUnlock()
	sort.Slice(ts, func(i, j int) bool { return ts[i].name < ts[j].name })
	return ts
}

// Recovery returns the recovery report of every partition.
func (l *Log) Recovery() []RecoveryReport {
	var out []RecoveryReport
	for _, t := range l.Topics() {
		for _, p := range t.Partitions() {
			out = append(out, p.Recovery())
		}
	}
	return out
}

// CreateTopic creates a topic. The topic appears atomically: it is built in
// a hidden directory and renamed into place.
func (l *Log) CreateTopic(name string, cfg TopicConfig) (*Topic, error) {
	if err := ValidTopicName(name); err != nil {
		return nil, err
	}
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("commitlog: topic %q: %w", name, err)
	}
	l.createMu.Lock()
	defer l.createMu.Unlock()
	if _, err := l.Topic(name); err == nil {
		return nil, fmt.Errorf("%w: %s", ErrTopicExists, name)
	} else if errors.Is(err, ErrClosed) {
		return nil, err
	}
	if err := l.checkLimitsLocked(1, cfg.Partitions); err != nil {
		return nil, fmt.Errorf("commitlog: topic %q: %w", name, err)
	}
	fail := func(what string, err error) (*Topic, error) {
		return nil, fmt.Errorf("commitlog: topic %q: create: %s: %w", name, what, err)
	}
	fs := l.opts.fs
	tmp := filepath.Join(l.dir, "."+name+".creating")
	final := filepath.Join(l.dir, name)
	meta, err := encodeTopicFile(name, cfg)
	if err != nil {
		return fail("encode "+topicFileName, err)
	}
	if err := fs.RemoveAll(tmp); err != nil {
		return fail("remove leftover "+tmp, err)
	}
	if err := fs.MkdirAll(tmp, 0o755); err != nil {
		return fail("create "+tmp, err)
	}
	for i := 0; i < cfg.Partitions; i++ {
		if err := fs.MkdirAll(filepath.Join(tmp, strconv.Itoa(i)), 0o755); err != nil {
			return fail(fmt.Sprintf("create partition %d directory", i), err)
		}
	}
	if err := vfs.WriteFileAtomic(fs, filepath.Join(tmp, topicFileName), meta); err != nil {
		return fail("write "+topicFileName, err)
	}
	if err := fs.Rename(tmp, final); err != nil {
		return fail("rename into place", err)
	}
	if err := fs.SyncDir(l.dir); err != nil {
		return fail("sync "+l.dir, err)
	}
	t := &Topic{log: l, name: name, dir: final}
	t.cfg.Store(&cfg)
	if err := l.addPartitions(t, cfg.Partitions); err != nil {
		for _, p := range t.Partitions() {
			p.segMu.Lock()
			releaseAll(p.segs)
			p.segs = nil
			p.segMu.Unlock()
		}
		return nil, err
	}
	l.mu.Lock()
	l.topics[name] = t
	l.mu.Unlock()
	return t, nil
}

// checkLimitsLocked refuses adding topics and partitions past the caps
// (WithMaxTopics, WithMaxPartitions). createMu is held, so the counts
// cannot move under it.
func (l *Log) checkLimitsLocked(topics, partitions int) error {
	if l.opts.maxTopics <= 0 && l.opts.maxPartitions <= 0 {
		return nil
	}
	all := l.Topics()
	if limit := l.opts.maxTopics; limit > 0 && topics > 0 && len(all)+topics > limit {
		return &LimitError{What: "topics", Limit: limit, Have: len(all), Want: topics}
	}
	if limit := l.opts.maxPartitions; limit > 0 && partitions > 0 {
		n := 0
		for _, t := range all {
			n += t.NumPartitions()
		}
		if n+partitions > limit {
			return &LimitError{What: "partitions", Limit: limit, Have: n, Want: partitions}
		}
	}
	return nil
}

// addPartitions opens partitions len(t.parts)..n-1 (their directories exist
// or are created).
func (l *Log) addPartitions(t *Topic, n int) error {
	for i := t.NumPartitions(); i < n; i++ {
		pdir := filepath.Join(t.dir, strconv.Itoa(i))
		if err := l.opts.fs.MkdirAll(pdir, 0o755); err != nil {
			return fmt.Errorf("commitlog: topic %q partition %d: create %s: %w", t.name, i, pdir, err)
		}
		if err := l.opts.fs.SyncDir(t.dir); err != nil {
			return fmt.Errorf("commitlog: topic %q partition %d: sync %s: %w", t.name, i, t.dir, err)
		}
		p, err := l.openPartition(t, int32(i), pdir, partitionState{}, errors.New("new partition"))
		if err != nil {
			return err // names the topic and partition
		}
		p.report.Clean = true
		if err := l.afterOpen(p); err != nil {
			releaseAll(p.segs)
			return fmt.Errorf("commitlog: topic %q partition %d: %w", t.name, i, err)
		}
		t.mu.Lock()
		t.parts = append(t.parts, p)
		t.mu.Unlock()
	}
	return nil
}

// UpdateTopic replaces a topic's configuration. Partitions may grow but not
// shrink; the new config is stored atomically before it takes effect.
func (l *Log) UpdateTopic(name string, cfg TopicConfig) error {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("commitlog: topic %q: %w", name, err)
	}
	l.createMu.Lock()
	defer l.createMu.Unlock()
	t, err := l.Topic(name)
	if err != nil {
		return err
	}
	if cfg.Partitions < t.NumPartitions() {
		return fmt.Errorf("%w: partitions: %s has %d, cannot shrink to %d", ErrInvalidConfig, name, t.NumPartitions(), cfg.Partitions)
	}
	if err := l.checkLimitsLocked(0, cfg.Partitions-t.NumPartitions()); err != nil {
		return fmt.Errorf("commitlog: topic %q: %w", name, err)
	}
	meta, err := encodeTopicFile(name, cfg)
	if err != nil {
		return fmt.Errorf("commitlog: topic %q: update: encode %s: %w", name, topicFileName, err)
	}
	if err := vfs.WriteFileAtomic(l.opts.fs, filepath.Join(t.dir, topicFileName), meta); err != nil {
		return fmt.Errorf("commitlog: topic %q: update: write %s: %w", name, topicFileName, err)
	}
	t.cfg.Store(&cfg)
	return l.addPartitions(t, cfg.Partitions)
}

// EnsureTopic creates the topic, or updates its config when it exists.
func (l *Log) EnsureTopic(name string, cfg TopicConfig) (*Topic, error) {
	t, err := l.CreateTopic(name, cfg)
	if errors.Is(err, ErrTopicExists) {
		if err := l.UpdateTopic(name, cfg); err != nil {
			return nil, err
		}
		return l.Topic(name)
	}
	return t, err
}

// DeleteTopic removes a topic and its data. Appends already queued are
// committed first; every later call on its partitions (appends, reads, time
// lookups, long polls) fails with ErrTopicDeleted. It waits for a retention
// or compaction pass in progress (housekeepMu), so no pass works on the
// partitions while their segments go, nor touches the files of a topic
// created later under the same name.
func (l *Log) DeleteTopic(name string) error {
	l.createMu.Lock()
	defer l.createMu.Unlock()
	t, err := l.Topic(name)
	if err != nil {
		return err
	}
	l.housekeepMu.Lock()
	defer l.housekeepMu.Unlock()
	l.mu.Lock()
	delete(l.topics, name)
	l.mu.Unlock()
	parts := t.Partitions()
	for _, p := range parts {
		p.deleted.Store(true)
		p.mu.Lock()
		p.closed.Store(true)
		p.mu.Unlock()
	}
	// Let the committer finish whatever was queued and the syncer publish
	// it, then forget the partitions. Close waits for createMu, so the
	// committer is running.
	l.commit.forget(parts)
	for _, p := range parts {
		p.segMu.Lock()
		releaseAll(p.segs)
		p.segs = nil
		p.segMu.Unlock()
		p.wake() // long polls return ErrTopicDeleted
	}
	fs := l.opts.fs
	tomb := filepath.Join(l.dir, "."+name+".deleting")
	if err := fs.Rename(t.dir, tomb); err != nil {
		return fmt.Errorf("commitlog: topic %q: delete: rename to %s: %w", name, tomb, err)
	}
	if err := fs.SyncDir(l.dir); err != nil {
		return fmt.Errorf("commitlog: topic %q: delete: sync %s: %w", name, l.dir, err)
	}
	if err := fs.RemoveAll(tomb); err != nil {
		return fmt.Errorf("commitlog: topic %q: delete: remove %s (removed on the next open): %w", name, tomb, err)
	}
	return nil
}

// Close stops accepting appends, commits everything queued, makes every
// partition durable, marks it clean (so the next open scans nothing) and
// closes the files.
func (l *Log) Close() error {
	// Wait for a topic create, update or delete in progress: they need the
	// committer and must not leave a topic half-made.
	l.createMu.Lock()
	defer l.createMu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.closed = true
	topics := make([]*Topic, 0, len(l.topics))
	for _, t := range l.topics {
		topics = append(topics, t)
	}
	l.mu.Unlock()
	for _, t := range topics {
		for _, p := range t.Partitions() {
			p.mu.Lock()
			p.closed.Store(true)
			p.mu.Unlock()
			p.wake() // long polls return ErrClosed
		}
	}
	close(l.quit)
	l.wg.Wait()
	var errs []error
	for _, t := range topics {
		for _, p := range t.Partitions() {
			if err := p.closeClean(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	l.closeFiles()
	return errors.Join(errs...)
}

// closeClean writes the active segment's indexes and a clean state. A
// partition with a sticky error is left unclean, so its next open rescans.
func (p *Partition) closeClean() error {
	if err := p.Err(); err != nil {
		return err
	}
	active := p.activeSegment()
	if active == nil {
		return nil
	}
	fail := func(err error) error {
		return &StorageError{Topic: p.topic.name, Partition: p.id, Op: "close", Err: err}
	}
	if err := active.file.Sync(); err != nil {
		return fail(err)
	}
	if active.indexBad.Load() { // a read found the in-memory index wrong
		p.repairIndex(active, errors.New("closing a segment whose index a read found wrong"))
	}
	active.filesMu.Lock()
	err := active.writeIndexes(p.log.opts.fs)
	active.filesMu.Unlock()
	if err != nil {
		return fail(err)
	}
	if err := p.writeState(true); err != nil {
		return fail(err)
	}
	return nil
}

// closeFiles releases every segment file.
func (l *Log) closeFiles() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, t := range l.topics {
		for _, p := range t.parts {
			p.segMu.Lock()
			releaseAll(p.segs)
			p.segs = nil
			p.segMu.Unlock()
		}
	}
}
