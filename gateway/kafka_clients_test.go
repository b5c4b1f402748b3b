package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/rcrowley/go-metrics"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferry-iot/ferry/broker/testkit"
)

// nilSaramaMetrics turns off Sarama's meters (go-metrics' default meters
// start a goroutine that never ends, which the leak check would report)
// for the test, and restores the package-global setting after it.
func nilSaramaMetrics(t *testing.T) {
	prev := metrics.UseNilMetrics
	metrics.UseNilMetrics = true
	t.Cleanup(func() { metrics.UseNilMetrics = prev })
}

// TestKafkaSarama: Sarama (default protocol version 2.8, as its users run
// it) produces with acks=all and consumes in a consumer group with the
// range assignor, marking offsets; a second session of the group finds
// nothing left to read.
func TestKafkaSarama(t *testing.T) {
	nilSaramaMetrics(t)
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
	var claims []map[string][]int32 // each session's assignment
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
		h := &saramaHandler{onSetup: func(s sarama.ConsumerGroupSession) {
			mu.Lock()
			claims = append(claims, s.Claims())
			mu.Unlock()
		}, onMsg: func(m *sarama.ConsumerMessage) {
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
	first := len(claims)
	consume(0) // a new session resumes at the committed offsets
	for v, c := range seen {
		if c != 1 {
			t.Fatalf("record %s read again (%d times) by the second session: offsets were not committed", v, c)
		}
	}
	// The second session really was a member with every partition (and
	// so read nothing because nothing was left, not because it had none).
	if first == 0 || len(claims) == first {
		t.Fatalf("sessions: %d before, %d after the second consume", first, len(claims))
	}
	for _, c := range claims[first:] {
		if ps := c["sar"]; !slices.Equal(slices.Sorted(slices.Values(ps)), []int32{0, 1, 2}) {
			t.Fatalf("second session's assignment %v, want sar partitions 0-2", c)
		}
	}
}

type saramaHandler struct {
	onSetup func(sarama.ConsumerGroupSession) // nil: nothing
	onMsg   func(*sarama.ConsumerMessage)
}

func (h *saramaHandler) Setup(s sarama.ConsumerGroupSession) error {
	if h.onSetup != nil {
		h.onSetup(s)
	}
	return nil
}

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

	// Two members split the partitions (range). They join before anything
	// is produced and the records flow only once the group is stable, so
	// no rebalance can hand a delivered but uncommitted record to the
	// other member: each record is read exactly once. (Redelivery across
	// rebalances is judged against commits in the churn and mixed-group
	// tests.)
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	members := []string{"segmentio-a", "segmentio-b"}
	for _, name := range members {
		r := kafkago.NewReader(kafkago.ReaderConfig{
			Brokers: []string{d.kafkaAddr()}, GroupID: "segmentio-group", Topic: "kgo-seg",
			GroupBalancers: []kafkago.GroupBalancer{kafkago.RangeGroupBalancer{}}, StartOffset: kafkago.FirstOffset,
			MaxWait: 200 * time.Millisecond, HeartbeatInterval: 500 * time.Millisecond, SessionTimeout: 6 * time.Second,
			RebalanceTimeout: 5 * time.Second, Dialer: &kafkago.Dialer{ClientID: name, Timeout: 10 * time.Second},
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
	d.waitGroupStable(ctx, t, "segmentio-group", "range", members, func(string, int32) int { return 1 })

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

// sinceStable counts a member's records from the first time it is asked
// about a generation on: for clients that cannot tell their generation,
// "consumed after the group settled in it".
func sinceStable(got *deliveries) func(member string, gen int32) int {
	var mu sync.Mutex
	base := map[int32]map[string]int{}
	return func(member string, gen int32) int {
		mu.Lock()
		defer mu.Unlock()
		if base[gen] == nil {
			base[gen] = map[string]int{}
		}
		b, ok := base[gen][member]
		if !ok {
			b = got.of(member)
			base[gen][member] = b
		}
		return got.of(member) - b
	}
}

// stopper ends one member of a mixed group.
type stopper func()

func startSaramaMember(ctx context.Context, t *testing.T, d *daemon, group, topic, name string, got *deliveries) stopper {
	cfg := sarama.NewConfig()
	cfg.ClientID = name
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Interval = 100 * time.Millisecond
	cfg.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyRange()}
	cfg.Consumer.Group.Heartbeat.Interval = 300 * time.Millisecond
	cfg.Consumer.Group.Session.Timeout = 6 * time.Second
	cfg.Consumer.Group.Rebalance.Timeout = 10 * time.Second
	grp, err := sarama.NewConsumerGroup([]string{d.kafkaAddr()}, group, cfg)
	if err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	h := &saramaHandler{onMsg: func(m *sarama.ConsumerMessage) {
		got.got(name, -1, []recordAt{{m.Partition, m.Offset}}, []string{string(m.Value)})
	}}
	go func() {
		defer close(done)
		for mctx.Err() == nil {
			if err := grp.Consume(mctx, []string{topic}, h); err != nil && mctx.Err() == nil {
				t.Errorf("%s: consume: %v", name, err)
				return
			}
		}
	}()
	return func() {
		cancel()
		<-done
		if err := grp.Close(); err != nil { // commits what was marked and leaves
			t.Errorf("%s: close: %v", name, err)
		}
	}
}

func startKafkaGoMember(ctx context.Context, t *testing.T, d *daemon, group, topic, name string, got *deliveries) stopper {
	r := kafkago.NewReader(kafkago.ReaderConfig{
		Brokers: []string{d.kafkaAddr()}, GroupID: group, Topic: topic,
		GroupBalancers: []kafkago.GroupBalancer{kafkago.RangeGroupBalancer{}}, StartOffset: kafkago.FirstOffset,
		MaxWait: 200 * time.Millisecond, HeartbeatInterval: 300 * time.Millisecond, SessionTimeout: 6 * time.Second,
		RebalanceTimeout: 5 * time.Second, Dialer: &kafkago.Dialer{ClientID: name, Timeout: 10 * time.Second},
	})
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			msg, err := r.FetchMessage(mctx)
			if err != nil {
				return
			}
			got.got(name, -1, []recordAt{{int32(msg.Partition), msg.Offset}}, []string{string(msg.Value)})
			// A commit that fails (its generation ended in a rebalance)
			// leaves the record to be redelivered: at least once.
			r.CommitMessages(mctx, msg)
		}
	}()
	return func() {
		cancel()
		<-done
		if err := r.Close(); err != nil { // leaves the group
			t.Errorf("%s: close: %v", name, err)
		}
	}
}

func startKcatMember(ctx context.Context, t *testing.T, d *daemon, group, topic, name string, got *deliveries) stopper {
	kcat := testkit.NeedTool(t, "kcat", "kcat")
	cmd := exec.CommandContext(ctx, kcat, "-b", d.kafkaAddr(), "-G", group, "-u", "-q", "-f", "%p %o %s\n",
		"-X", "partition.assignment.strategy=range", "-X", "auto.offset.reset=earliest", "-X", "client.id="+name,
		"-X", "auto.commit.interval.ms=100", "-X", "heartbeat.interval.ms=300", "-X", "session.timeout.ms=6000", topic)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var p int32
			var o int64
			var v string
			if n, _ := fmt.Sscanf(sc.Text(), "%d %d %s", &p, &o, &v); n != 3 {
				t.Errorf("%s: unexpected line %q", name, sc.Text())
				continue
			}
			got.got(name, -1, []recordAt{{p, o}}, []string{v})
		}
	}()
	return func() {
		cmd.Process.Signal(os.Interrupt) // kcat commits and leaves the group
		<-done
		if err := cmd.Wait(); err != nil && ctx.Err() == nil {
			t.Errorf("%s: %v\n%s", name, err, stderr.String())
		}
	}
}

// TestKafkaMixedGroup: Sarama, kafka-go, kcat (librdkafka) and franz-go
// (with its range balancer) are members of one consumer group on the
// range protocol, whichever of them leads. Records flow the whole time;
// members join and leave one at a time, and after each change the group
// settles with every member consuming before the next. At the end every
// record has been consumed: none lost. (Their commit disciplines differ —
// Sarama and kcat commit on a timer — so a record may be redelivered
// after a rebalance; only losses are asserted here.)
func TestKafkaMixedGroup(t *testing.T) {
	nilSaramaMetrics(t)
	d := startDaemon(t, "", "")
	d.createTopic(t, "mix", 6)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	stopFlow := make(chan struct{})
	produced := flow(ctx, t, d.kgoClient(t, kgo.DefaultProduceTopic("mix")), stopFlow)
	got := newDeliveries()
	settle := func(names ...string) int32 {
		t.Helper()
		return d.waitGroupStable(ctx, t, "mixed", "range", names, sinceStable(got))
	}

	sar := startSaramaMember(ctx, t, d, "mixed", "mix", "sarama-m", got)
	seg := startKafkaGoMember(ctx, t, d, "mixed", "mix", "kafkago-m", got)
	kg := startKgoMember(ctx, t, d, "mixed", "mix", "kgo-m", got, kgo.Balancers(kgo.RangeBalancer()))
	gens := []int32{settle("sarama-m", "kafkago-m", "kgo-m")}
	kc := startKcatMember(ctx, t, d, "mixed", "mix", "kcat-m", got)
	gens = append(gens, settle("sarama-m", "kafkago-m", "kgo-m", "kcat-m"))
	sar()
	gens = append(gens, settle("kafkago-m", "kgo-m", "kcat-m"))
	seg()
	gens = append(gens, settle("kgo-m", "kcat-m"))
	sar2 := startSaramaMember(ctx, t, d, "mixed", "mix", "sarama-m2", got)
	gens = append(gens, settle("kgo-m", "kcat-m", "sarama-m2"))
	close(stopFlow)
	n := <-produced
	ends := d.waitCommittedToEnd(ctx, t, "mixed", 6)
	kc()
	kg.stop()
	sar2()

	var end int64
	for _, e := range ends {
		end += e
	}
	if end != int64(n) {
		t.Fatalf("the partitions end at %d records in total, %d were produced", end, n)
	}
	redelivered := got.check(t, ends, false)
	if v := got.distinctValues(); v != n {
		t.Fatalf("%d distinct records consumed, %d produced", v, n)
	}
	t.Logf("%d records through generations %v, %d redelivered", n, gens, redelivered)
}

// TestKafkaGroupNoCommonProtocol: a member whose assignors the group does
// not share is refused with INCONSISTENT_GROUP_PROTOCOL: franz-go with
// its default (cooperative-sticky only) holds the group, Sarama (range)
// tries to join.
func TestKafkaGroupNoCommonProtocol(t *testing.T) {
	nilSaramaMetrics(t)
	d := startDaemon(t, "", "")
	d.createTopic(t, "clash", 2)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	got := newDeliveries()
	stopFlow := make(chan struct{})
	produced := flow(ctx, t, d.kgoClient(t, kgo.DefaultProduceTopic("clash")), stopFlow)
	defer func() { close(stopFlow); <-produced }()
	kg := startKgoMember(ctx, t, d, "clash-g", "clash", "holder", got)
	defer kg.stop()
	d.waitGroupStable(ctx, t, "clash-g", "cooperative-sticky", []string{"holder"}, got.inGeneration)

	cfg := sarama.NewConfig()
	cfg.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyRange()}
	grp, err := sarama.NewConsumerGroup([]string{d.kafkaAddr()}, "clash-g", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer grp.Close()
	err = grp.Consume(ctx, []string{"clash"}, &saramaHandler{onMsg: func(*sarama.ConsumerMessage) {}})
	if !errors.Is(err, sarama.ErrInconsistentGroupProtocol) {
		t.Fatalf("joining with no protocol in common: %v, want INCONSISTENT_GROUP_PROTOCOL", err)
	}
	if g, _ := d.groupState("clash-g"); len(g.Members) != 1 || g.Members[0].ClientID != "holder" || g.State != "Stable" {
		t.Fatalf("the group after the refused join: %+v", g)
	}
}
