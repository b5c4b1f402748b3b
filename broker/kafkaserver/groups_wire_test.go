package kafkaserver

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestDescribeListGroupsWire: DescribeGroups and ListGroups over the wire,
// at every served version, about a group a franz-go consumer leads, a
// group that only has commits, and a group that does not exist.
func TestDescribeListGroupsWire(t *testing.T) {
	e := newEnv(t)
	tp := e.topic("gw", flagsTopic(2))
	appendN(t, tp, 5, 10)
	ctx := ctxT(t, 30*time.Second)

	cl := e.client(kgo.ConsumerGroup("wire-g"), kgo.ConsumeTopics("gw"), kgo.ClientID("describer"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	for got := 0; got == 0; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal("the consumer read nothing")
		}
		got = fs.NumRecords()
	}
	rc := e.raw()
	oc := kmsg.NewPtrOffsetCommitRequest() // a group with commits and no members
	oc.Version, oc.Group, oc.Generation = 2, "committer", -1
	oc.Topics = []kmsg.OffsetCommitRequestTopic{{Topic: "gw", Partitions: []kmsg.OffsetCommitRequestTopicPartition{{Partition: 0, Offset: 3}}}}
	if r := rc.roundTrip(oc).(*kmsg.OffsetCommitResponse); r.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Fatalf("commit: %d", r.Topics[0].Partitions[0].ErrorCode)
	}

	describe := func(v int16, names ...string) []kmsg.DescribeGroupsResponseGroup {
		t.Helper()
		req := kmsg.NewPtrDescribeGroupsRequest()
		req.Version, req.Groups, req.IncludeAuthorizedOperations = v, names, true
		resp := rc.roundTrip(req).(*kmsg.DescribeGroupsResponse)
		if len(resp.Groups) != len(names) {
			t.Fatalf("v%d: %d groups described, want %d", v, len(resp.Groups), len(names))
		}
		return resp.Groups
	}
	for v := int16(0); v <= 5; v++ {
		gs := describe(v, "wire-g", "committer", "nope")
		g := gs[0]
		if g.ErrorCode != 0 || g.Group != "wire-g" || g.State != "Stable" || g.ProtocolType != "consumer" ||
			g.Protocol != "cooperative-sticky" || len(g.Members) != 1 {
			t.Fatalf("v%d: wire-g described as %+v", v, g)
		}
		m := g.Members[0]
		if m.ClientID != "describer" || !strings.HasPrefix(m.ClientHost, "/127.0.0.1") && !strings.HasPrefix(m.ClientHost, "127.0.0.1") || m.MemberID == "" {
			t.Fatalf("v%d: member %+v", v, m)
		}
		var meta kmsg.ConsumerMemberMetadata
		if err := meta.ReadFrom(m.ProtocolMetadata); err != nil || !slices.Equal(meta.Topics, []string{"gw"}) {
			t.Fatalf("v%d: member metadata %+v (%v)", v, meta, err)
		}
		var asg kmsg.ConsumerMemberAssignment
		if err := asg.ReadFrom(m.MemberAssignment); err != nil || len(asg.Topics) != 1 || asg.Topics[0].Topic != "gw" ||
			!slices.Equal(asg.Topics[0].Partitions, []int32{0, 1}) {
			t.Fatalf("v%d: member assignment %+v (%v)", v, asg, err)
		}
		if wantOps := int32(1<<3 | 1<<6 | 1<<8); v >= 3 && g.AuthorizedOperations != wantOps {
			t.Fatalf("v%d: authorized operations %b, want %b", v, g.AuthorizedOperations, wantOps)
		}
		if c := gs[1]; c.ErrorCode != 0 || c.State != "Empty" || len(c.Members) != 0 || c.Protocol != "" {
			t.Fatalf("v%d: committer described as %+v", v, c)
		}
		if n := gs[2]; n.ErrorCode != 0 || n.State != "Dead" || n.Group != "nope" { // GROUP_ID_NOT_FOUND only from v6
			t.Fatalf("v%d: unknown group described as %+v", v, n)
		}
	}

	list := func(v int16, states ...string) map[string]kmsg.ListGroupsResponseGroup {
		t.Helper()
		req := kmsg.NewPtrListGroupsRequest()
		req.Version, req.StatesFilter = v, states
		resp := rc.roundTrip(req).(*kmsg.ListGroupsResponse)
		if resp.ErrorCode != 0 {
			t.Fatalf("list groups v%d: error %d", v, resp.ErrorCode)
		}
		out := map[string]kmsg.ListGroupsResponseGroup{}
		for _, g := range resp.Groups {
			out[g.Group] = g
		}
		return out
	}
	for v := int16(0); v <= 4; v++ {
		gs := list(v)
		if len(gs) != 2 || gs["wire-g"].ProtocolType != "consumer" || gs["committer"].ProtocolType != "" {
			t.Fatalf("v%d: listed %+v", v, gs)
		}
		if v >= 4 && (gs["wire-g"].GroupState != "Stable" || gs["committer"].GroupState != "Empty") {
			t.Fatalf("v%d: states %+v", v, gs)
		}
	}
	if gs := list(4, "stable"); len(gs) != 1 || gs["wire-g"].Group != "wire-g" {
		t.Fatalf("filtered by state Stable: %+v", gs)
	}
	if gs := list(3, "stable"); len(gs) != 2 { // no filter before v4
		t.Fatalf("v3 with a state filter listed %+v", gs)
	}

	cl.Close() // leaves the group
	g := describe(5, "wire-g")[0]
	if g.State != "Empty" || len(g.Members) != 0 {
		t.Fatalf("after the member left: %+v", g)
	}
}
