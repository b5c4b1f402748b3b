package kafkaserver

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

// TestListOffsetsTimestamps: ListOffsets answers as Kafka does when the
// producers' timestamps do not grow with the offsets: a timestamp query
// finds the first record at or after it and answers that record's
// timestamp (not the query's); -3 finds the first record holding the
// largest timestamp (not the last record).
func TestListOffsetsTimestamps(t *testing.T) {
	e := newEnv(t)
	tp := e.topic("ts", flagsTopic(2))
	p, _ := tp.Partition(0)
	//            offset: 0     1     2     3     4     5
	stamps := [][]int64{{1000, 2000, 5000}, {3000, 5000, 1500}} // two batches
	for _, batch := range stamps {
		var recs []commitlog.Record
		for _, ts := range batch {
			recs = append(recs, commitlog.Record{Timestamp: ts, Value: []byte("v")})
		}
		if _, err := p.Append(context.Background(), recs).Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	rc := e.raw()
	ask := func(v int16, part int32, ts int64) kmsg.ListOffsetsResponseTopicPartition {
		t.Helper()
		req := kmsg.NewPtrListOffsetsRequest()
		req.Version, req.ReplicaID = v, -1
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition, rp.Timestamp = part, ts
		req.Topics = []kmsg.ListOffsetsRequestTopic{{Topic: "ts", Partitions: []kmsg.ListOffsetsRequestTopicPartition{rp}}}
		resp := rc.roundTrip(req).(*kmsg.ListOffsetsResponse)
		sp := resp.Topics[0].Partitions[0]
		if sp.ErrorCode != 0 {
			t.Fatalf("v%d partition %d at %d: error %d", v, part, ts, sp.ErrorCode)
		}
		return sp
	}
	cases := []struct {
		ts, off, found int64
	}{
		{0, 0, 1000},
		{1000, 0, 1000},
		{1800, 1, 2000},
		{2500, 2, 5000}, // the first record at or after 2500 is offset 2, at 5000
		{5000, 2, 5000},
		{5001, -1, -1},
		{-1, 6, -1},
		{-2, 0, -1},
	}
	for v := int16(1); v <= 7; v++ {
		for _, c := range cases {
			if sp := ask(v, 0, c.ts); sp.Offset != c.off || sp.Timestamp != c.found {
				t.Errorf("v%d at %d: offset %d timestamp %d, want %d at %d", v, c.ts, sp.Offset, sp.Timestamp, c.off, c.found)
			}
		}
	}
	if sp := ask(7, 0, -3); sp.Offset != 2 || sp.Timestamp != 5000 {
		t.Errorf("max timestamp: offset %d timestamp %d, want the first record at 5000, offset 2", sp.Offset, sp.Timestamp)
	}
	if sp := ask(7, 1, -3); sp.Offset != -1 || sp.Timestamp != -1 { // empty partition
		t.Errorf("max timestamp of an empty partition: offset %d timestamp %d, want -1 -1", sp.Offset, sp.Timestamp)
	}
	if sp := ask(0, 0, -1); len(sp.OldStyleOffsets) != 1 || sp.OldStyleOffsets[0] != 6 {
		t.Errorf("v0 latest: %v", sp.OldStyleOffsets)
	}
}
