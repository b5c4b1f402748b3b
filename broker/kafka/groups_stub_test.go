package kafka

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	flog "github.com/ferry-iot/ferry/broker/log"
	"github.com/ferry-iot/ferry/broker/state"
)

// stubGroups answers every group API with COORDINATOR_NOT_AVAILABLE
// (temporary until the coordinator lands).
type stubGroups struct{}

func newTestGroups(t *testing.T, st *state.Store, lg *flog.Log) Groups { return stubGroups{} }
func closeTestGroups(Groups)                                          {}

func na[T kmsg.Response](r T) T { setErrorCodes(r, kerr.CoordinatorNotAvailable.Code); return r }

func (stubGroups) JoinGroup(_ context.Context, _, _ string, r *kmsg.JoinGroupRequest) *kmsg.JoinGroupResponse {
	return na(r.ResponseKind().(*kmsg.JoinGroupResponse))
}
func (stubGroups) SyncGroup(_ context.Context, r *kmsg.SyncGroupRequest) *kmsg.SyncGroupResponse {
	return na(r.ResponseKind().(*kmsg.SyncGroupResponse))
}
func (stubGroups) Heartbeat(r *kmsg.HeartbeatRequest) *kmsg.HeartbeatResponse {
	return na(r.ResponseKind().(*kmsg.HeartbeatResponse))
}
func (stubGroups) LeaveGroup(r *kmsg.LeaveGroupRequest) *kmsg.LeaveGroupResponse {
	return na(r.ResponseKind().(*kmsg.LeaveGroupResponse))
}
func (stubGroups) OffsetCommit(r *kmsg.OffsetCommitRequest) *kmsg.OffsetCommitResponse {
	return r.ResponseKind().(*kmsg.OffsetCommitResponse)
}
func (stubGroups) OffsetFetch(r *kmsg.OffsetFetchRequest) *kmsg.OffsetFetchResponse {
	return na(r.ResponseKind().(*kmsg.OffsetFetchResponse))
}
func (stubGroups) DescribeGroups(r *kmsg.DescribeGroupsRequest) *kmsg.DescribeGroupsResponse {
	return r.ResponseKind().(*kmsg.DescribeGroupsResponse)
}
func (stubGroups) ListGroups(r *kmsg.ListGroupsRequest) *kmsg.ListGroupsResponse {
	return r.ResponseKind().(*kmsg.ListGroupsResponse)
}
func (stubGroups) DeleteGroups(r *kmsg.DeleteGroupsRequest) *kmsg.DeleteGroupsResponse {
	return r.ResponseKind().(*kmsg.DeleteGroupsResponse)
}
