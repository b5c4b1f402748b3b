package group

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/broker/state"
	"github.com/ferry-iot/ferry/broker/testkit"
)

func newMemStore() (*state.Store, error) {
	return state.Open("", state.WithInMemory(), state.WithLogger(nil))
}

func TestOffsetKey(t *testing.T) {
	for _, tc := range []struct {
		group string
		tp    TopicPartition
	}{
		{"g", TopicPartition{"t", 0}},
		{"", TopicPartition{"t", 1}},
		{"a/b", TopicPartition{"c/d", 7}},
		{"nul\x00in\x00name", TopicPartition{"x\x00", 2147483647}},
		{string(bytes.Repeat([]byte("g"), maxGroupIDLen)), TopicPartition{string(bytes.Repeat([]byte("t"), maxTopicLen)), 3}},
	} {
		k := offsetKey(tc.group, tc.tp)
		if len(k) > state.MaxKeySize {
			t.Errorf("key of %d bytes", len(k))
		}
		if !bytes.HasPrefix(k, groupKeyPrefix(tc.group)) {
			t.Errorf("%q: key %q lacks the group prefix", tc.group, k)
		}
		g, tp, err := parseOffsetKey(k)
		if err != nil || g != tc.group || tp != tc.tp {
			t.Errorf("%q %v: parsed %q %v %v", tc.group, tc.tp, g, tp, err)
		}
	}
	// The prefix of group "a" is not a prefix of group "ab"'s keys.
	if bytes.HasPrefix(offsetKey("ab", TopicPartition{"t", 0}), groupKeyPrefix("a")) {
		t.Error("group prefixes overlap")
	}
	for _, bad := range [][]byte{
		[]byte("reg/x"),
		[]byte("off/"),
		[]byte("off/\x00\x05ab"),
		append(offsetKey("g", TopicPartition{"t", 0}), 0),
		offsetKey("g", TopicPartition{"t", 0})[:12],
	} {
		if _, _, err := parseOffsetKey(bad); !errors.Is(err, errBadOffsetRecord) {
			t.Errorf("%q: err %v", bad, err)
		}
	}
}

func TestOffsetValue(t *testing.T) {
	for _, c := range []Committed{
		{Offset: 0, LeaderEpoch: -1, CommitTime: time.UnixMilli(0)},
		{Offset: 1<<62 + 5, LeaderEpoch: 12, Metadata: "hello", CommitTime: time.UnixMilli(1700000000123)},
		{Offset: -1, LeaderEpoch: 0, Metadata: string(bytes.Repeat([]byte{0, 0xff}, maxMetadataLen/2)), CommitTime: time.UnixMilli(1)},
	} {
		got, err := decodeCommitted(encodeCommitted(c))
		if err != nil || got.Offset != c.Offset || got.LeaderEpoch != c.LeaderEpoch || got.Metadata != c.Metadata || !got.CommitTime.Equal(c.CommitTime) {
			t.Errorf("%+v: decoded %+v, %v", c, got, err)
		}
	}
	for _, bad := range [][]byte{nil, {1, 2, 3}, append([]byte{2}, make([]byte, offsetValueHeader)...)} {
		if _, err := decodeCommitted(bad); !errors.Is(err, errBadOffsetRecord) {
			t.Errorf("%x: err %v", bad, err)
		}
	}
}

// Committed offsets survive Close and New on the same badger directory,
// and their groups come back Empty.
func TestOffsetsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	st, err := state.Open(dir, state.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(st, Config{MinSessionTimeout: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m := newMember(t, c, "team/a\x00b", "a", modern)
	if _, err := m.run(ctx); err != nil {
		t.Fatal(err)
	}
	if codes := m.commit(map[int32]int64{0: 10, 1: 11, 2: 12}); codes[0]+codes[1]+codes[2] != 0 {
		t.Fatalf("commit: %v", codes)
	}
	simple := commitRequest(1, "simple", -1, "", "t", map[int32]int64{0: 99})
	if codes := commitCodes(t, c.OffsetCommit(simple)); codes[0] != 0 {
		t.Fatalf("simple commit: %v", codes)
	}
	before := map[string]map[TopicPartition]Committed{
		"team/a\x00b": c.Offsets("team/a\x00b"),
		"simple":      c.Offsets("simple"),
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st, err = state.Open(dir, state.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err = New(st, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for g, want := range before {
		if got := c.Offsets(g); !maps.EqualFunc(got, want, func(a, b Committed) bool {
			return a.Offset == b.Offset && a.LeaderEpoch == b.LeaderEpoch && a.Metadata == b.Metadata && a.CommitTime.Equal(b.CommitTime)
		}) {
			t.Errorf("%q: offsets after restart %v, want %v", g, got, want)
		}
	}
	gs := c.Groups()
	if len(gs) != 2 || gs[0].Name != "simple" || gs[1].Name != "team/a\x00b" || gs[0].State != "Empty" || gs[1].State != "Empty" {
		t.Fatalf("groups after restart: %+v", gs)
	}
	if got := fetch(t, c, 1, "team/a\x00b", 4); !maps.Equal(got, map[int32]int64{0: 10, 1: 11, 2: 12, 3: -1}) {
		t.Fatalf("fetch after restart: %v", got)
	}
	// The member is gone with the restart: its id is unknown.
	wantCode(t, "old member heartbeat", m.heartbeatOn(c), kerr.UnknownMemberID)
}

func (m *tmember) heartbeatOn(c *Coordinator) int16 {
	m.c = c
	return m.heartbeat()
}

// A failed store write answers UNKNOWN_SERVER_ERROR and commits nothing.
func TestCommitStoreFailure(t *testing.T) {
	c, st := newTestCoordinator(t, Config{})
	req := commitRequest(8, "sf", -1, "", "t", map[int32]int64{0: 1})
	if codes := commitCodes(t, c.OffsetCommit(req)); codes[0] != 0 {
		t.Fatalf("commit: %v", codes)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	req = commitRequest(8, "sf", -1, "", "t", map[int32]int64{0: 2, 1: 3})
	codes := commitCodes(t, c.OffsetCommit(req))
	wantCode(t, "commit to a closed store", codes[0], kerr.UnknownServerError)
	wantCode(t, "commit to a closed store", codes[1], kerr.UnknownServerError)
	if got := c.Offsets("sf"); len(got) != 1 || got[TopicPartition{"t", 0}].Offset != 1 {
		t.Fatalf("offsets after a failed commit: %v", got)
	}
	// DeleteGroups fails the same way and keeps the group.
	dresp := c.DeleteGroups(&kmsg.DeleteGroupsRequest{Version: 2, Groups: []string{"sf"}})
	wantCode(t, "delete with a closed store", dresp.Groups[0].ErrorCode, kerr.UnknownServerError)
	if _, ok := c.Group("sf"); !ok {
		t.Fatal("group gone after a failed delete")
	}
}

// OffsetFetch: null topics (v2+) is everything committed, v8+ groups,
// unknown groups are -1 without error.
func TestOffsetFetchForms(t *testing.T) {
	c, _ := newTestCoordinator(t, Config{})
	for _, tc := range []struct {
		group, topic string
		offsets      map[int32]int64
	}{
		{"f1", "b", map[int32]int64{1: 11, 0: 10}},
		{"f1", "a", map[int32]int64{0: 5}},
		{"f2", "t", map[int32]int64{0: 7}},
	} {
		if codes := commitCodes(t, c.OffsetCommit(commitRequest(9, tc.group, -1, "", tc.topic, tc.offsets))); slices.ContainsFunc(slices.Collect(maps.Values(codes)), func(c int16) bool { return c != 0 }) {
			t.Fatalf("commit: %v", codes)
		}
	}
	// v7, null topics.
	resp := c.OffsetFetch(&kmsg.OffsetFetchRequest{Version: 7, Group: "f1", RequireStable: true})
	roundTrip(t, resp)
	var got []string
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			got = append(got, fmt.Sprintf("%s/%d=%d@%d:%s", rt.Topic, rp.Partition, rp.Offset, rp.LeaderEpoch, *rp.Metadata))
		}
	}
	if want := []string{"a/0=5@7:meta", "b/0=10@7:meta", "b/1=11@7:meta"}; !slices.Equal(got, want) {
		t.Fatalf("all offsets: %v, want %v", got, want)
	}
	// v8: two groups, one of them unknown, one with null topics.
	req := &kmsg.OffsetFetchRequest{Version: 8}
	rg := kmsg.NewOffsetFetchRequestGroup()
	rg.Group = "f2"
	req.Groups = append(req.Groups, rg)
	rg = kmsg.NewOffsetFetchRequestGroup()
	rg.Group = "nobody"
	rt := kmsg.NewOffsetFetchRequestGroupTopic()
	rt.Topic = "t"
	rt.Partitions = []int32{0}
	rg.Topics = append(rg.Topics, rt)
	req.Groups = append(req.Groups, rg)
	resp = c.OffsetFetch(req)
	roundTrip(t, resp)
	if len(resp.Groups) != 2 || resp.Groups[0].Topics[0].Partitions[0].Offset != 7 ||
		resp.Groups[1].ErrorCode != 0 || resp.Groups[1].Topics[0].Partitions[0].Offset != -1 {
		t.Fatalf("v8 fetch: %+v", resp.Groups)
	}
	// v10 by topic id is not supported.
	req.Version = 10
	req.Groups[0].Topics = nil
	resp = c.OffsetFetch(req)
	wantCode(t, "v10 all topics", resp.Groups[0].ErrorCode, kerr.UnsupportedVersion)
	wantCode(t, "v10 topic id", resp.Groups[1].Topics[0].Partitions[0].ErrorCode, kerr.UnknownTopicID)
	// v1 on a closed coordinator puts the error in every partition.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	resp = c.OffsetFetch(&kmsg.OffsetFetchRequest{Version: 1, Group: "f2", Topics: []kmsg.OffsetFetchRequestTopic{{Topic: "t", Partitions: []int32{0}}}})
	roundTrip(t, resp)
	wantCode(t, "v1 after close", resp.Topics[0].Partitions[0].ErrorCode, kerr.CoordinatorNotAvailable)
}

// Offsets of a group Empty for longer than OffsetsRetention are deleted,
// from memory and from the store, and the group goes away.
func TestOffsetsRetention(t *testing.T) {
	clock := testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	c, st := newTestCoordinator(t, Config{Now: clock.Now, Monotonic: clock.Monotonic, OffsetsRetention: 7 * 24 * time.Hour})
	commit := func(group string, p int32) {
		t.Helper()
		if codes := commitCodes(t, c.OffsetCommit(commitRequest(9, group, -1, "", "t", map[int32]int64{p: 1}))); codes[p] != 0 {
			t.Fatalf("commit: %v", codes)
		}
	}
	commit("old", 0)
	commit("fresh", 0)
	clock.Advance(5 * 24 * time.Hour)
	commit("fresh", 1) // a simple consumer still committing
	clock.Advance(2*24*time.Hour + time.Minute)
	c.housekeep()
	if _, ok := c.Group("old"); ok {
		t.Error("group old still there")
	}
	if got := c.Offsets("fresh"); len(got) != 1 || got[TopicPartition{"t", 1}].Offset != 1 {
		t.Errorf("fresh offsets: %v", got)
	}
	var keys []string
	if err := st.Scan([]byte(offsetPrefix), func(k, _ []byte) error {
		g, tp, err := parseOffsetKey(k)
		keys = append(keys, fmt.Sprintf("%s/%s/%d", g, tp.Topic, tp.Partition))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys, []string{"fresh/t/1"}) {
		t.Errorf("stored offsets: %v", keys)
	}
	clock.Advance(7 * 24 * time.Hour)
	c.housekeep()
	if gs := c.Groups(); len(gs) != 0 {
		t.Errorf("groups left: %+v", gs)
	}
}

// Offsets of a group with members are kept, however old.
func TestOffsetsRetentionKeepsLiveGroups(t *testing.T) {
	clock := testkit.NewClock(time.Now())
	c, _ := newTestCoordinator(t, Config{Now: clock.Now, Monotonic: clock.Monotonic})
	m := newMember(t, c, "live", "a", modern)
	if _, err := m.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	m.commit(map[int32]int64{0: 1})
	clock.Advance(30 * 24 * time.Hour)
	c.housekeep()
	if len(c.Offsets("live")) != 1 {
		t.Fatal("offsets of a live group expired")
	}
}

// TestOffsetsRetentionSurvivesClockSteps: offsets retention counts time
// the daemon ran, not the wall clock. A Pi without a real-time clock boots
// with its clock in the past, loads an Empty group's offsets, and NTP then
// steps the clock a month forward: nothing expires until the retention
// has really passed since the load; a step while running expires nothing
// either.
func TestOffsetsRetentionSurvivesClockSteps(t *testing.T) {
	clock := testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg := Config{Now: clock.Now, Monotonic: clock.Monotonic, OffsetsRetention: 7 * 24 * time.Hour}
	c, st := newTestCoordinator(t, cfg)
	if codes := commitCodes(t, c.OffsetCommit(commitRequest(9, "idle", -1, "", "t", map[int32]int64{0: 5, 1: 6}))); codes[0] != 0 || codes[1] != 0 {
		t.Fatalf("commit: %v", codes)
	}
	clock.JumpWall(30 * 24 * time.Hour) // NTP, while running
	c.housekeep()
	if got := c.Offsets("idle"); len(got) != 2 {
		t.Fatalf("a wall-clock step expired offsets: %v", got)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// Switched off for a month; it boots with the clock where it stopped
	// (no RTC) and NTP steps it a month ahead a minute later.
	boot := testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg.Now, cfg.Monotonic = boot.Now, boot.Monotonic
	c2, err := New(st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c2.Close() })
	boot.Advance(time.Minute)
	boot.JumpWall(31 * 24 * time.Hour)
	c2.housekeep()
	if got := c2.Offsets("idle"); len(got) != 2 || got[TopicPartition{"t", 0}].Offset != 5 {
		t.Fatalf("offsets after boot and an NTP step: %v", got)
	}
	boot.Advance(7*24*time.Hour - 2*time.Minute)
	c2.housekeep()
	if len(c2.Offsets("idle")) != 2 {
		t.Fatal("offsets expired before the retention passed since the load")
	}
	boot.Advance(2 * time.Minute)
	c2.housekeep()
	if _, ok := c2.Group("idle"); ok {
		t.Fatal("offsets kept past the retention since the load")
	}
}

func TestDescribeListDelete(t *testing.T) {
	c, _ := newTestCoordinator(t, Config{})
	ctx := context.Background()
	a := newMember(t, c, "d", "a", modern)
	if _, err := a.run(ctx); err != nil {
		t.Fatal(err)
	}
	a.commit(map[int32]int64{0: 1})
	commitCodes(t, c.OffsetCommit(commitRequest(2, "e", -1, "", "t", map[int32]int64{0: 1})))

	for _, v := range []int16{0, 4, 5, 6} {
		resp := c.DescribeGroups(&kmsg.DescribeGroupsRequest{Version: v, Groups: []string{"d", "e", "nope"}, IncludeAuthorizedOperations: true})
		roundTrip(t, resp)
		d, e, nope := resp.Groups[0], resp.Groups[1], resp.Groups[2]
		if d.ErrorCode != 0 || d.State != "Stable" || d.ProtocolType != "consumer" || d.Protocol != "range" || len(d.Members) != 1 {
			t.Fatalf("v%d describe d: %+v", v, d)
		}
		dm := d.Members[0]
		if dm.MemberID != a.id || dm.ClientID != "a" || string(dm.ProtocolMetadata) != "a/range" || !slices.Equal(decodeAssignment(dm.MemberAssignment)["t"], []int32{0}) {
			t.Fatalf("v%d describe member: %+v", v, dm)
		}
		if e.ErrorCode != 0 || e.State != "Empty" || len(e.Members) != 0 {
			t.Fatalf("v%d describe e: %+v", v, e)
		}
		wantNope := (*kerr.Error)(nil)
		if v >= 6 {
			wantNope = kerr.GroupIDNotFound
		}
		wantCode(t, fmt.Sprintf("v%d describe unknown", v), nope.ErrorCode, wantNope)
		if nope.State != "Dead" {
			t.Fatalf("v%d unknown group state %q", v, nope.State)
		}
	}

	list := func(v int16, states ...string) []string {
		resp := c.ListGroups(&kmsg.ListGroupsRequest{Version: v, StatesFilter: states})
		roundTrip(t, resp)
		var names []string
		for _, g := range resp.Groups {
			names = append(names, g.Group+":"+g.ProtocolType)
		}
		return names
	}
	if got := list(3); !slices.Equal(got, []string{"d:consumer", "e:"}) {
		t.Fatalf("list: %v", got)
	}
	if got := list(4, "stable"); !slices.Equal(got, []string{"d:consumer"}) {
		t.Fatalf("list Stable: %v", got)
	}
	if got := list(4, "Empty", "Dead"); !slices.Equal(got, []string{"e:"}) {
		t.Fatalf("list Empty: %v", got)
	}
	if resp := c.ListGroups(&kmsg.ListGroupsRequest{Version: 5, TypesFilter: []string{"consumer"}}); len(resp.Groups) != 0 {
		t.Fatalf("list consumer-type groups: %+v", resp.Groups)
	}

	resp := c.DeleteGroups(&kmsg.DeleteGroupsRequest{Version: 2, Groups: []string{"d", "e", "nope"}})
	roundTrip(t, resp)
	for i, want := range []*kerr.Error{kerr.NonEmptyGroup, nil, kerr.GroupIDNotFound} {
		wantCode(t, "delete "+resp.Groups[i].Group, resp.Groups[i].ErrorCode, want)
	}
	if _, ok := c.Group("e"); ok || c.Offsets("e") != nil {
		t.Fatal("deleted group still there")
	}
	if got := fetch(t, c, 1, "e", 1); got[0] != -1 {
		t.Fatalf("fetch from a deleted group: %v", got)
	}
	// A deleted group can be used again.
	commitCodes(t, c.OffsetCommit(commitRequest(2, "e", -1, "", "t", map[int32]int64{0: 2})))
	if got := fetch(t, c, 1, "e", 1); got[0] != 2 {
		t.Fatalf("fetch from a recreated group: %v", got)
	}
}

func TestForEachOffset(t *testing.T) {
	c, _ := newTestCoordinator(t, Config{})
	commitCodes(t, c.OffsetCommit(commitRequest(9, "b", -1, "", "t", map[int32]int64{1: 11, 0: 10})))
	commitCodes(t, c.OffsetCommit(commitRequest(9, "a", -1, "", "u", map[int32]int64{0: 5})))
	var got []string
	c.ForEachOffset(func(g string, tp TopicPartition, off Committed) {
		got = append(got, fmt.Sprintf("%s %s/%d=%d", g, tp.Topic, tp.Partition, off.Offset))
		c.Groups() // fn may call back into the coordinator
	})
	if want := []string{"a u/0=5", "b t/0=10", "b t/1=11"}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// Deletes go in batches of deleteBatch keys: a group with more offsets
// than that is deleted whole.
func TestDeleteManyOffsets(t *testing.T) {
	c, st := newTestCoordinator(t, Config{})
	offs := make(map[int32]int64)
	for p := range int32(2*deleteBatch + 500) {
		offs[p] = int64(p)
	}
	if codes := commitCodes(t, c.OffsetCommit(commitRequest(9, "many", -1, "", "t", offs))); codes[0] != 0 {
		t.Fatalf("commit: %v", kerr.ErrorForCode(codes[0]))
	}
	resp := c.DeleteGroups(&kmsg.DeleteGroupsRequest{Version: 2, Groups: []string{"many"}})
	wantCode(t, "delete", resp.Groups[0].ErrorCode, nil)
	n := 0
	if err := st.Scan([]byte(offsetPrefix), func(_, _ []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d offsets left in the store", n)
	}
}
