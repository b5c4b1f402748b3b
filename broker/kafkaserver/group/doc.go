// Package group is the classic (pre-KIP-848) Kafka consumer-group
// coordinator behind Ferry's Kafka listener: JoinGroup, SyncGroup,
// Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, DescribeGroups,
// ListGroups and DeleteGroups. Each method takes a decoded kmsg request
// and returns the response of the same version. Committed offsets are
// kept in package state, so they survive restarts; group membership is
// not persisted (after a restart every group is Empty and its members
// rejoin, as after a coordinator move in Kafka).
//
// # States
//
// A group goes through Kafka's states (ClassicGroupState):
//
//	               join                      every member rejoined, or
//	+-------+  ----------->  +--------------------+  rebalance timeout   +---------------------+
//	| Empty |                | PreparingRebalance | -------------------> | CompletingRebalance |
//	+-------+  <-----------  +--------------------+  generation+1        +---------------------+
//	    |     nobody rejoined      ^        ^                               |             |
//	    |                          |        |  join, leave, session or      |             | leader's
//	    |                          |        +------- sync timeout ----------+             | SyncGroup
//	    |                          |                                                      v
//	    |                          |  join (leader, new member or new protocols),    +--------+
//	    |                          +------ leave, session timeout ------------------ | Stable |
//	    v                                                                            +--------+
//	  Dead: DeleteGroups, or retention found it Empty with no offsets left
//
// The rules, as in Kafka:
//
//   - A member that joins with no member id at JoinGroup v4+ (and no
//     instance id) only gets a member id and MEMBER_ID_REQUIRED; it is
//     pending until it joins with that id, or its session timeout passes.
//   - PreparingRebalance completes when every member has rejoined (for a
//     group that was Empty, not before InitialRebalanceDelay) or when the
//     rebalance timeout (the largest of the members') passes; members that
//     did not rejoin are dropped. The first member to join leads, and the
//     leader stays while present. The protocol is voted among those every
//     member supports; only the leader gets the members' metadata.
//   - CompletingRebalance waits for the leader's SyncGroup; members that
//     send no SyncGroup within the rebalance timeout are dropped.
//   - A member's session timer restarts on every Heartbeat, OffsetCommit
//     and answered JoinGroup or SyncGroup; it is stopped while one of its
//     calls blocks. When it expires the member is removed.
//   - A follower rejoining a Stable group with unchanged protocols keeps
//     the current generation; so does any member rejoining during
//     CompletingRebalance with unchanged protocols.
//   - A static member (instance id, JoinGroup v5+) that joins again with
//     no member id replaces its old incarnation, which is fenced
//     (FENCED_INSTANCE_ID); a Stable group does not rebalance for it
//     unless it is the leader below JoinGroup v9.
//
// # Storage
//
// One key per committed partition, under the "off/" prefix of the state
// store (reserved there for consumer-group offsets). Names are
// length-prefixed, so they may hold any byte, '/' and 0x00 included, and the
// offsets of one group are one key prefix:
//
//	key:  "off/" | len(group) u16 | group | len(topic) u16 | topic | partition u32
//
//	value:
//	0         1                 9                    13                   21
//	+---------+-----------------+--------------------+--------------------+------------------+
//	| version | offset int64    | leader epoch int32 | commit time int64  | metadata         |
//	|   (1)   |                 | (-1: unknown)      | (unix ms)          | (the rest, <=4K) |
//	+---------+-----------------+--------------------+--------------------+------------------+
//
// All integers are big-endian. An OffsetCommit writes all its accepted
// partitions in one state transaction before it is answered; a failed
// write answers UNKNOWN_SERVER_ERROR and changes nothing. A badger
// transaction holds about 3,000 entries, so a single commit of more
// partitions than that fails. Deletions (DeleteGroups, retention) go in
// batches of 1,000 keys. New loads every offset back; its group starts
// Empty, with retention counting from the load.
//
// Offsets retention: once a minute, an Empty group loses the offsets not
// committed within OffsetsRetention since the group became Empty (Kafka's
// rule for classic groups), and an Empty group left with no offsets and no
// pending member is dropped. The time counted is the time this process
// ran (Config.Monotonic), never the wall clock: a Pi that boots without a
// real-time clock and steps its clock a month forward on NTP must not
// expire every offset at once. Offsets loaded at start count from the load.
//
// # Concurrency and lock order
//
// Every group has its own mutex (group.mu) guarding all of its state; the
// Coordinator's mu guards only the name → group map and the closed flag.
//
//	group.mu  →  Coordinator.mu        (Coordinator.mu is a leaf)
//
// A group leaves the map (killLocked) while its own mu is held, after
// being marked Dead; lookups that find a Dead group look again. The only
// store I/O under a lock is an OffsetCommit's write, a DeleteGroups and
// retention's deletes, each holding just that group's mu. No lock is held
// while a call blocks: a blocked JoinGroup or SyncGroup waits on a
// buffered channel of its member, filled under the group's mu when the
// answer is known, and also on its ctx and on Close.
//
// The Coordinator owns one goroutine, run, started by New and stopped and
// waited for by Close. It sleeps until the earliest deadline (session,
// rebalance, sync, initial delay, next retention pass); whoever sets an
// earlier deadline kicks it.
//
// # Limits
//
// MaxGroups groups and MaxGroupSize members plus pending members per group
// (GROUP_MAX_SIZE_REACHED beyond). Group ids are at most 2 KiB, topic
// names 249 bytes, commit metadata 4 KiB (OFFSET_METADATA_TOO_LARGE).
// Protocol metadata and assignments are bounded by the request size.
// Versions that name topics by ID (OffsetCommit and OffsetFetch v10+) are
// not supported: advertise at most v9.
package group
