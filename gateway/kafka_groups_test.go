package main

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Consumer-group interop: the bookkeeping of what members consumed and
// committed, the waits for a group to settle, and the franz-go churn test
// (the mixed-client group is in kafka_clients_test.go).

// deliveries is what a test's consumers received, on one clock with the
// commits they made, so redeliveries can be judged against the commits
// that preceded them.
type deliveries struct {
	mu       sync.Mutex
	clock    int64                    // guarded by mu: orders deliveries and commits
	byRecord map[recordAt][]delivered // guarded by mu
	commits  map[int32][]committed    // guarded by mu: per partition, in clock order
	byMember map[string]map[int32]int // guarded by mu: member → generation → records
	total    map[string]int           // guarded by mu: member → records
	values   map[string]struct{}      // guarded by mu: distinct values seen
}

type recordAt struct {
	partition int32
	offset    int64
}

type delivered struct {
	member string
	gen    int32     // the member's generation when it polled (-1: not known)
	at     int64     // clock when the poll returned it
	when   time.Time // for the failure message
}

type committed struct {
	member string
	offset int64 // the next offset to consume
	at     int64 // clock once the coordinator acknowledged it
}

func newDeliveries() *deliveries {
	return &deliveries{byRecord: map[recordAt][]delivered{}, commits: map[int32][]committed{},
		byMember: map[string]map[int32]int{}, total: map[string]int{}, values: map[string]struct{}{}}
}

// got records one poll's records for member, in generation gen (-1: not
// known).
func (d *deliveries) got(member string, gen int32, recs []recordAt, values []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.clock++
	for _, r := range recs {
		d.byRecord[r] = append(d.byRecord[r], delivered{member, gen, d.clock, time.Now()})
	}
	for _, v := range values {
		d.values[v] = struct{}{}
	}
	if d.byMember[member] == nil {
		d.byMember[member] = map[int32]int{}
	}
	d.byMember[member][gen] += len(recs)
	d.total[member] += len(recs)
}

// acked records a commit the coordinator accepted.
func (d *deliveries) acked(member string, partition int32, offset int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.clock++
	d.commits[partition] = append(d.commits[partition], committed{member, offset, d.clock})
}

func (d *deliveries) inGeneration(member string, gen int32) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.byMember[member][gen]
}

func (d *deliveries) of(member string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.total[member]
}

func (d *deliveries) distinctValues() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.values)
}

// check asserts that every offset below each partition's end was
// delivered (nothing lost) and, with strict, that a record was delivered
// again only while its offset was not committed: a delivery of offset o
// after a commit of an offset above o (the consumer's next offset) is a
// record consumed twice. It returns the number of redeliveries.
func (d *deliveries) check(t *testing.T, ends map[int32]int64, strict bool) int {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	redelivered := 0
	for p, end := range ends {
		for off := int64(0); off < end; off++ {
			ds := d.byRecord[recordAt{p, off}]
			if len(ds) == 0 {
				t.Errorf("partition %d offset %d: never delivered (lost)", p, off)
				continue
			}
			for _, again := range ds[1:] {
				redelivered++
				if !strict {
					continue
				}
				for _, c := range d.commits[p] {
					if c.at < again.at && c.offset > off {
						t.Errorf("partition %d offset %d: delivered to %s (generation %d, %s) again after %s had committed %d (first delivery to %s, generation %d, %s)",
							p, off, again.member, again.gen, again.when.Format("15:04:05.000"), c.member, c.offset, ds[0].member, ds[0].gen, ds[0].when.Format("15:04:05.000"))
						break
					}
				}
			}
		}
	}
	if len(d.byRecord) == 0 {
		t.Errorf("nothing delivered")
	}
	return redelivered
}

// groupState reads a consumer group through the HTTP API.
func (d *daemon) groupState(name string) (groupJSON, bool) {
	var g groupJSON
	code := d.api("GET", "/api/v1/groups/"+name, nil, &g)
	return g, code == 200
}

// waitGroupStable waits until the group is Stable with exactly the members
// named (by client id), each with partitions assigned, under protocol (if
// not empty), and then until each of them has consumed records since:
// count(member, generation) is what it consumed in that generation, or
// since an earlier point when the client cannot tell its generation. It
// returns the generation. A deadline ends the test: the group never
// settled, or a member stopped receiving.
func (d *daemon) waitGroupStable(ctx context.Context, t *testing.T, group, protocol string, members []string,
	count func(member string, gen int32) int) int32 {
	t.Helper()
	want := append([]string(nil), members...)
	sort.Strings(want)
	var last groupJSON
	for {
		if ctx.Err() != nil {
			t.Fatalf("group %s never became stable with %v consuming: last seen %+v", group, want, last)
		}
		g, ok := d.groupState(group)
		last = g
		var ids []string
		assigned := true
		for _, m := range g.Members {
			ids = append(ids, m.ClientID)
			n := 0
			for _, ps := range m.Assigned {
				n += len(ps)
			}
			assigned = assigned && n > 0
		}
		sort.Strings(ids)
		if !ok || g.State != "Stable" || !slices.Equal(ids, want) || !assigned || (protocol != "" && g.Protocol != protocol) {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		for {
			if ctx.Err() != nil {
				t.Fatalf("group %s stable in generation %d, but not every member of %v consumed in it", group, g.Generation, want)
			}
			if now, ok := d.groupState(group); !ok || now.Generation != g.Generation || now.State != "Stable" {
				break // another rebalance: wait for it to settle
			}
			all := true
			for _, m := range want {
				all = all && count(m, g.Generation) > 0
			}
			if all {
				return g.Generation
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// flow produces numbered records into topic until stop is closed, then
// flushes; it returns the number acknowledged. Every produce must succeed.
func flow(ctx context.Context, t *testing.T, prod *kgo.Client, stop <-chan struct{}) <-chan int {
	out := make(chan int, 1)
	go func() {
		var acked atomic.Int64
		n := 0
		for {
			select {
			case <-stop:
				if err := prod.Flush(ctx); err != nil {
					t.Errorf("flush: %v", err)
				}
				out <- int(acked.Load())
				return
			default:
			}
			for range 10 {
				prod.Produce(ctx, &kgo.Record{Key: []byte("k" + strconv.Itoa(n%50)), Value: []byte(strconv.Itoa(n))}, func(_ *kgo.Record, err error) {
					if err != nil {
						t.Errorf("produce: %v", err)
						return
					}
					acked.Add(1)
				})
				n++
			}
			time.Sleep(5 * time.Millisecond) // about 2,000 records a second
		}
	}()
	return out
}

// waitCommittedToEnd waits until the group has committed every partition
// of topic up to its end, and returns the ends.
func (d *daemon) waitCommittedToEnd(ctx context.Context, t *testing.T, group string, partitions int) map[int32]int64 {
	t.Helper()
	for {
		g, _ := d.groupState(group)
		ends := map[int32]int64{}
		for _, o := range g.Offsets {
			if o.Lag == 0 && o.EndOffset > 0 {
				ends[o.Partition] = o.EndOffset
			}
		}
		if len(ends) == partitions {
			return ends
		}
		if ctx.Err() != nil {
			t.Fatalf("group %s did not commit to the end of every partition: %+v", group, g.Offsets)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kgoMember is a franz-go group member consuming at least once: commits
// are off, and after each poll it records the records, commits the
// offsets after them synchronously (recording what the coordinator
// acknowledged), and only then lets a rebalance proceed
// (BlockRebalanceOnPoll).
type kgoMember struct{ quit, done chan struct{} }

func startKgoMember(ctx context.Context, t *testing.T, d *daemon, group, topic, name string, got *deliveries, opts ...kgo.Opt) *kgoMember {
	m := &kgoMember{make(chan struct{}), make(chan struct{})}
	go func() {
		defer close(m.done)
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(d.kafkaAddr()), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll(),
			kgo.FetchMaxWait(100 * time.Millisecond), kgo.SessionTimeout(6 * time.Second), kgo.HeartbeatInterval(300 * time.Millisecond),
			kgo.ClientID(name)}, opts...)...)
		if err != nil {
			t.Error(err)
			return
		}
		defer cl.Close() // leaves the group
		for {
			select {
			case <-m.quit:
				return
			default:
			}
			pctx, pcancel := context.WithTimeout(ctx, 300*time.Millisecond)
			fs := cl.PollFetches(pctx)
			pcancel()
			_, gen := cl.GroupMetadata()
			var recs []recordAt
			var values []string
			fs.EachRecord(func(r *kgo.Record) {
				recs = append(recs, recordAt{r.Partition, r.Offset})
				values = append(values, string(r.Value))
			})
			got.got(name, gen, recs, values)
			cl.CommitOffsetsSync(ctx, cl.UncommittedOffsets(), func(_ *kgo.Client, req *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
				if err != nil {
					return // not acknowledged: the records may be redelivered
				}
				for ti, rt := range resp.Topics {
					for pi, rp := range rt.Partitions {
						if rp.ErrorCode == 0 {
							got.acked(name, rp.Partition, req.Topics[ti].Partitions[pi].Offset)
						}
					}
				}
			})
			cl.AllowRebalance()
		}
	}()
	return m
}

// stop leaves the group and waits for the member to finish.
func (m *kgoMember) stop() { close(m.quit); <-m.done }

// TestKafkaGroupChurnKgo: three franz-go members of one group join and
// leave one at a time while records keep flowing, from before the first
// member joins until the last change has settled.
//
// Each member consumes at least once (kgoMember). Asserted:
//
//   - after every membership change the group settles (Stable, the
//     expected members, each with partitions) and every member consumes
//     records in the new generation before the next change;
//   - nothing is lost: every offset of every partition, up to the end
//     the group finally committed, was delivered;
//   - nothing is consumed twice: a record may be delivered again (to its
//     new owner after a rebalance) only if no commit past its offset had
//     been acknowledged before that delivery — records fetched but not
//     yet committed when their partition moved are redelivered, as
//     at-least-once allows, and nothing else;
//   - the lag the HTTP API and the metrics report is 0.
func TestKafkaGroupChurnKgo(t *testing.T) {
	d := startDaemon(t, "", "")
	d.createTopic(t, "churn", 6)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()

	stopFlow := make(chan struct{})
	produced := flow(ctx, t, d.kgoClient(t, kgo.DefaultProduceTopic("churn")), stopFlow)
	got := newDeliveries()

	// The members' kgo logs (group sessions, assignments, offset fetches)
	// are kept and shown only if the test fails.
	var logs syncBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("franz-go logs of the members:\n%s", logs.String())
		}
	})
	start := func(name string) *kgoMember {
		return startKgoMember(ctx, t, d, "churners", "churn", name, got,
			kgo.WithLogger(kgo.BasicLogger(&logs, kgo.LogLevelInfo, func() string { return time.Now().Format("15:04:05.000 ") + name + " " })))
	}
	stop := func(m *kgoMember) { m.stop() }
	settle := func(names ...string) int32 {
		t.Helper()
		return d.waitGroupStable(ctx, t, "churners", "", names, got.inGeneration)
	}

	a, b, c := start("a"), start("b"), start("c")
	gens := []int32{settle("a", "b", "c")}
	stop(a) // leaves mid-stream
	gens = append(gens, settle("b", "c"))
	a2 := start("a2")
	gens = append(gens, settle("a2", "b", "c"))
	stop(b)
	gens = append(gens, settle("a2", "c"))
	b2 := start("b2")
	gens = append(gens, settle("a2", "b2", "c"))
	close(stopFlow) // the last change has settled: stop producing
	n := <-produced
	ends := d.waitCommittedToEnd(ctx, t, "churners", 6)
	stop(c)
	stop(a2)
	stop(b2)

	var end int64
	for _, e := range ends {
		end += e
	}
	if end != int64(n) {
		t.Fatalf("the partitions end at %d records in total, %d were produced", end, n)
	}
	redelivered := got.check(t, ends, true)
	if v := got.distinctValues(); v != n {
		t.Fatalf("%d distinct records delivered, %d produced", v, n)
	}
	t.Logf("%d records through generations %v; %d redelivered (fetched but not committed when their partition moved)", n, gens, redelivered)

	g, _ := d.groupState("churners")
	var lag int64
	for _, o := range g.Offsets {
		lag += o.Lag
	}
	if len(g.Offsets) != 6 || lag != 0 {
		t.Fatalf("group offsets %+v: want 6 partitions with lag 0", g.Offsets)
	}
	for p := range 6 {
		if v := d.metric(fmt.Sprintf(`ferry_kafka_group_lag{group="churners",partition="%d",topic="churn"}`, p)); v != 0 {
			t.Fatalf("lag metric of partition %d: %v", p, v)
		}
	}
}
