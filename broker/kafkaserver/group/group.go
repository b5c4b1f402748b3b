package group

import (
	"bytes"
	"cmp"
	"context"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// groupState is a classic group's state, named as in Kafka.
type groupState int8

const (
	stateEmpty groupState = iota
	statePreparingRebalance
	stateCompletingRebalance
	stateStable
	stateDead
)

func (s groupState) String() string {
	switch s {
	case stateEmpty:
		return "Empty"
	case statePreparingRebalance:
		return "PreparingRebalance"
	case stateCompletingRebalance:
		return "CompletingRebalance"
	case stateStable:
		return "Stable"
	case stateDead:
		return "Dead"
	}
	return "Unknown"
}

// reasonLeft is the removal reason of a LeaveGroup (logged at debug level).
const reasonLeft = "left the group"

// protocolTypeConsumer is the protocol type of Kafka consumers, whose
// assignments the coordinator can decode and must never leave empty.
const protocolTypeConsumer = "consumer"

// emptyConsumerAssignment is an encoded ConsumerMemberAssignment with no
// partitions: what a "consumer" member gets when the leader assigned it
// nothing (some clients cannot decode zero bytes).
var emptyConsumerAssignment = new(kmsg.ConsumerMemberAssignment).AppendTo(nil)

// protocol is one (assignor name, metadata) pair of a JoinGroup.
type protocol struct {
	name     string
	metadata []byte
}

// member is one member of a group. Its strings and byte slices are copies,
// never aliases of a request buffer.
type member struct {
	id         string
	instanceID *string // static membership (JoinGroup v5+)
	clientID   string
	clientHost string
	// seq orders members by first join; the lowest is the leader.
	seq              uint64
	sessionTimeout   time.Duration
	rebalanceTimeout time.Duration
	protocols        []protocol // in the member's order of preference
	assignment       []byte     // from the leader's SyncGroup

	// joining is set while the member has (re)joined the current
	// PreparingRebalance; the rebalance's result is sent on it (buffered).
	joining chan joinResult
	// syncing is set while a SyncGroup waits for the leader's assignment.
	syncing chan syncResult
	// synced: the member sent SyncGroup in the current CompletingRebalance.
	synced bool
	// deadline is when the session expires. Zero while a JoinGroup or
	// SyncGroup call is blocked: a blocked member is alive, as in Kafka.
	deadline time.Time
}

// touchLocked restarts m's session (heartbeat, commit, answered call)
// unless one of its calls is blocked.
func (g *group) touchLocked(m *member, now time.Time) {
	if !m.deadline.IsZero() {
		g.setDeadlineLocked(m, now)
	}
}

func (g *group) setDeadlineLocked(m *member, now time.Time) {
	m.deadline = now.Add(m.sessionTimeout)
	g.c.schedule(m.deadline)
}

func (m *member) sameProtocols(ps []protocol) bool {
	return slices.EqualFunc(m.protocols, ps, func(a, b protocol) bool {
		return a.name == b.name && bytes.Equal(a.metadata, b.metadata)
	})
}

func (m *member) metadataFor(name string) []byte {
	for _, p := range m.protocols {
		if p.name == name {
			return p.metadata
		}
	}
	return nil
}

// joinResult is what a JoinGroup answers; JoinGroup puts it in the
// response of the request's version.
type joinResult struct {
	err            int16
	generation     int32
	protocolType   string
	protocol       string
	leader         string
	memberID       string
	skipAssignment bool
	members        []kmsg.JoinGroupResponseMember // the leader's only
}

func joinError(e *kerr.Error, memberID string) joinResult {
	return joinResult{err: e.Code, generation: -1, memberID: memberID}
}

// syncResult is what a SyncGroup answers.
type syncResult struct {
	err          int16
	assignment   []byte
	protocolType string
	protocol     string
}

// group is one consumer group.
type group struct {
	name string
	c    *Coordinator

	mu sync.Mutex
	// Everything below is guarded by mu.

	state        groupState
	generation   int32
	protocolType string // kept while Empty (DescribeGroups); the next first member resets it
	protocol     string // chosen by vote at each rebalance; "" while Empty
	leader       string
	members      map[string]*member
	// pending holds v4+ member ids handed out with MEMBER_ID_REQUIRED and
	// not yet used, with their expiry.
	pending map[string]time.Time
	static  map[string]string // instance id -> member id
	nextSeq uint64
	// emptySince is when the group last became Empty (or was created or
	// loaded); offsets retention counts from it.
	emptySince     time.Time
	emptySinceMono time.Duration // the same, on the coordinator's monotonic clock (retention)
	// rebalanceDeadline ends PreparingRebalance: members that have not
	// rejoined by then are dropped. joinDelayUntil is the initial
	// rebalance delay of a group that was Empty.
	rebalanceDeadline time.Time
	joinDelayUntil    time.Time
	// syncDeadline ends CompletingRebalance: members that have not sent
	// SyncGroup by then are dropped and the group rebalances again.
	syncDeadline time.Time
	offsets      map[TopicPartition]Committed
}

func newGroup(c *Coordinator, name string, now time.Time) *group {
	return &group{
		name:           name,
		c:              c,
		members:        make(map[string]*member),
		pending:        make(map[string]time.Time),
		static:         make(map[string]string),
		emptySince:     now,
		emptySinceMono: c.mono(),
		offsets:        make(map[TopicPartition]Committed),
	}
}

func (g *group) logger() *slog.Logger { return g.c.log.With("group", logName(g.name)) }

// membersLocked returns the members in join order (leader candidates first).
func (g *group) membersLocked() []*member {
	ms := make([]*member, 0, len(g.members))
	for _, m := range g.members {
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b *member) int { return cmp.Compare(a.seq, b.seq) })
	return ms
}

// checkInstanceLocked validates a static member's (instance id, member id)
// pair: 0, UNKNOWN_MEMBER_ID or FENCED_INSTANCE_ID.
func (g *group) checkInstanceLocked(instanceID *string, memberID string) int16 {
	if instanceID == nil {
		return 0
	}
	known, ok := g.static[*instanceID]
	switch {
	case !ok:
		return kerr.UnknownMemberID.Code
	case known != memberID:
		return kerr.FencedInstanceID.Code
	}
	return 0
}

// supportsLocked reports whether ps shares a protocol with every member
// other than except: the condition for joining (or rejoining with new
// protocols). It keeps the vote's candidate set non-empty.
func (g *group) supportsLocked(ps []protocol, except *member) bool {
	n := 0
	counts := make(map[string]int)
	for _, m := range g.members {
		if m == except {
			continue
		}
		n++
		for i, p := range m.protocols {
			if !slices.ContainsFunc(m.protocols[:i], func(q protocol) bool { return q.name == p.name }) {
				counts[p.name]++
			}
		}
	}
	if n == 0 {
		return true
	}
	for _, p := range ps {
		if counts[p.name] == n {
			return true
		}
	}
	return false
}

// addMemberLocked makes m a member (it must not be one); the first member
// of an empty group sets the group's protocol type.
func (g *group) addMemberLocked(m *member, protocolType string) {
	if len(g.members) == 0 {
		g.protocolType = protocolType
	}
	g.nextSeq++
	m.seq = g.nextSeq
	g.members[m.id] = m
	if m.instanceID != nil {
		g.static[*m.instanceID] = m.id
	}
	if g.leader == "" {
		g.leader = m.id
	}
}

// removeMemberLocked drops m, answering its blocked calls with code. It
// does not start a rebalance: callers follow with membershipChangedLocked.
func (g *group) removeMemberLocked(m *member, code int16, reason string) {
	delete(g.members, m.id)
	if m.instanceID != nil && g.static[*m.instanceID] == m.id {
		delete(g.static, *m.instanceID)
	}
	if m.joining != nil {
		m.joining <- joinResult{err: code, generation: -1, memberID: m.id}
		m.joining = nil
	}
	if m.syncing != nil {
		m.syncing <- syncResult{err: code}
		m.syncing = nil
	}
	if g.leader == m.id {
		g.leader = ""
		if ms := g.membersLocked(); len(ms) > 0 {
			g.leader = ms[0].id
		}
	}
	lvl := slog.LevelInfo // timeouts and fencing are worth an operator's eye
	if reason == reasonLeft {
		lvl = slog.LevelDebug
	}
	g.logger().Log(context.Background(), lvl, "group: member removed", "member", m.id, "reason", reason, "generation", g.generation)
}

// waitJoinLocked registers a blocked JoinGroup of m. A JoinGroup of m
// already blocked (a retry on another connection) gets
// REBALANCE_IN_PROGRESS.
func (g *group) waitJoinLocked(m *member) chan joinResult {
	if m.joining != nil {
		m.joining <- joinError(kerr.RebalanceInProgress, m.id)
	}
	m.joining = make(chan joinResult, 1)
	m.deadline = time.Time{}
	return m.joining
}

// waitSyncLocked registers a blocked SyncGroup of m, like waitJoinLocked.
func (g *group) waitSyncLocked(m *member) chan syncResult {
	if m.syncing != nil {
		m.syncing <- syncResult{err: kerr.RebalanceInProgress.Code}
	}
	m.syncing = make(chan syncResult, 1)
	m.deadline = time.Time{}
	return m.syncing
}

func (g *group) maxRebalanceTimeoutLocked() time.Duration {
	var d time.Duration
	for _, m := range g.members {
		d = max(d, m.rebalanceTimeout)
	}
	return d
}

// membershipChangedLocked reacts to a member removed or added: a Stable
// or CompletingRebalance group starts rebalancing, and a rebalance that
// now waits for nobody completes.
func (g *group) membershipChangedLocked(now time.Time, reason string) {
	if g.state == stateStable || g.state == stateCompletingRebalance || (g.state == stateEmpty && len(g.members) > 0) {
		g.prepareRebalanceLocked(now, reason)
	}
	g.maybeCompleteJoinLocked(now)
}

// prepareRebalanceLocked moves the group to PreparingRebalance. Blocked
// SyncGroups (CompletingRebalance) get REBALANCE_IN_PROGRESS.
func (g *group) prepareRebalanceLocked(now time.Time, reason string) {
	if g.state == stateCompletingRebalance {
		for _, m := range g.members {
			m.assignment = nil
			if m.syncing != nil {
				m.syncing <- syncResult{err: kerr.RebalanceInProgress.Code}
				m.syncing = nil
				g.setDeadlineLocked(m, now)
			}
		}
	}
	wasEmpty := g.state == stateEmpty
	g.state = statePreparingRebalance
	g.syncDeadline = time.Time{}
	g.rebalanceDeadline = now.Add(g.maxRebalanceTimeoutLocked())
	g.c.schedule(g.rebalanceDeadline)
	g.joinDelayUntil = time.Time{}
	if d := g.c.cfg.InitialRebalanceDelay; wasEmpty && d > 0 {
		g.joinDelayUntil = earliest(now.Add(d), g.rebalanceDeadline)
		g.c.schedule(g.joinDelayUntil)
	}
	g.logger().Debug("group: preparing rebalance", "reason", reason, "generation", g.generation)
}

// extendJoinDelayLocked pushes the initial rebalance delay back when a new
// member arrives within it (Kafka's InitialDelayedJoin).
func (g *group) extendJoinDelayLocked(now time.Time) {
	if d := g.c.cfg.InitialRebalanceDelay; now.Before(g.joinDelayUntil) {
		g.joinDelayUntil = earliest(now.Add(d), g.rebalanceDeadline)
		g.c.schedule(g.joinDelayUntil)
	}
}

// maybeCompleteJoinLocked completes PreparingRebalance once every member
// has rejoined (and the initial delay is over), or at its deadline.
func (g *group) maybeCompleteJoinLocked(now time.Time) {
	if g.state != statePreparingRebalance {
		return
	}
	if now.Before(g.rebalanceDeadline) {
		if now.Before(g.joinDelayUntil) {
			return
		}
		for _, m := range g.members {
			if m.joining == nil {
				return
			}
		}
	}
	g.completeJoinLocked(now)
}

// completeJoinLocked ends PreparingRebalance: members that did not rejoin
// are dropped, the generation goes up, and the group is Empty or, with a
// leader and a protocol chosen, CompletingRebalance; every JoinGroup gets
// its answer.
func (g *group) completeJoinLocked(now time.Time) {
	for _, m := range g.members {
		if m.joining == nil {
			g.removeMemberLocked(m, kerr.UnknownMemberID.Code, "did not rejoin within the rebalance timeout")
		}
	}
	if g.generation == math.MaxInt32 {
		g.generation = 0
	}
	g.generation++
	g.rebalanceDeadline, g.joinDelayUntil = time.Time{}, time.Time{}
	if len(g.members) == 0 {
		g.state = stateEmpty
		g.emptySince, g.emptySinceMono = now, g.c.mono()
		g.protocol = ""
		g.leader = ""
		g.logger().Info("group: empty", "generation", g.generation)
		return
	}
	g.protocol = g.selectProtocolLocked()
	g.state = stateCompletingRebalance
	g.syncDeadline = now.Add(g.maxRebalanceTimeoutLocked())
	g.c.schedule(g.syncDeadline)
	for _, m := range g.members {
		m.synced = false
		m.assignment = nil
		m.joining <- g.joinResultLocked(m)
		m.joining = nil
		g.setDeadlineLocked(m, now)
	}
	g.logger().Info("group: rebalanced", "generation", g.generation, "members", len(g.members),
		"leader", g.leader, "protocol", g.protocol)
}

// selectProtocolLocked runs Kafka's vote: among the protocols every member
// supports, each member votes for the one it prefers most; most votes
// wins, ties going to the leader's preference.
func (g *group) selectProtocolLocked() string {
	ms := g.membersLocked()
	support := make(map[string]int)
	for _, m := range ms {
		seen := make(map[string]bool, len(m.protocols))
		for _, p := range m.protocols {
			if !seen[p.name] {
				seen[p.name] = true
				support[p.name]++
			}
		}
	}
	votes := make(map[string]int)
	for _, m := range ms {
		for _, p := range m.protocols {
			if support[p.name] == len(ms) {
				votes[p.name]++
				break
			}
		}
	}
	leader := g.members[g.leader]
	if leader == nil {
		leader = ms[0]
	}
	best, bestVotes := "", 0
	for _, p := range leader.protocols {
		if v := votes[p.name]; v > bestVotes {
			best, bestVotes = p.name, v
		}
	}
	if best == "" {
		// supportsLocked admits no member that would make this happen.
		best = leader.protocols[0].name
		g.logger().Error("group: no protocol common to all members; using the leader's first", "protocol", best)
	}
	return best
}

// joinResultLocked is the successful JoinGroup answer for m at the
// current generation; the leader also gets every member's metadata.
func (g *group) joinResultLocked(m *member) joinResult {
	r := joinResult{
		generation:   g.generation,
		protocolType: g.protocolType,
		protocol:     g.protocol,
		leader:       g.leader,
		memberID:     m.id,
	}
	if m.id == g.leader {
		ms := g.membersLocked()
		r.members = make([]kmsg.JoinGroupResponseMember, 0, len(ms))
		for _, o := range ms {
			rm := kmsg.NewJoinGroupResponseMember()
			rm.MemberID = o.id
			rm.InstanceID = o.instanceID
			rm.ProtocolMetadata = o.metadataFor(g.protocol)
			r.members = append(r.members, rm)
		}
	}
	return r
}

// assignmentLocked is m's assignment as SyncGroup answers it.
func (g *group) assignmentLocked(m *member) []byte {
	if len(m.assignment) == 0 && g.protocolType == protocolTypeConsumer {
		return emptyConsumerAssignment
	}
	return m.assignment
}

// tickLocked handles every deadline of the group that has passed and
// returns the next one (zero: none).
func (g *group) tickLocked(now time.Time) time.Time {
	for id, at := range g.pending {
		if !now.Before(at) {
			delete(g.pending, id)
		}
	}
	expired := false
	for _, m := range g.members {
		if !m.deadline.IsZero() && !now.Before(m.deadline) {
			g.removeMemberLocked(m, kerr.UnknownMemberID.Code, "session timeout")
			expired = true
		}
	}
	if expired {
		g.membershipChangedLocked(now, "session timeout")
	}
	if g.state == stateCompletingRebalance && !now.Before(g.syncDeadline) {
		for _, m := range g.members {
			if !m.synced {
				g.removeMemberLocked(m, kerr.UnknownMemberID.Code, "no SyncGroup within the rebalance timeout")
			}
		}
		g.membershipChangedLocked(now, "sync timeout")
	}
	g.maybeCompleteJoinLocked(now)

	var next time.Time
	for _, at := range g.pending {
		next = earliest(next, at)
	}
	for _, m := range g.members {
		next = earliest(next, m.deadline)
	}
	switch g.state {
	case statePreparingRebalance:
		next = earliest(next, g.rebalanceDeadline)
		if now.Before(g.joinDelayUntil) {
			next = earliest(next, g.joinDelayUntil)
		}
	case stateCompletingRebalance:
		next = earliest(next, g.syncDeadline)
	}
	return next
}

// killLocked marks the group Dead and drops it from the coordinator; the
// caller has checked it is Empty and deleted its offsets.
func (g *group) killLocked() {
	g.state = stateDead
	g.pending = nil
	g.c.mu.Lock()
	if g.c.mu.groups[g.name] == g {
		delete(g.c.mu.groups, g.name)
	}
	g.c.mu.Unlock()
}
