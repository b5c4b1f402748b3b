package group

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/ferry-iot/ferry/broker/state"
)

// Committed offsets in the state store (the layout is drawn in the
// package doc).
const (
	offsetPrefix       = "off/"
	offsetValueVersion = 1
	offsetValueHeader  = 1 + 8 + 4 + 8 // version, offset, leader epoch, commit time
)

var errBadOffsetRecord = errors.New("group: malformed offset record")

// groupKeyPrefix is the prefix of every offset key of group.
func groupKeyPrefix(group string) []byte {
	k := make([]byte, 0, len(offsetPrefix)+2+len(group))
	k = append(k, offsetPrefix...)
	k = binary.BigEndian.AppendUint16(k, uint16(len(group)))
	return append(k, group...)
}

// offsetKey is the store key of group's committed offset for tp.
func offsetKey(group string, tp TopicPartition) []byte {
	k := groupKeyPrefix(group)
	k = binary.BigEndian.AppendUint16(k, uint16(len(tp.Topic)))
	k = append(k, tp.Topic...)
	return binary.BigEndian.AppendUint32(k, uint32(tp.Partition))
}

// parseOffsetKey is offsetKey's inverse.
func parseOffsetKey(k []byte) (string, TopicPartition, error) {
	rest, ok := cutPrefix(k, offsetPrefix)
	if !ok {
		return "", TopicPartition{}, fmt.Errorf("%w: key without prefix %q", errBadOffsetRecord, offsetPrefix)
	}
	group, rest, ok := cutString(rest)
	if !ok {
		return "", TopicPartition{}, fmt.Errorf("%w: key: bad group name", errBadOffsetRecord)
	}
	topic, rest, ok := cutString(rest)
	if !ok || len(rest) != 4 {
		return "", TopicPartition{}, fmt.Errorf("%w: key of group %q: bad topic or partition", errBadOffsetRecord, group)
	}
	return group, TopicPartition{Topic: topic, Partition: int32(binary.BigEndian.Uint32(rest))}, nil
}

func cutPrefix(b []byte, prefix string) ([]byte, bool) {
	if len(b) < len(prefix) || string(b[:len(prefix)]) != prefix {
		return nil, false
	}
	return b[len(prefix):], true
}

// cutString reads a uint16-length-prefixed string.
func cutString(b []byte) (string, []byte, bool) {
	if len(b) < 2 {
		return "", nil, false
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n {
		return "", nil, false
	}
	return string(b[2 : 2+n]), b[2+n:], true
}

// encodeCommitted is the store value of a committed offset.
func encodeCommitted(c Committed) []byte {
	v := make([]byte, 0, offsetValueHeader+len(c.Metadata))
	v = append(v, offsetValueVersion)
	v = binary.BigEndian.AppendUint64(v, uint64(c.Offset))
	v = binary.BigEndian.AppendUint32(v, uint32(c.LeaderEpoch))
	v = binary.BigEndian.AppendUint64(v, uint64(c.CommitTime.UnixMilli()))
	return append(v, c.Metadata...)
}

// decodeCommitted is encodeCommitted's inverse.
func decodeCommitted(v []byte) (Committed, error) {
	if len(v) < offsetValueHeader {
		return Committed{}, fmt.Errorf("%w: value of %d bytes", errBadOffsetRecord, len(v))
	}
	if v[0] != offsetValueVersion {
		return Committed{}, fmt.Errorf("%w: value version %d", errBadOffsetRecord, v[0])
	}
	return Committed{
		Offset:      int64(binary.BigEndian.Uint64(v[1:])),
		LeaderEpoch: int32(binary.BigEndian.Uint32(v[9:])),
		CommitTime:  time.UnixMilli(int64(binary.BigEndian.Uint64(v[13:]))),
		Metadata:    string(v[offsetValueHeader:]),
	}, nil
}

// load reads every committed offset into memory; their groups start
// Empty, their retention counting from now. Malformed records are logged
// and skipped. New calls it before run starts and before c is shared, so
// it needs no lock.
func (c *Coordinator) load() error {
	now, seen := c.now(), c.mono()
	skipped := 0
	err := c.store.Scan([]byte(offsetPrefix), func(k, v []byte) error {
		name, tp, err := parseOffsetKey(k)
		if err == nil {
			var off Committed
			if off, err = decodeCommitted(v); err == nil {
				g := c.mu.groups[name]
				if g == nil {
					g = newGroup(c, name, now)
					c.mu.groups[name] = g
				}
				off.seen = seen // retention counts from the load
				g.offsets[tp] = off
				return nil
			}
		}
		skipped++
		c.log.Warn("group: skipping a stored offset", "key", fmt.Sprintf("%q", k), "err", err)
		return nil
	})
	if err != nil {
		return fmt.Errorf("group: load offsets: %w", err)
	}
	if skipped > 0 {
		c.log.Warn("group: skipped malformed stored offsets", "count", skipped)
	}
	return nil
}

// deleteOffsetsLocked deletes committed offsets from the store and then
// from memory, deleteBatch keys per transaction (a group's offsets may not
// fit in one). On an error the offsets of the failed batch and later ones
// stay.
func (g *group) deleteOffsetsLocked(tps []TopicPartition) error {
	for len(tps) > 0 {
		batch := tps[:min(len(tps), deleteBatch)]
		tps = tps[len(batch):]
		err := g.c.store.Update(func(tx *state.Txn) error {
			for _, tp := range batch {
				if err := tx.Delete(offsetKey(g.name, tp)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("group: delete offsets of %q: %w", logName(g.name), err)
		}
		for _, tp := range batch {
			delete(g.offsets, tp)
		}
	}
	return nil
}

// housekeep runs offsets retention: an Empty group loses the offsets
// that have not been committed within OffsetsRetention since it became
// Empty, and an Empty group with no offsets and no pending member is
// dropped. Both times are on the monotonic clock (time this process ran:
// offsets loaded at start count from the load), so a step of the wall
// clock expires nothing.
func (c *Coordinator) housekeep() {
	now := c.mono()
	for _, g := range c.snapshotGroups() {
		g.mu.Lock()
		if g.state == stateEmpty {
			g.expireLocked(now)
		}
		g.mu.Unlock()
	}
}

func (g *group) expireLocked(now time.Duration) {
	var expired []TopicPartition
	for tp, off := range g.offsets {
		if now-max(off.seen, g.emptySinceMono) >= g.c.cfg.OffsetsRetention {
			expired = append(expired, tp)
		}
	}
	if len(expired) > 0 {
		if err := g.deleteOffsetsLocked(expired); err != nil {
			g.logger().Warn("group: offsets retention failed", "err", err)
			return
		}
		g.logger().Info("group: expired committed offsets", "partitions", len(expired))
	}
	if len(g.offsets) == 0 && len(g.pending) == 0 && len(g.members) == 0 {
		g.killLocked()
	}
}
