package group

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/broker/testkit"
)

// A single member at franz-go's versions: MEMBER_ID_REQUIRED, join, sync,
// heartbeat, commit, fetch, leave.
func TestSingleMemberCycle(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    versions
	}{
		{"modern", modern},
		{"librdkafka", librdkafka},
		{"sarama", versions{join: 7, sync: 5, heartbeat: 4, leave: 4, commit: 8, fetch: 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newTestCoordinator(t, Config{})
			ctx := context.Background()
			m := newMember(t, c, "g", "client-a", tc.v)

			resp := m.joinOnce(ctx)
			wantCode(t, "first join", resp.ErrorCode, kerr.MemberIDRequired)
			if !strings.HasPrefix(resp.MemberID, "client-a-") || len(resp.MemberID) != len("client-a-")+36 {
				t.Fatalf("member id %q: want client-a-<uuid>", resp.MemberID)
			}
			resp = m.joinOnce(ctx)
			wantCode(t, "second join", resp.ErrorCode, nil)
			if resp.Generation != 1 || resp.LeaderID != m.id || *resp.Protocol != "range" {
				t.Fatalf("join: generation %d leader %q protocol %q", resp.Generation, resp.LeaderID, *resp.Protocol)
			}
			if tc.v.join >= 7 && (resp.ProtocolType == nil || *resp.ProtocolType != "consumer") {
				t.Fatalf("join v%d: protocol type %v", tc.v.join, resp.ProtocolType)
			}
			if len(resp.Members) != 1 || string(resp.Members[0].ProtocolMetadata) != "client-a/range" {
				t.Fatalf("leader's members: %+v", resp.Members)
			}
			if got := groupStateOf(c, "g"); got != "CompletingRebalance" {
				t.Fatalf("state after join: %s", got)
			}

			sresp := m.sync(ctx)
			wantCode(t, "sync", sresp.ErrorCode, nil)
			if got := decodeAssignment(sresp.MemberAssignment); !slices.Equal(got["t"], []int32{0}) {
				t.Fatalf("assignment: %v", got)
			}
			if tc.v.sync >= 5 && (sresp.Protocol == nil || *sresp.Protocol != "range") {
				t.Fatalf("sync v5 protocol: %v", sresp.Protocol)
			}
			wantCode(t, "heartbeat", m.heartbeat(), nil)

			codes := m.commit(map[int32]int64{0: 42, 1: 7})
			if codes[0] != 0 || codes[1] != 0 {
				t.Fatalf("commit: %v", codes)
			}
			if got := fetch(t, c, tc.v.fetch, "g", 3); got[0] != 42 || got[1] != 7 || got[2] != -1 {
				t.Fatalf("fetch: %v", got)
			}
			gi, _ := c.Group("g")
			if gi.State != "Stable" || len(gi.Members) != 1 || gi.Members[0].ClientID != "client-a" ||
				!slices.Equal(gi.Members[0].Assigned["t"], []int32{0}) {
				t.Fatalf("group info: %+v", gi)
			}

			wantCode(t, "leave", m.leave(), nil)
			gi, _ = c.Group("g")
			if gi.State != "Empty" || gi.Generation != 2 || len(gi.Members) != 0 {
				t.Fatalf("after leave: %+v", gi)
			}
			wantCode(t, "heartbeat after leave", m.heartbeat(), kerr.UnknownMemberID)
			// The offsets stay.
			if got := fetch(t, c, tc.v.fetch, "g", 1); got[0] != 42 {
				t.Fatalf("fetch after leave: %v", got)
			}
		})
	}
}

// kafka-go joins at v1/v2 with no MEMBER_ID_REQUIRED round and uses old
// versions of everything else.
func TestKafkaGoVersions(t *testing.T) {
	for _, joinV := range []int16{0, 1, 2, 3} {
		t.Run(fmt.Sprintf("join v%d", joinV), func(t *testing.T) {
			c, _ := newTestCoordinator(t, Config{})
			ctx := context.Background()
			v := kafkaGo
			v.join = joinV
			a := newMember(t, c, "kg", "kafka-go", v, "range", "roundrobin")
			resp := a.joinOnce(ctx)
			wantCode(t, "join", resp.ErrorCode, nil)
			if resp.Generation != 1 || resp.LeaderID != a.id || !strings.HasPrefix(a.id, "kafka-go-") {
				t.Fatalf("join: %+v", resp)
			}
			wantCode(t, "sync", a.sync(ctx).ErrorCode, nil)
			wantCode(t, "heartbeat", a.heartbeat(), nil)
			if codes := a.commit(map[int32]int64{0: 5}); codes[0] != 0 {
				t.Fatalf("commit: %v", codes)
			}
			if got := fetch(t, c, v.fetch, "kg", 1); got[0] != 5 {
				t.Fatalf("fetch: %v", got)
			}
			// A second member: the first learns of it through its heartbeat.
			b := newMember(t, c, "kg", "kafka-go", v, "range", "roundrobin")
			bRes := async(func() *kmsg.JoinGroupResponse { return b.joinOnce(ctx) })
			testkit.Eventually(t, 3*time.Second, func() bool { return groupStateOf(c, "kg") == "PreparingRebalance" }, "rebalance")
			wantCode(t, "heartbeat during rebalance", a.heartbeat(), kerr.RebalanceInProgress)
			wantCode(t, "rejoin", a.joinOnce(ctx).ErrorCode, nil)
			wantCode(t, "b join", await(t, "b join", bRes).ErrorCode, nil)
			if a.gen != 2 || b.gen != 2 || b.leader != a.id || len(a.members) != 2 {
				t.Fatalf("generations %d %d, leader %q (a %q), leader sees %d", a.gen, b.gen, b.leader, a.id, len(a.members))
			}
			bSync := async(func() *kmsg.SyncGroupResponse { return b.sync(ctx) })
			wantCode(t, "a sync", a.sync(ctx).ErrorCode, nil)
			bs := await(t, "b sync", bSync)
			wantCode(t, "b sync", bs.ErrorCode, nil)
			if got := decodeAssignment(bs.MemberAssignment); !slices.Equal(got["t"], []int32{1}) {
				t.Fatalf("b assignment: %v", got)
			}
			wantCode(t, "b leave", b.leave(), nil)
			wantCode(t, "a leave", a.leave(), nil)
			if got := groupStateOf(c, "kg"); got != "Empty" {
				t.Fatalf("state: %s", got)
			}
		})
	}
}

// Three members joining at once land in one generation.
func TestConcurrentJoin(t *testing.T) {
	c, _ := newTestCoordinator(t, Config{InitialRebalanceDelay: 200 * time.Millisecond})
	ctx := context.Background()
	ms := make([]*tmember, 3)
	got := make([]map[string][]int32, 3)
	var wg sync.WaitGroup
	for i := range ms {
		ms[i] = newMember(t, c, "cg", fmt.Sprintf("c%d", i), modern)
		wg.Go(func() {
			a, err := ms[i].run(ctx)
			if err != nil {
				t.Errorf("member %d: %v", i, err)
			}
			got[i] = a
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	leaders := 0
	seen := make(map[int32]bool)
	for i, m := range ms {
		if m.gen != 1 {
			t.Errorf("member %d: generation %d, want 1", i, m.gen)
		}
		if m.leader != ms[0].leader {
			t.Errorf("member %d: leader %q, member 0 says %q", i, m.leader, ms[0].leader)
		}
		if m.id == m.leader {
			leaders++
			if len(m.members) != 3 {
				t.Errorf("leader sees %d members", len(m.members))
			}
		} else if len(m.members) != 0 {
			t.Errorf("follower %d got the member list", i)
		}
		if len(got[i]["t"]) != 1 || seen[got[i]["t"][0]] {
			t.Errorf("member %d: assignment %v", i, got[i])
		} else {
			seen[got[i]["t"][0]] = true
		}
	}
	if leaders != 1 {
		t.Errorf("%d leaders", leaders)
	}
	gi, _ := c.Group("cg")
	if gi.State != "Stable" || gi.Generation != 1 || len(gi.Members) != 3 {
		t.Errorf("group: %+v", gi)
	}
}

// stableGroup brings members into one Stable generation: the first joins
// alone, each next one joins while the earlier ones rejoin after their
// heartbeat says REBALANCE_IN_PROGRESS.
func stableGroup(t *testing.T, ctx context.Context, ms ...*tmember) {
	t.Helper()
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Go(func() {
			for {
				if _, err := m.run(ctx); err != nil {
					t.Errorf("%s: %v", m.clientID, err)
					return
				}
				// Heartbeat until the group is stable with everyone.
				for {
					switch code := m.heartbeat(); code {
					case 0:
						if gi, _ := m.c.Group(m.group); gi.State == "Stable" && len(gi.Members) == len(ms) && gi.Generation == m.gen {
							return
						}
						time.Sleep(2 * time.Millisecond)
						continue
					case kerr.RebalanceInProgress.Code:
					default:
						t.Errorf("%s heartbeat: %v", m.clientID, kerr.ErrorForCode(code))
						return
					}
					break
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

// A member leaving: the others hear REBALANCE_IN_PROGRESS and rejoin at
// the next generation.
func TestLeaveRebalances(t *testing.T) {
	c, _ := newTestCoordinator(t, Config{})
	ctx := context.Background()
	a := newMember(t, c, "lg", "a", modern)
	b := newMember(t, c, "lg", "b", modern)
	d := newMember(t, c, "lg", "d", modern)
	stableGroup(t, ctx, a, b, d)
	gen := a.gen
	wantCode(t, "b leaves", b.leave(), nil)
	wantCode(t, "a heartbeat", a.heartbeat(), kerr.RebalanceInProgress)
	wantCode(t, "d heartbeat", d.heartbeat(), kerr.RebalanceInProgress)
	aRes := async(func() *kmsg.JoinGroupResponse { return a.join(ctx) })
	wantCode(t, "d rejoin", d.join(ctx).ErrorCode, nil)
	wantCode(t, "a rejoin", await(t, "a rejoin", aRes).ErrorCode, nil)
	if a.gen != gen+1 || d.gen != gen+1 {
		t.Fatalf("generations %d %d, want %d", a.gen, d.gen, gen+1)
	}
	if len(a.members)+len(d.members) != 2 {
		t.Fatalf("leader sees %d+%d members, want 2", len(a.members), len(d.members))
	}
}

// The leader leaving: another member leads the next generation.
func TestLeaderLeaves(t *testing.T) {
	c, _ := newTestCoordinator(t, Config{})
	ctx := context.Background()
	a := newMember(t, c, "g", "a", modern)
	b := newMember(t, c, "g", "b", modern)
	stableGroup(t, ctx, a, b)
	leader, follower := a, b
	if b.id == b.leader {
		leader, follower = b, a
	}
	wantCode(t, "leader leaves", leader.leave(), nil)
	if gi, _ := c.Group("g"); gi.Leader != follower.id {
		t.Fatalf("leader %q, want %q", gi.Leader, follower.id)
	}
	if _, err := follower.run(ctx); err != nil {
		t.Fatal(err)
	}
	if follower.leader != follower.id || len(follower.members) != 1 {
		t.Fatalf("new leader %q (want %q), members %d", follower.leader, follower.id, len(follower.members))
	}
}

// A member that stops heartbeating is removed after its session timeout.
func TestSessionTimeout(t *testing.T) {
	c, _ := newTestCoordinator(t, Config{})
	ctx := context.Background()
	a := newMember(t, c, "st", "a", modern)
	a.session = 100 * time.Millisecond
	b := newMember(t, c, "st", "b", modern)
	stableGroup(t, ctx, a, b)
	gen := b.gen
	// b heartbeats, a does not.
	testkit.Eventually(t, 3*time.Second, func() bool {
		code := b.heartbeat()
		if code == kerr.RebalanceInProgress.Code {
			return true
		}
		wantCode(t, "b heartbeat", code, nil)
		return false
	}, "a's session to expire")
	if _, err := b.run(ctx); err != nil {
		t.Fatal(err)
	}
	if b.gen != gen+1 || len(b.members) != 1 || b.leader != b.id {
		t.Fatalf("after expiry: generation %d (want %d), members %d", b.gen, gen+1, len(b.members))
	}
	wantCode(t, "expired member's heartbeat", a.heartbeat(), kerr.UnknownMemberID)

	// The last member expiring leaves the group Empty.
	b.session = 50 * time.Millisecond
	if _, err := b.run(ctx); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 3*time.Second, func() bool { return groupStateOf(c, "st") == "Empty" }, "empty group")
}

// A member id handed out with MEMBER_ID_REQUIRED expires if not used.
func TestPendingMemberExpires(t *testing.T) {
	c, _ := newTestCoordinator(t, Config{})
	ctx := context.Background()
	m := newMember(t, c, "pg", "p", modern)
	m.session = 50 * time.Millisecond
	wantCode(t, "first join", m.joinOnce(ctx).ErrorCode, kerr.MemberIDRequired)
	g, _ := c.lockGroup("pg", false)
	n := len(g.pending)
	g.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d pending members", n)
	}
	testkit.Eventually(t, 3*time.Second, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.pending) == 0
	}, "pending expiry")
	wantCode(t, "join with expired id", m.joinOnce(ctx).ErrorCode, kerr.UnknownMemberID)
	if m.id != "" {
		t.Fatalf("member id not reset: %q", m.id)
	}
	wantCode(t, "fresh join", m.join(ctx).ErrorCode, nil)
}

// A member that does not rejoin within the rebalance timeout is dropped.
func TestRebalanceTimeoutDropsMember(t *testing.T) {
	c, _ := newTestCoordinator(t, Config{})
	ctx := context.Background()
	a := newMember(t, c, "rt", "a", modern)
	b := newMember(t, c, "rt", "b", modern)
	for _, m := range []*tmember{a, b} {
		m.rebalance = 150 * time.Millisecond
	}
	stableGroup(t, ctx, a, b)
	gen := a.gen
	newcomer := newMember(t, c, "rt", "c", modern)
	newcomer.rebalance = 150 * time.Millisecond
	cRes := async(func() *kmsg.JoinGroupResponse { return newcomer.join(ctx) })
	testkit.Eventually(t, 3*time.Second, func() bool { return groupStateOf(c, "rt") == "PreparingRebalance" }, "rebalance")
	// a rejoins, b stays silent (its session is long).
	wantCode(t, "a rejoin", a.join(ctx).ErrorCode, nil)
	wantCode(t, "c join", await(t, "c join", cRes).ErrorCode, nil)
	if a.gen != gen+1 || newcomer.gen != gen+1 {
		t.Fatalf("generations %d %d, want %d", a.gen, newcomer.gen, gen+1)
	}
	gi, _ := c.Group("rt")
	if len(gi.Members) != 2 || slices.ContainsFunc(gi.Members, func(mi MemberInfo) bool { return mi.ID == b.id }) {
		t.Fatalf("members after timeout: %+v", gi.Members)
	}
	wantCode(t, "dropped member's heartbeat", b.heartbeat(), kerr.UnknownMemberID)
}

// The leader never sends SyncGroup: after the rebalance timeout it is
// dropped and the waiting follower is told to rejoin.
func TestSyncTimeoutDropsLeader(t *testing.T) {
	c, _ := newTestCoordinator(t, Config{InitialRebalanceDelay: 50 * time.Millisecond})
	ctx := context.Background()
	a := newMember(t, c, "sg", "a", modern)
	b := newMember(t, c, "sg", "b", modern)
	for _, m := range []*tmember{a, b} {
		m.rebalance = 150 * time.Millisecond
	}
	aRes := async(func() *kmsg.JoinGroupResponse { return a.join(ctx) })
	wantCode(t, "b join", b.join(ctx).ErrorCode, nil)
	wantCode(t, "a join", await(t, "a join", aRes).ErrorCode, nil)
	follower, leader := b, a
	if b.id == b.leader {
		follower, leader = a, b
	}
	resp := follower.sync(ctx) // blocks until the sync timeout
	wantCode(t, "follower sync", resp.ErrorCode, kerr.RebalanceInProgress)
	gi, _ := c.Group("sg")
	if len(gi.Members) != 1 || gi.Members[0].ID != follower.id {
		t.Fatalf("members: %+v", gi.Members)
	}
	wantCode(t, "leader heartbeat", leader.heartbeat(), kerr.UnknownMemberID)
}

// A follower waiting in SyncGroup when the group rebalances again gets
// REBALANCE_IN_PROGRESS.
func TestSyncInterruptedByRebalance(t *testing.T) {
	c, _ := newTestCoordinator(t, Config{InitialRebalanceDelay: 50 * time.Millisecond})
	ctx := context.Background()
	a := newMember(t, c, "si", "a", modern)
	b := newMember(t, c, "si", "b", modern)
	aRes := async(func() *kmsg.JoinGroupResponse { return a.join(ctx) })
	wantCode(t, "b join", b.join(ctx).ErrorCode, nil)
	wantCode(t, "a join", await(t, "a join", aRes).ErrorCode, nil)
	follower := b
	if b.id == b.leader {
		follower = a
	}
	fRes := async(func() *kmsg.SyncGroupResponse { return follower.sync(ctx) })
	time.Sleep(20 * time.Millisecond) // let the follower block
	newcomer := newMember(t, c, "si", "c", modern)
	nRes := async(func() *kmsg.JoinGroupResponse { return newcomer.join(ctx) })
	wantCode(t, "follower sync", await(t, "follower sync", fRes).ErrorCode, kerr.RebalanceInProgress)
	// Everyone rejoins: generation 2 with three members.
	aRes = async(func() *kmsg.JoinGroupResponse { return a.join(ctx) })
	wantCode(t, "b rejoin", b.join(ctx).ErrorCode, nil)
	wantCode(t, "a rejoin", await(t, "a rejoin", aRes).ErrorCode, nil)
	wantCode(t, "c join", await(t, "c join", nRes).ErrorCode, nil)
	if a.gen != 2 || b.gen != 2 || newcomer.gen != 2 {
		t.Fatalf("generations %d %d %d", a.gen, b.gen, newcomer.gen)
	}
}

// A follower rejoining a Stable group with the same protocols keeps the
// generation; the leader's rejoin starts a rebalance.
func TestRejoinStable(t *testing.T) {
	c, _ := newTestCoordinator(t, Config{})
	ctx := context.Background()
	a := newMember(t, c, "rs", "a", modern)
	b := newMember(t, c, "rs", "b", modern)
	stableGroup(t, ctx, a, b)
	leader, follower := a, b
	if b.id == b.leader {
		leader, follower = b, a
	}
	gen := follower.gen
	wantCode(t, "follower rejoin", follower.join(ctx).ErrorCode, nil)
	if follower.gen != gen || groupStateOf(c, "rs") != "Stable" {
		t.Fatalf("follower rejoin: generation %d (was %d), state %s", follower.gen, gen, groupStateOf(c, "rs"))
	}
	wantCode(t, "follower sync", follower.sync(ctx).ErrorCode, nil)
	lRes := async(func() *kmsg.JoinGroupResponse { return leader.join(ctx) })
	testkit.Eventually(t, 3*time.Second, func() bool { return groupStateOf(c, "rs") == "PreparingRebalance" }, "rebalance")
	wantCode(t, "follower heartbeat", follower.heartbeat(), kerr.RebalanceInProgress)
	wantCode(t, "follower rejoin", follower.join(ctx).ErrorCode, nil)
	wantCode(t, "leader rejoin", await(t, "leader rejoin", lRes).ErrorCode, nil)
	if leader.gen != gen+1 || leader.leader != leader.id {
		t.Fatalf("after leader rejoin: generation %d, leader %q", leader.gen, leader.leader)
	}
}

// The protocol vote and INCONSISTENT_GROUP_PROTOCOL.
func TestProtocolVote(t *testing.T) {
	c, _ := newTestCoordinator(t, Config{InitialRebalanceDelay: 100 * time.Millisecond})
	ctx := context.Background()
	// The leader prefers range, the two others roundrobin: 2 votes to 1.
	ms := []*tmember{
		newMember(t, c, "pv", "a", modern, "range", "roundrobin"),
		newMember(t, c, "pv", "b", modern, "roundrobin", "range", "sticky"),
		newMember(t, c, "pv", "c", modern, "sticky", "roundrobin", "range"),
	}
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Go(func() {
			if _, err := m.run(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, m := range ms {
		if m.protocol != "roundrobin" {
			t.Errorf("%s: protocol %q, want roundrobin", m.clientID, m.protocol)
		}
		if m.id == m.leader {
			for _, o := range m.members {
				if !strings.HasSuffix(string(o.ProtocolMetadata), "/roundrobin") {
					t.Errorf("leader got metadata %q for roundrobin", o.ProtocolMetadata)
				}
			}
		}
	}
	// Nothing in common with the group.
	d := newMember(t, c, "pv", "d", modern, "cooperative-sticky")
	wantCode(t, "join with no common protocol", d.join(ctx).ErrorCode, kerr.InconsistentGroupProtocol)
	// sticky is not supported by a.
	e := newMember(t, c, "pv", "e", modern, "sticky")
	wantCode(t, "join with a protocol not every member has", e.join(ctx).ErrorCode, kerr.InconsistentGroupProtocol)
	// Another protocol type.
	f := newMember(t, c, "pv", "f", modern, "range")
	req := f.joinRequest()
	req.ProtocolType = "connect"
	wantCode(t, "join with another protocol type", c.JoinGroup(ctx, "f", "h", req).ErrorCode, kerr.InconsistentGroupProtocol)
}

func TestSelectProtocol(t *testing.T) {
	for _, tc := range []struct {
		name    string
		members [][]string // first is the leader
		want    string
	}{
		{"one member", [][]string{{"range", "roundrobin"}}, "range"},
		{"majority", [][]string{{"range", "roundrobin"}, {"roundrobin", "range"}, {"roundrobin", "range"}}, "roundrobin"},
		{"tie goes to the leader", [][]string{{"roundrobin", "range"}, {"range", "roundrobin"}}, "roundrobin"},
		{"only common candidates vote", [][]string{{"cooperative-sticky", "range"}, {"range"}, {"sticky", "range"}}, "range"},
		{"first candidate in preference", [][]string{{"x", "b", "a"}, {"a", "b"}, {"a", "b"}}, "a"},
		{"duplicates count once", [][]string{{"a", "a", "b"}, {"b"}}, "b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGroup(&Coordinator{}, "g", time.Time{})
			for i, names := range tc.members {
				m := &member{id: fmt.Sprint(i)}
				for _, n := range names {
					m.protocols = append(m.protocols, protocol{name: n})
				}
				if !g.supportsLocked(m.protocols, nil) {
					t.Fatalf("member %d refused", i)
				}
				g.addMemberLocked(m, "consumer")
			}
			if got := g.selectProtocolLocked(); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// Error codes of each API.
func TestErrors(t *testing.T) {
	c, _ := newTestCoordinator(t, Config{MinSessionTimeout: time.Second, MaxSessionTimeout: time.Minute})
	ctx := context.Background()
	a := newMember(t, c, "e", "a", modern)
	b := newMember(t, c, "e", "b", modern)
	stableGroup(t, ctx, a, b)

	join := func(mut func(*kmsg.JoinGroupRequest)) int16 {
		req := newMember(t, c, "e", "x", modern).joinRequest()
		mut(req)
		resp := c.JoinGroup(ctx, "x", "h", req)
		roundTrip(t, resp)
		return resp.ErrorCode
	}
	wantCode(t, "join empty group id", join(func(r *kmsg.JoinGroupRequest) { r.Group = "" }), kerr.InvalidGroupID)
	wantCode(t, "join session too short", join(func(r *kmsg.JoinGroupRequest) { r.SessionTimeoutMillis = 999 }), kerr.InvalidSessionTimeout)
	wantCode(t, "join session too long", join(func(r *kmsg.JoinGroupRequest) { r.SessionTimeoutMillis = 60001 }), kerr.InvalidSessionTimeout)
	wantCode(t, "join no protocols", join(func(r *kmsg.JoinGroupRequest) { r.Protocols = nil }), kerr.InconsistentGroupProtocol)
	wantCode(t, "join no protocol type", join(func(r *kmsg.JoinGroupRequest) { r.ProtocolType = "" }), kerr.InconsistentGroupProtocol)
	wantCode(t, "join unknown member", join(func(r *kmsg.JoinGroupRequest) { r.MemberID = "nobody" }), kerr.UnknownMemberID)
	wantCode(t, "join unknown member, unknown group", join(func(r *kmsg.JoinGroupRequest) { r.MemberID = "x"; r.Group = "nope" }), kerr.UnknownMemberID)
	if _, ok := c.Group("nope"); ok {
		t.Fatal("a join with a member id created a group")
	}

	gen := a.gen
	a.gen = gen + 1
	wantCode(t, "heartbeat wrong generation", a.heartbeat(), kerr.IllegalGeneration)
	wantCode(t, "sync wrong generation", a.sync(ctx).ErrorCode, kerr.IllegalGeneration)
	wantCode(t, "commit wrong generation", a.commit(map[int32]int64{0: 1})[0], kerr.IllegalGeneration)
	a.gen = gen

	ghost := newMember(t, c, "e", "ghost", modern)
	ghost.id, ghost.gen = "ghost-1", gen
	wantCode(t, "heartbeat unknown member", ghost.heartbeat(), kerr.UnknownMemberID)
	wantCode(t, "sync unknown member", ghost.sync(ctx).ErrorCode, kerr.UnknownMemberID)
	wantCode(t, "commit unknown member", ghost.commit(map[int32]int64{0: 1})[0], kerr.UnknownMemberID)
	wantCode(t, "leave unknown member", ghost.leave(), kerr.UnknownMemberID)
	ghost.group = "no-such-group"
	wantCode(t, "heartbeat unknown group", ghost.heartbeat(), kerr.UnknownMemberID)
	wantCode(t, "leave unknown group", ghost.leave(), kerr.UnknownMemberID)

	// Simple commits (generation -1) need an empty group.
	simple := commitRequest(2, "e", -1, "", "t", map[int32]int64{0: 1})
	wantCode(t, "simple commit to a live group", commitCodes(t, c.OffsetCommit(simple))[0], kerr.UnknownMemberID)
	stale := commitRequest(2, "no-group", 3, "m", "t", map[int32]int64{0: 1})
	wantCode(t, "commit from a generation of no group", commitCodes(t, c.OffsetCommit(stale))[0], kerr.IllegalGeneration)

	sync5 := a.syncRequest(nil)
	sync5.Protocol = kmsg.StringPtr("roundrobin")
	wantCode(t, "sync v5 other protocol", c.SyncGroup(ctx, sync5).ErrorCode, kerr.InconsistentGroupProtocol)

	// During PreparingRebalance: sync says rebalance.
	n := newMember(t, c, "e", "n", modern)
	nRes := async(func() *kmsg.JoinGroupResponse { return n.join(ctx) })
	testkit.Eventually(t, 3*time.Second, func() bool { return groupStateOf(c, "e") == "PreparingRebalance" }, "rebalance")
	wantCode(t, "sync during rebalance", a.sync(ctx).ErrorCode, kerr.RebalanceInProgress)
	wantCode(t, "commit during PreparingRebalance", a.commit(map[int32]int64{0: 3})[0], nil)
	// During CompletingRebalance: commit says rebalance.
	bRes := async(func() *kmsg.JoinGroupResponse { return b.join(ctx) })
	wantCode(t, "a rejoin", a.join(ctx).ErrorCode, nil)
	wantCode(t, "b rejoin", await(t, "b", bRes).ErrorCode, nil)
	wantCode(t, "n join", await(t, "n", nRes).ErrorCode, nil)
	if got := groupStateOf(c, "e"); got != "CompletingRebalance" {
		t.Fatalf("state %s", got)
	}
	wantCode(t, "commit during CompletingRebalance", a.commit(map[int32]int64{0: 4})[0], kerr.RebalanceInProgress)
	wantCode(t, "heartbeat during CompletingRebalance", a.heartbeat(), nil)
}

func TestCommitPartitionErrors(t *testing.T) {
	c, _ := newTestCoordinator(t, Config{PartitionExists: func(topic string, p int32) bool { return topic == "t" && p < 2 }})
	req := commitRequest(9, "pe", -1, "", "t", map[int32]int64{0: 1, 1: 2, 5: 3})
	big := kmsg.NewOffsetCommitRequestTopicPartition()
	big.Partition = 1
	big.Metadata = kmsg.StringPtr(strings.Repeat("m", maxMetadataLen+1))
	other := kmsg.NewOffsetCommitRequestTopic()
	other.Topic = "other"
	other.Partitions = append(other.Partitions, big)
	bad := kmsg.NewOffsetCommitRequestTopic()
	bad.Topic = ""
	bad.Partitions = append(bad.Partitions, big)
	req.Topics = append(req.Topics, other, bad)
	resp := c.OffsetCommit(req)
	roundTrip(t, resp)
	want := map[string]map[int32]*kerr.Error{
		"t":     {0: nil, 1: nil, 5: kerr.UnknownTopicOrPartition},
		"other": {1: kerr.UnknownTopicOrPartition},
		"":      {1: kerr.InvalidTopicException},
	}
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			wantCode(t, fmt.Sprintf("%q/%d", rt.Topic, rp.Partition), rp.ErrorCode, want[rt.Topic][rp.Partition])
		}
	}
	c2, _ := newTestCoordinator(t, Config{})
	req = commitRequest(9, "pe", -1, "", "t", map[int32]int64{0: 1})
	req.Topics[0].Partitions[0].Metadata = big.Metadata
	wantCode(t, "metadata too large", commitCodes(t, c2.OffsetCommit(req))[0], kerr.OffsetMetadataTooLarge)
	req = commitRequest(10, "pe", -1, "", "", map[int32]int64{0: 1})
	wantCode(t, "v10 topic id", commitCodes(t, c2.OffsetCommit(req))[0], kerr.UnknownTopicID)
}

// Close and a client's disconnect both unblock a JoinGroup.
func TestBlockedJoinReturns(t *testing.T) {
	c, _ := newTestCoordinator(t, Config{})
	ctx := context.Background()
	a := newMember(t, c, "bj", "a", modern)
	stableGroup(t, ctx, a)

	// A client that goes away: its join returns, it stays a member.
	b := newMember(t, c, "bj", "b", modern)
	wantCode(t, "b first join", b.joinOnce(ctx).ErrorCode, kerr.MemberIDRequired)
	cctx, cancel := context.WithCancel(ctx)
	bRes := async(func() *kmsg.JoinGroupResponse { return b.joinOnce(cctx) })
	testkit.Eventually(t, 3*time.Second, func() bool { return groupStateOf(c, "bj") == "PreparingRebalance" }, "rebalance")
	cancel()
	await(t, "cancelled join", bRes)
	if gi, _ := c.Group("bj"); len(gi.Members) != 2 {
		t.Fatalf("members after disconnect: %d, want 2", len(gi.Members))
	}

	// Close: a blocked join gets COORDINATOR_NOT_AVAILABLE at once.
	d := newMember(t, c, "bj", "d", versions{join: 3, sync: 2, heartbeat: 2, leave: 2, commit: 5, fetch: 5})
	dRes := async(func() *kmsg.JoinGroupResponse { return d.joinOnce(ctx) })
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "join at close", await(t, "join at close", dRes).ErrorCode, kerr.CoordinatorNotAvailable)
	if d := time.Since(start); d > time.Second {
		t.Fatalf("join returned %v after Close", d)
	}
	wantCode(t, "heartbeat after close", a.heartbeat(), kerr.CoordinatorNotAvailable)
	wantCode(t, "join after close", a.joinOnce(ctx).ErrorCode, kerr.CoordinatorNotAvailable)
	wantCode(t, "commit after close", a.commit(map[int32]int64{0: 1})[0], kerr.CoordinatorNotAvailable)
	lresp := c.ListGroups(kmsg.NewPtrListGroupsRequest())
	wantCode(t, "list after close", lresp.ErrorCode, kerr.CoordinatorNotAvailable)
}

// Close unblocks a SyncGroup, and a disconnected SyncGroup leaves the
// member's session running.
func TestBlockedSyncReturns(t *testing.T) {
	c, _ := newTestCoordinator(t, Config{InitialRebalanceDelay: 50 * time.Millisecond})
	ctx := context.Background()
	a := newMember(t, c, "bs", "a", modern)
	b := newMember(t, c, "bs", "b", modern)
	aRes := async(func() *kmsg.JoinGroupResponse { return a.join(ctx) })
	wantCode(t, "b join", b.join(ctx).ErrorCode, nil)
	wantCode(t, "a join", await(t, "a join", aRes).ErrorCode, nil)
	follower := b
	if b.id == b.leader {
		follower = a
	}
	cctx, cancel := context.WithCancel(ctx)
	fRes := async(func() *kmsg.SyncGroupResponse { return follower.sync(cctx) })
	time.Sleep(20 * time.Millisecond)
	cancel()
	await(t, "cancelled sync", fRes)
	fRes = async(func() *kmsg.SyncGroupResponse { return follower.sync(ctx) })
	time.Sleep(20 * time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "sync at close", await(t, "sync at close", fRes).ErrorCode, kerr.CoordinatorNotAvailable)
}

// Static members: join without MEMBER_ID_REQUIRED, a restarted instance
// replaces the old member id without a rebalance, the old id is fenced.
func TestStaticMembership(t *testing.T) {
	c, _ := newTestCoordinator(t, Config{})
	ctx := context.Background()
	a := newMember(t, c, "sm", "a", librdkafka)
	a.instanceID = kmsg.StringPtr("inst-a")
	b := newMember(t, c, "sm", "b", librdkafka)
	b.instanceID = kmsg.StringPtr("inst-b")
	wantCode(t, "static join", a.joinOnce(ctx).ErrorCode, nil)
	if !strings.HasPrefix(a.id, "inst-a-") {
		t.Fatalf("static member id %q", a.id)
	}
	stableGroup(t, ctx, a, b)
	gen := a.gen
	follower := b
	if b.id == b.leader {
		follower = a
	}
	if gi, _ := c.Group("sm"); gi.Members[0].InstanceID == "" {
		t.Fatalf("no instance id in %+v", gi.Members[0])
	}
	// The follower restarts: same instance id, no member id.
	restarted := *follower
	restarted.id = ""
	wantCode(t, "restarted join", restarted.joinOnce(ctx).ErrorCode, nil)
	if restarted.id == follower.id || restarted.gen != gen || groupStateOf(c, "sm") != "Stable" {
		t.Fatalf("replacement: id %q (old %q), generation %d (was %d), state %s",
			restarted.id, follower.id, restarted.gen, gen, groupStateOf(c, "sm"))
	}
	sresp := restarted.sync(ctx)
	wantCode(t, "replacement sync", sresp.ErrorCode, nil)
	if len(decodeAssignment(sresp.MemberAssignment)["t"]) != 1 {
		t.Fatalf("replacement did not inherit the assignment: %v", decodeAssignment(sresp.MemberAssignment))
	}
	wantCode(t, "old incarnation heartbeat", follower.heartbeat(), kerr.FencedInstanceID)
	follower.instanceID = nil
	wantCode(t, "old member id heartbeat", follower.heartbeat(), kerr.UnknownMemberID)
	// Leave by instance id (v3+).
	restarted.v.leave = 4
	restarted.id = ""
	wantCode(t, "static leave", restarted.leave(), nil)
	if gi, _ := c.Group("sm"); len(gi.Members) != 1 {
		t.Fatalf("members after static leave: %d", len(gi.Members))
	}
}

// LeaveGroup v3+ answers per member.
func TestLeaveBatch(t *testing.T) {
	c, _ := newTestCoordinator(t, Config{})
	ctx := context.Background()
	a := newMember(t, c, "lb", "a", modern)
	b := newMember(t, c, "lb", "b", modern)
	stableGroup(t, ctx, a, b)
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Version = 5
	req.Group = "lb"
	for _, id := range []string{a.id, "nobody", b.id} {
		rm := kmsg.NewLeaveGroupRequestMember()
		rm.MemberID = id
		req.Members = append(req.Members, rm)
	}
	resp := c.LeaveGroup(req)
	roundTrip(t, resp)
	wantCode(t, "top level", resp.ErrorCode, nil)
	for i, want := range []*kerr.Error{nil, kerr.UnknownMemberID, nil} {
		wantCode(t, fmt.Sprint("member ", i), resp.Members[i].ErrorCode, want)
	}
	if gi, _ := c.Group("lb"); gi.State != "Empty" {
		t.Fatalf("state %s", gi.State)
	}
}

func TestGroupLimits(t *testing.T) {
	c, _ := newTestCoordinator(t, Config{MaxGroups: 2, MaxGroupSize: 2})
	ctx := context.Background()
	for i := range 2 {
		m := newMember(t, c, "full", fmt.Sprint(i), modern)
		wantCode(t, "join", m.joinOnce(ctx).ErrorCode, kerr.MemberIDRequired)
	}
	m := newMember(t, c, "full", "x", modern)
	wantCode(t, "join beyond MaxGroupSize", m.joinOnce(ctx).ErrorCode, kerr.GroupMaxSizeReached)
	wantCode(t, "second group", newMember(t, c, "two", "x", modern).joinOnce(ctx).ErrorCode, kerr.MemberIDRequired)
	wantCode(t, "third group", newMember(t, c, "three", "x", modern).joinOnce(ctx).ErrorCode, kerr.GroupMaxSizeReached)
	req := commitRequest(2, "three", -1, "", "t", map[int32]int64{0: 1})
	wantCode(t, "commit creating a third group", commitCodes(t, c.OffsetCommit(req))[0], kerr.GroupMaxSizeReached)
}

func TestConfig(t *testing.T) {
	st, err := newMemStore()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, err = New(st, Config{MinSessionTimeout: time.Hour, MaxSessionTimeout: time.Minute, OffsetsRetention: -1, MaxGroups: -1})
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"MinSessionTimeout (1h0m0s) above MaxSessionTimeout", "OffsetsRetention: negative", "MaxGroups: negative"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := New(nil, Config{}); err == nil {
		t.Error("nil store accepted")
	}
}
