package kafkaserver

// ApiVersions (key 18), versions 0-3.
//
// A client that asks for a version above 3 (franz-go starts at 5) gets a
// v0-encoded answer with UNSUPPORTED_VERSION and the full key list, and
// retries at our maximum (KIP-511). The response header is always v0.

import (
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// api is one served API: its version range and handler.
type api struct {
	key      kmsg.Key
	min, max int16
	handle   func(c *conn, r *request) *outbound
}

// apis lists every API Ferry serves, with the versions chosen for the four
// client families (docs/kafka.md#client-families): the low, non-flexible
// versions that kafka-go and librdkafka use stay available.
var apis = []api{
	{kmsg.Produce, 3, 9, handleProduce},
	{kmsg.Fetch, 4, 12, handleFetch},
	{kmsg.ListOffsets, 0, 7, handleListOffsets},
	{kmsg.Metadata, 0, 12, handleMetadata},
	{kmsg.OffsetCommit, 0, 8, handleOffsetCommit},
	{kmsg.OffsetFetch, 0, 8, handleOffsetFetch},
	{kmsg.FindCoordinator, 0, 4, handleFindCoordinator},
	{kmsg.JoinGroup, 0, 9, handleJoinGroup},
	{kmsg.Heartbeat, 0, 4, handleHeartbeat},
	{kmsg.LeaveGroup, 0, 5, handleLeaveGroup},
	{kmsg.SyncGroup, 0, 5, handleSyncGroup},
	{kmsg.DescribeGroups, 0, 5, handleDescribeGroups},
	{kmsg.ListGroups, 0, 4, handleListGroups},
	{kmsg.SASLHandshake, 0, 1, handleSASLHandshake},
	{kmsg.ApiVersions, 0, 3, nil}, // handled before decoding, see handleAPIVersions
	{kmsg.CreateTopics, 0, 7, handleCreateTopics},
	{kmsg.DeleteTopics, 0, 5, handleDeleteTopics},
	{kmsg.InitProducerID, 0, 4, handleInitProducerID},
	{kmsg.SASLAuthenticate, 0, 2, handleSASLAuthenticate},
	{kmsg.DeleteGroups, 0, 2, handleDeleteGroups},
}

var apiByKey = func() map[int16]*api {
	m := make(map[int16]*api, len(apis))
	for i := range apis {
		m[apis[i].key.Int16()] = &apis[i]
	}
	return m
}()

func apiFor(key int16) (*api, bool) {
	a, ok := apiByKey[key]
	return a, ok && a.handle != nil
}

const apiVersionsMax = 3

func apiKeys() []kmsg.ApiVersionsResponseApiKey {
	keys := make([]kmsg.ApiVersionsResponseApiKey, 0, len(apis))
	for _, a := range apis {
		k := kmsg.NewApiVersionsResponseApiKey()
		k.ApiKey, k.MinVersion, k.MaxVersion = a.key.Int16(), a.min, a.max
		keys = append(keys, k)
	}
	return keys
}

// handleAPIVersions answers ApiVersions, decoding the body only at the
// versions it serves.
func (c *conn) handleAPIVersions(corr int32, version int16, body []byte, start time.Time) *outbound {
	resp := kmsg.NewPtrApiVersionsResponse()
	if version < 0 || version > apiVersionsMax {
		resp.Version = 0
		resp.ErrorCode = kerr.UnsupportedVersion.Code
		resp.ApiKeys = apiKeys()
		return &outbound{corr: corr, key: kmsg.ApiVersions.Int16(), resp: resp, start: start}
	}
	req := kmsg.NewPtrApiVersionsRequest()
	req.Version = version
	rd := kbin.Reader{Src: body}
	if req.IsFlexible() {
		kmsg.SkipTags(&rd)
	}
	if rd.Complete() != nil || req.ReadFrom(rd.Src) != nil {
		// Kafka answers an undecodable ApiVersions with INVALID_REQUEST.
		c.s.metrics.Malformed.WithLabelValues("body").Inc()
		resp.Version = 0
		resp.ErrorCode = kerr.InvalidRequest.Code
		resp.ApiKeys = apiKeys()
		return &outbound{corr: corr, key: kmsg.ApiVersions.Int16(), resp: resp, start: start}
	}
	resp.Version = version
	resp.ApiKeys = apiKeys()
	return &outbound{corr: corr, key: kmsg.ApiVersions.Int16(), resp: resp, start: start}
}
