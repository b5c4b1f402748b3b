package group

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/ferry-iot/ferry/broker/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newTestCoordinator returns a coordinator over an in-memory store, with
// a 1 ms minimum session timeout; both are closed by the test's cleanup.
func newTestCoordinator(t *testing.T, cfg Config) (*Coordinator, *state.Store) {
	t.Helper()
	st, err := state.Open("", state.WithInMemory(), state.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinSessionTimeout == 0 {
		cfg.MinSessionTimeout = time.Millisecond
	}
	c, err := New(st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	return c, st
}

// versions are the API versions a test client speaks.
type versions struct{ join, sync, heartbeat, leave, commit, fetch int16 }

var (
	// modern is what franz-go and Sarama-class clients use.
	modern = versions{join: 9, sync: 5, heartbeat: 4, leave: 5, commit: 9, fetch: 9}
	// kafkaGo is segmentio/kafka-go's Reader with a GroupID.
	kafkaGo = versions{join: 1, sync: 0, heartbeat: 0, leave: 0, commit: 2, fetch: 1}
	// librdkafka's maxima.
	librdkafka = versions{join: 5, sync: 3, heartbeat: 3, leave: 1, commit: 9, fetch: 9}
)

// tmember is a test client of one group member.
type tmember struct {
	t          *testing.T
	c          *Coordinator
	group      string
	clientID   string
	v          versions
	protocols  []kmsg.JoinGroupRequestProtocol
	session    time.Duration
	rebalance  time.Duration
	instanceID *string

	// From the last successful JoinGroup.
	id       string
	gen      int32
	leader   string
	protocol string
	members  []kmsg.JoinGroupResponseMember
}

func newMember(t *testing.T, c *Coordinator, group, clientID string, v versions, protocols ...string) *tmember {
	if len(protocols) == 0 {
		protocols = []string{"range"}
	}
	m := &tmember{t: t, c: c, group: group, clientID: clientID, v: v, session: 10 * time.Second, rebalance: 5 * time.Second}
	for _, p := range protocols {
		rp := kmsg.NewJoinGroupRequestProtocol()
		rp.Name = p
		rp.Metadata = []byte(clientID + "/" + p)
		m.protocols = append(m.protocols, rp)
	}
	return m
}

func (m *tmember) joinRequest() *kmsg.JoinGroupRequest {
	req := kmsg.NewPtrJoinGroupRequest()
	req.Version = m.v.join
	req.Group = m.group
	req.SessionTimeoutMillis = int32(m.session / time.Millisecond)
	req.RebalanceTimeoutMillis = int32(m.rebalance / time.Millisecond)
	req.MemberID = m.id
	req.InstanceID = m.instanceID
	req.ProtocolType = "consumer"
	req.Protocols = m.protocols
	return req
}

// joinOnce sends one JoinGroup and records what it learns.
func (m *tmember) joinOnce(ctx context.Context) *kmsg.JoinGroupResponse {
	resp := m.c.JoinGroup(ctx, m.clientID, "/10.0.0.1", m.joinRequest())
	roundTrip(m.t, resp)
	switch resp.ErrorCode {
	case kerr.MemberIDRequired.Code:
		m.id = resp.MemberID
	case 0:
		m.id, m.gen, m.leader, m.members = resp.MemberID, resp.Generation, resp.LeaderID, resp.Members
		m.protocol = ""
		if resp.Protocol != nil {
			m.protocol = *resp.Protocol
		}
	case kerr.UnknownMemberID.Code:
		m.id = ""
	}
	return resp
}

// join joins, answering MEMBER_ID_REQUIRED as clients do.
func (m *tmember) join(ctx context.Context) *kmsg.JoinGroupResponse {
	resp := m.joinOnce(ctx)
	if resp.ErrorCode == kerr.MemberIDRequired.Code {
		resp = m.joinOnce(ctx)
	}
	return resp
}

func (m *tmember) syncRequest(assignments []kmsg.SyncGroupRequestGroupAssignment) *kmsg.SyncGroupRequest {
	req := kmsg.NewPtrSyncGroupRequest()
	req.Version = m.v.sync
	req.Group = m.group
	req.Generation = m.gen
	req.MemberID = m.id
	req.InstanceID = m.instanceID
	if m.v.sync >= 5 {
		req.ProtocolType = kmsg.StringPtr("consumer")
		req.Protocol = kmsg.StringPtr(m.protocol)
	}
	req.GroupAssignment = assignments
	return req
}

// sync sends SyncGroup; the leader assigns partition i of topic "t" to
// the i-th member of its join response.
func (m *tmember) sync(ctx context.Context) *kmsg.SyncGroupResponse {
	var as []kmsg.SyncGroupRequestGroupAssignment
	if m.id == m.leader {
		for i, o := range m.members {
			a := kmsg.NewSyncGroupRequestGroupAssignment()
			a.MemberID = o.MemberID
			a.MemberAssignment = assignment(map[string][]int32{"t": {int32(i)}})
			as = append(as, a)
		}
	}
	resp := m.c.SyncGroup(ctx, m.syncRequest(as))
	roundTrip(m.t, resp)
	return resp
}

// run joins and syncs until it has an assignment, rejoining on
// REBALANCE_IN_PROGRESS, as a client does; it returns the assignment.
func (m *tmember) run(ctx context.Context) (map[string][]int32, error) {
	for {
		if err := kerr.ErrorForCode(m.join(ctx).ErrorCode); err != nil {
			if err == kerr.RebalanceInProgress {
				continue
			}
			return nil, err
		}
		resp := m.sync(ctx)
		switch err := kerr.ErrorForCode(resp.ErrorCode); err {
		case nil:
			return decodeAssignment(resp.MemberAssignment), nil
		case kerr.RebalanceInProgress:
			continue
		default:
			return nil, err
		}
	}
}

func (m *tmember) heartbeat() int16 {
	req := kmsg.NewPtrHeartbeatRequest()
	req.Version = m.v.heartbeat
	req.Group = m.group
	req.Generation = m.gen
	req.MemberID = m.id
	req.InstanceID = m.instanceID
	resp := m.c.Heartbeat(req)
	roundTrip(m.t, resp)
	return resp.ErrorCode
}

func (m *tmember) leave() int16 {
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Version = m.v.leave
	req.Group = m.group
	if m.v.leave < 3 {
		req.MemberID = m.id
	} else {
		rm := kmsg.NewLeaveGroupRequestMember()
		rm.MemberID = m.id
		rm.InstanceID = m.instanceID
		req.Members = append(req.Members, rm)
	}
	resp := m.c.LeaveGroup(req)
	roundTrip(m.t, resp)
	if m.v.leave >= 3 && resp.ErrorCode == 0 {
		return resp.Members[0].ErrorCode
	}
	return resp.ErrorCode
}

// commit commits offsets of topic "t" (partition -> offset) and returns
// the error code of each partition.
func (m *tmember) commit(offsets map[int32]int64) map[int32]int16 {
	req := commitRequest(m.v.commit, m.group, m.gen, m.id, "t", offsets)
	req.InstanceID = m.instanceID
	return commitCodes(m.t, m.c.OffsetCommit(req))
}

func commitRequest(version int16, group string, gen int32, memberID, topic string, offsets map[int32]int64) *kmsg.OffsetCommitRequest {
	req := kmsg.NewPtrOffsetCommitRequest()
	req.Version = version
	req.Group = group
	req.Generation = gen
	req.MemberID = memberID
	rt := kmsg.NewOffsetCommitRequestTopic()
	rt.Topic = topic
	for p, o := range offsets {
		rp := kmsg.NewOffsetCommitRequestTopicPartition()
		rp.Partition = p
		rp.Offset = o
		rp.LeaderEpoch = 7
		rp.Metadata = kmsg.StringPtr("meta")
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	return req
}

func commitCodes(t *testing.T, resp *kmsg.OffsetCommitResponse) map[int32]int16 {
	t.Helper()
	roundTrip(t, resp)
	codes := make(map[int32]int16)
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			codes[rp.Partition] = rp.ErrorCode
		}
	}
	return codes
}

// fetch fetches the offsets of topic "t" partitions 0..n-1 at version v
// (v8+ in the Groups form) and returns partition -> offset.
func fetch(t *testing.T, c *Coordinator, v int16, group string, n int32) map[int32]int64 {
	t.Helper()
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Version = v
	var parts []int32
	for p := range n {
		parts = append(parts, p)
	}
	if v >= 8 {
		rg := kmsg.NewOffsetFetchRequestGroup()
		rg.Group = group
		rt := kmsg.NewOffsetFetchRequestGroupTopic()
		rt.Topic = "t"
		rt.Partitions = parts
		rg.Topics = append(rg.Topics, rt)
		req.Groups = append(req.Groups, rg)
	} else {
		req.Group = group
		rt := kmsg.NewOffsetFetchRequestTopic()
		rt.Topic = "t"
		rt.Partitions = parts
		req.Topics = append(req.Topics, rt)
	}
	resp := c.OffsetFetch(req)
	roundTrip(t, resp)
	got := make(map[int32]int64)
	add := func(p int32, off int64, code int16) {
		if code != 0 {
			t.Errorf("fetch partition %d: %v", p, kerr.ErrorForCode(code))
		}
		got[p] = off
	}
	if v >= 8 {
		for _, g := range resp.Groups {
			if g.ErrorCode != 0 {
				t.Errorf("fetch group %q: %v", g.Group, kerr.ErrorForCode(g.ErrorCode))
			}
			for _, rt := range g.Topics {
				for _, rp := range rt.Partitions {
					add(rp.Partition, rp.Offset, rp.ErrorCode)
				}
			}
		}
		return got
	}
	if resp.ErrorCode != 0 {
		t.Errorf("fetch: %v", kerr.ErrorForCode(resp.ErrorCode))
	}
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			add(rp.Partition, rp.Offset, rp.ErrorCode)
		}
	}
	return got
}

func assignment(topics map[string][]int32) []byte {
	var a kmsg.ConsumerMemberAssignment
	for topic, parts := range topics {
		at := kmsg.NewConsumerMemberAssignmentTopic()
		at.Topic = topic
		at.Partitions = parts
		a.Topics = append(a.Topics, at)
	}
	return a.AppendTo(nil)
}

// roundTrip encodes a response at its version and decodes it again, so a
// field the version cannot carry, or a nil where the wire needs a value,
// shows up in tests.
func roundTrip(t *testing.T, resp kmsg.Response) {
	t.Helper()
	b := resp.AppendTo(nil)
	req := resp.RequestKind()
	req.SetVersion(resp.GetVersion())
	back := req.ResponseKind()
	if err := back.ReadFrom(b); err != nil {
		t.Fatalf("%T v%d does not decode: %v", resp, resp.GetVersion(), err)
	}
}

// wantCode fails unless got is want.
func wantCode(t *testing.T, what string, got int16, want *kerr.Error) {
	t.Helper()
	var wantCode int16
	if want != nil {
		wantCode = want.Code
	}
	if got != wantCode {
		t.Fatalf("%s: got %v, want %v", what, kerr.ErrorForCode(got), want)
	}
}

// groupState returns the group's state name ("" if it does not exist).
func groupStateOf(c *Coordinator, name string) string {
	gi, ok := c.Group(name)
	if !ok {
		return ""
	}
	return gi.State
}

// async runs fn in a goroutine and returns a channel with its result.
func async[T any](fn func() T) <-chan T {
	ch := make(chan T, 1)
	go func() { ch <- fn() }()
	return ch
}

// await waits up to 3 s for a result.
func await[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(3 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}
