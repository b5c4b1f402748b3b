package kafkaserver

import (
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

// TestCodeForLogErrors pins the Kafka codes of the log's "not there"
// errors: a missing partition and a topic deleted under a request are
// UNKNOWN_TOPIC_OR_PARTITION, a closing log is retriable. And of its batch
// refusals: corruption is CORRUPT_MESSAGE, a rule broken INVALID_RECORD
// (although it matches ErrCorruptBatch too), too large MESSAGE_TOO_LARGE.
func TestCodeForLogErrors(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int16
	}{
		{fmt.Errorf("x: %w", commitlog.ErrUnknownTopic), kerr.UnknownTopicOrPartition.Code},
		{fmt.Errorf("x: %w", commitlog.ErrUnknownPartition), kerr.UnknownTopicOrPartition.Code},
		{fmt.Errorf("x: %w", commitlog.ErrTopicDeleted), kerr.UnknownTopicOrPartition.Code},
		{commitlog.ErrClosed, kerr.NotLeaderForPartition.Code},
		{fmt.Errorf("x: %w", commitlog.ErrCorruptBatch), kerr.CorruptMessage.Code},
		{fmt.Errorf("x: %w", commitlog.ErrInvalidBatch), kerr.InvalidRecord.Code},
		{fmt.Errorf("%w: %w", commitlog.ErrInvalidBatch, commitlog.ErrRecordTooLarge), kerr.MessageTooLarge.Code},
		{fmt.Errorf("x: %w", commitlog.ErrRecordTooLarge), kerr.MessageTooLarge.Code},
	} {
		if got := codeFor(c.err); got != c.want {
			t.Errorf("codeFor(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

// TestFirstErrorCodeDepth: the walk the requests metric and unsupported
// answers share finds a code at the top, two slices deep and three slices
// deep (WriteTxnMarkers' partitions), and none in an answer without one.
func TestFirstErrorCodeDepth(t *testing.T) {
	top := kmsg.NewPtrDescribeGroupsResponse()
	top.Groups = []kmsg.DescribeGroupsResponseGroup{{ErrorCode: kerr.GroupIDNotFound.Code}}
	produce := kmsg.NewPtrProduceResponse()
	produce.Topics = []kmsg.ProduceResponseTopic{{Partitions: []kmsg.ProduceResponseTopicPartition{{}, {ErrorCode: kerr.CorruptMessage.Code}}}}
	markers := kmsg.NewPtrWriteTxnMarkersResponse()
	markers.Markers = []kmsg.WriteTxnMarkersResponseMarker{{Topics: []kmsg.WriteTxnMarkersResponseMarkerTopic{
		{Partitions: []kmsg.WriteTxnMarkersResponseMarkerTopicPartition{{ErrorCode: kerr.UnsupportedVersion.Code}}}}}}
	for _, c := range []struct {
		name string
		resp kmsg.Response
		want int16
	}{
		{"a group", top, kerr.GroupIDNotFound.Code},
		{"a partition", produce, kerr.CorruptMessage.Code},
		{"three slices deep", markers, kerr.UnsupportedVersion.Code},
		{"no code", kmsg.NewPtrMetadataResponse(), 0},
	} {
		if got := firstErrorCode(c.resp); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
}
