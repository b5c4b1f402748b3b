package commitlog

import (
	"time"
)

// A full disk is a spell, not a failure. When a write finds no room
// (ENOSPC, EDQUOT), the committer truncates what it wrote back and fails
// the appends it could not store (FullError, Reason "disk_full"); nothing
// is sticky. From then on every append is refused at once with the same
// error, for every topic, while the filesystem has less than
// diskFullResume bytes free — looked at again at most once a second, by
// the appends that keep arriving — and accepted again as soon as it has.
// What was acknowledged before is untouched: a write that failed was cut
// back to the last batch boundary, and offsets resume where they were.
//
// fsync failures stay sticky (see StorageError): after one, the kernel may
// have dropped the pages, so the bytes cannot be proven written.

// diskFullResume is the free space at which appends resume after a full
// disk: room for a few cycles' batches and the files a roll writes.
const diskFullResume = 4 << 20

// diskFullRecheck is how often a refused append looks at the free space.
const diskFullRecheck = time.Second

// noteDiskFull starts (or continues) a full-disk spell after a write to p
// found no room.
func (l *Log) noteDiskFull(p *Partition, err error) {
	l.stats.diskFullWrites.Add(1)
	l.diskFullChecked.Store(l.opts.clock.Monotonic().Nanoseconds())
	if l.diskFull.Swap(true) {
		return
	}
	l.stats.diskFullSpells.Add(1)
	l.opts.logger.Error("commitlog: the disk is full; appends are refused until space returns (nothing stored is lost)",
		"topic", p.topic.name, "partition", p.id, "dir", l.dir, "err", err)
	l.kickRetention() // overwrite_oldest topics may make room under the free-disk floor
}

// diskStillFull reports whether a full-disk spell goes on, ending it when
// the filesystem has room again (checked at most once a second).
func (l *Log) diskStillFull() bool {
	if !l.diskFull.Load() {
		return false
	}
	now := l.opts.clock.Monotonic().Nanoseconds()
	last := l.diskFullChecked.Load()
	if now-last < int64(diskFullRecheck) || !l.diskFullChecked.CompareAndSwap(last, now) {
		return true
	}
	du, err := l.opts.fs.DiskUsage(l.dir)
	if err != nil || du.Free < diskFullResume {
		return true
	}
	if l.diskFull.Swap(false) {
		l.opts.logger.Info("commitlog: the disk has room again; appends resume", "dir", l.dir, "free_bytes", du.Free)
	}
	return false
}

// DiskFull reports whether appends are being refused because the disk is
// full (a write found no room, and not enough has been freed since).
func (l *Log) DiskFull() bool { return l.diskStillFull() }
