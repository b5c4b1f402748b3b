package kafka

import (
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"

	flog "github.com/ferry-iot/ferry/broker/log"
)

// TestCodeForLogErrors pins the Kafka codes of the log's "not there"
// errors: a missing partition and a topic deleted under a request are
// UNKNOWN_TOPIC_OR_PARTITION, a closing log is retriable.
func TestCodeForLogErrors(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int16
	}{
		{fmt.Errorf("x: %w", flog.ErrUnknownTopic), kerr.UnknownTopicOrPartition.Code},
		{fmt.Errorf("x: %w", flog.ErrUnknownPartition), kerr.UnknownTopicOrPartition.Code},
		{fmt.Errorf("x: %w", flog.ErrTopicDeleted), kerr.UnknownTopicOrPartition.Code},
		{flog.ErrClosed, kerr.NotLeaderForPartition.Code},
	} {
		if got := codeFor(c.err); got != c.want {
			t.Errorf("codeFor(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}
