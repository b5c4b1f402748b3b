package main

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/rcrowley/go-metrics"
	kafkago "github.com/segmentio/kafka-go"
)

// TestKafkaSarama: Sarama (default protocol version 2.8, as its users run
// it) produces with acks=all and consumes in a consumer group with the
// range assignor, marking offsets; a second session of the group finds
// nothing left to read.
func TestKafkaSarama(t *testing.T) {
	metrics.UseNilMetrics = true // Sarama's default meters start a goroutine that never ends
	d := startDaemon(t, "", "")
	d.createTopic(t, "sar", 3)
	addrs := []string{d.kafkaAddr()}
	const n = 500

	pcfg := sarama.NewConfig()
	pcfg.Producer.RequiredAcks = sarama.WaitForAll
	pcfg.Producer.Return.Successes = true
	prod, err := sarama.NewSyncProducer(addrs, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		msg := &sarama.ProducerMessage{Topic: "sar", Key: sarama.StringEncoder("dev-" + strconv.Itoa(i%9)), Value: sarama.StringEncoder(strconv.Itoa(i))}
		if _, _, err := prod.SendMessage(msg); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if err := prod.Close(); err != nil {
		t.Fatal(err)
	}

	seen := map[string]int{}
	var mu sync.Mutex
	consume := func(want int) {
		ccfg := sarama.NewConfig()
		ccfg.Consumer.Offsets.Initial = sarama.OffsetOldest
		ccfg.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyRange()}
		ccfg.Consumer.Offsets.AutoCommit.Interval = 100 * time.Millisecond
		grp, err := sarama.NewConsumerGroup(addrs, "sarama-group", ccfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		h := &saramaHandler{onMsg: func(m *sarama.ConsumerMessage) {
			mu.Lock()
			seen[string(m.Value)]++
			if len(seen) >= want {
				cancel()
			}
			mu.Unlock()
		}}
		go func() {
			// With nothing to read the session just waits: end it.
			if want == 0 {
				time.Sleep(3 * time.Second)
				cancel()
			}
		}()
		for ctx.Err() == nil {
			if err := grp.Consume(ctx, []string{"sar"}, h); err != nil && !errors.Is(err, sarama.ErrClosedConsumerGroup) && ctx.Err() == nil {
				t.Fatalf("consume: %v", err)
			}
		}
		if err := grp.Close(); err != nil {
			t.Fatal(err)
		}
	}
	consume(n)
	if len(seen) != n {
		t.Fatalf("sarama group read %d distinct records, want %d", len(seen), n)
	}
	for v, c := range seen {
		if c != 1 {
			t.Fatalf("record %s read %d times", v, c)
		}
	}
	consume(0) // a new session resumes at the committed offsets
	for v, c := range seen {
		if c != 1 {
			t.Fatalf("record %s read again (%d times) by the second session: offsets were not committed", v, c)
		}
	}
}

type saramaHandler struct{ onMsg func(*sarama.ConsumerMessage) }

func (*saramaHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (*saramaHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *saramaHandler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for {
		select {
		case m, ok := <-c.Messages():
			if !ok {
				return nil
			}
			h.onMsg(m)
			s.MarkMessage(m, "")
		case <-s.Context().Done():
			return nil
		}
	}
}

// TestKafkaKafkaGo: segmentio/kafka-go writes with RequireAll and two
// Readers in one group (its old JoinGroup/SyncGroup versions, range
// balancer) read everything exactly once, committing explicitly.
func TestKafkaKafkaGo(t *testing.T) {
	d := startDaemon(t, "", "")
	d.createTopic(t, "kgo-seg", 4)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const n = 400
	tr := &kafkago.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafkago.Writer{Addr: kafkago.TCP(d.kafkaAddr()), Topic: "kgo-seg", Balancer: &kafkago.Hash{}, Transport: tr,
		RequiredAcks: kafkago.RequireAll, BatchTimeout: 10 * time.Millisecond}
	var msgs []kafkago.Message
	for i := 0; i < n; i++ {
		msgs = append(msgs, kafkago.Message{Key: []byte("dev-" + strconv.Itoa(i%11)), Value: []byte(strconv.Itoa(i))})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	for m := 0; m < 2; m++ {
		r := kafkago.NewReader(kafkago.ReaderConfig{
			Brokers: []string{d.kafkaAddr()}, GroupID: "segmentio-group", Topic: "kgo-seg",
			GroupBalancers: []kafkago.GroupBalancer{kafkago.RangeGroupBalancer{}}, StartOffset: kafkago.FirstOffset,
			MaxWait: 200 * time.Millisecond, HeartbeatInterval: 500 * time.Millisecond, SessionTimeout: 6 * time.Second,
			RebalanceTimeout: 5 * time.Second,
		})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			for {
				msg, err := r.FetchMessage(rctx)
				if err != nil {
					return
				}
				mu.Lock()
				seen[string(msg.Value)]++
				done := len(seen) >= n
				mu.Unlock()
				if err := r.CommitMessages(rctx, msg); err != nil && rctx.Err() == nil {
					t.Errorf("commit: %v", err)
				}
				if done {
					rcancel()
				}
			}
		}()
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("kafka-go group read %d distinct records, want %d", len(seen), n)
	}
	for v, c := range seen {
		if c != 1 {
			t.Fatalf("record %s read %d times", v, c)
		}
	}
	var g groupJSON
	d.api("GET", "/api/v1/groups/segmentio-group", nil, &g)
	var committed int64
	for _, o := range g.Offsets {
		committed += o.Offset
	}
	if committed != n {
		t.Fatalf("kafka-go committed %d in total, want %d: %+v", committed, n, g.Offsets)
	}
}
