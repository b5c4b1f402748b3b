package kafkaserver

import (
	"testing"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/kafkaserver/group"
	"github.com/ferry-iot/ferry/broker/state"
)

// newTestGroups is the real consumer-group coordinator over st, wired as
// the daemon wires it (gateway/kafka.go): commits only for partitions lg
// holds. Package group imports only broker/state, so there is no cycle.
func newTestGroups(t testing.TB, st *state.Store, lg *commitlog.Log) *group.Coordinator {
	t.Helper()
	g, err := group.New(st, group.Config{
		Logger: quiet(),
		PartitionExists: func(topic string, partition int32) bool {
			tp, err := lg.Topic(topic)
			if err != nil {
				return false
			}
			_, err = tp.Partition(partition)
			return err == nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func closeTestGroups(t testing.TB, g *group.Coordinator) {
	t.Helper()
	if err := g.Close(); err != nil {
		t.Error(err)
	}
}
