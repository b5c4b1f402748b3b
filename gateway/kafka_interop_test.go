package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Interop tests of the Kafka listener against real clients: kcat
// (librdkafka), franz-go, Sarama and kafka-go (kafka_clients_test.go).

func (d *daemon) kafkaAddr() string { return d.KafkaAddr().String() }

func (d *daemon) kgoClient(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(d.kafkaAddr()), kgo.FetchMaxWait(250 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// createTopic creates a topic through the Kafka admin API.
func (d *daemon) createTopic(t *testing.T, name string, partitions int32) {
	t.Helper()
	adm := kadm.NewClient(d.kgoClient(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := adm.CreateTopic(ctx, partitions, 1, nil, name)
	if err != nil || resp.Err != nil {
		t.Fatalf("create topic %s: %v %v", name, err, resp.Err)
	}
}

func kcatRun(t *testing.T, ctx context.Context, stdin string, args ...string) string {
	t.Helper()
	kcat := needTool(t, "kcat", "kcat")
	cmd := exec.CommandContext(ctx, kcat, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("kcat %v: %v\n%s\n%s", args, err, out, stderr)
	}
	return string(out)
}

// TestKafkaKcat: kcat produces keyed records and consumes them in a
// balanced consumer group (-G); a second run of the group resumes after
// the committed offsets and sees only the new records.
func TestKafkaKcat(t *testing.T) {
	d := startDaemon(t, "", "")
	d.createTopic(t, "kc", 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b := d.kafkaAddr()

	var in strings.Builder
	for i := 0; i < 100; i++ {
		fmt.Fprintf(&in, "dev-%d:value-%d\n", i%5, i)
	}
	kcatRun(t, ctx, in.String(), "-b", b, "-P", "-t", "kc", "-K", ":", "-X", "acks=all")

	consume := func(n int) []string {
		out := kcatRun(t, ctx, "", "-b", b, "-G", "kcat-group", "-X", "auto.offset.reset=earliest", "-c", strconv.Itoa(n),
			"-f", "%k=%s\n", "-X", "auto.commit.interval.ms=100", "kc")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		sort.Strings(lines)
		return lines
	}
	got := consume(100)
	if len(got) != 100 {
		t.Fatalf("kcat -G read %d records, want 100", len(got))
	}
	for _, l := range got {
		k, v, _ := strings.Cut(l, "=")
		i, err := strconv.Atoi(strings.TrimPrefix(v, "value-"))
		if err != nil || k != fmt.Sprintf("dev-%d", i%5) {
			t.Fatalf("record %q: key and value do not match what was produced", l)
		}
	}
	var g groupJSON
	if code := d.api("GET", "/api/v1/groups/kcat-group", nil, &g); code != 200 {
		t.Fatalf("group API: %d", code)
	}
	var committed int64
	for _, o := range g.Offsets {
		committed += o.Offset
	}
	if committed != 100 {
		t.Fatalf("kcat committed %d offsets in total, want 100: %+v", committed, g.Offsets)
	}

	in.Reset()
	for i := 100; i < 110; i++ {
		fmt.Fprintf(&in, "dev-%d:value-%d\n", i%5, i)
	}
	kcatRun(t, ctx, in.String(), "-b", b, "-P", "-t", "kc", "-K", ":")
	again := consume(10)
	for _, l := range again {
		_, v, _ := strings.Cut(l, "=")
		if i, _ := strconv.Atoi(strings.TrimPrefix(v, "value-")); i < 100 {
			t.Fatalf("second run re-read %q: committed offsets were not used", l)
		}
	}
}

// TestKafkaMQTTToKcat: telemetry a ThingsBoard device publishes over MQTT
// is read by kcat from topic telemetry with its key and value intact.
func TestKafkaMQTTToKcat(t *testing.T) {
	d := startDaemon(t, "", "")
	c := connectDevice(t, d, "TOKEN1")
	publish(t, c, "v1/devices/me/telemetry", `{"ts":1700000000123,"values":{"temperature":21.5,"on":true}}`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := kcatRun(t, ctx, "", "-b", d.kafkaAddr(), "-C", "-t", "telemetry", "-o", "beginning", "-e", "-q",
		"-f", "%k\t%s\t%T\t%h\n")
	want := "boiler-1\t" + `{"ts":1700000000123,"values":{"temperature":21.5,"on":true}}` + "\t1700000000123\t"
	if !strings.Contains(out, want) {
		t.Fatalf("kcat output %q does not contain %q", out, want)
	}
}

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
	at     int64 // clock when the poll returned it
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
		d.byRecord[r] = append(d.byRecord[r], delivered{member, d.clock})
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
						t.Errorf("partition %d offset %d: delivered to %s again after %s had committed %d (first delivery to %s)",
							p, off, again.member, c.member, c.offset, ds[0].member)
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

	start := func(name string) *kgoMember { return startKgoMember(ctx, t, d, "churners", "churn", name, got) }
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

// TestKafkaOffsetsSurviveRestart: committed offsets are in the state
// store and survive a restart of the daemon.
func TestKafkaOffsetsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(t, dir, "")
	d.createTopic(t, "keep", 1)
	cl := d.kgoClient(t, kgo.DefaultProduceTopic("keep"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < 10; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	adm := kadm.NewClient(cl)
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: "keep", Partition: 0, At: 7, LeaderEpoch: -1})
	if err := adm.CommitAllOffsets(ctx, "keeper", offs); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	d.stop()

	d = startDaemon(t, dir, "")
	adm = kadm.NewClient(d.kgoClient(t))
	got, err := adm.FetchOffsets(ctx, "keeper")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := got.Lookup("keep", 0); !ok || o.At != 7 {
		t.Fatalf("after restart: committed %+v, want 7", o)
	}
}

// TestKafkaCommandsToDevice: device control as a Kafka workflow. kcat
// produces a command keyed by device into topic commands; the device (a
// paho ThingsBoard client) receives it as server-side RPC and answers; the
// answer is read back by kcat from rpc_responses, keyed by the device,
// with the command's offset in a header.
func TestKafkaCommandsToDevice(t *testing.T) {
	d := startDaemon(t, "", "")
	c := connectDevice(t, d, "TOKEN1")
	tok := c.Subscribe("v1/devices/me/rpc/request/+", 1, func(cl paho.Client, m paho.Message) {
		id := strings.TrimPrefix(m.Topic(), "v1/devices/me/rpc/request/")
		var req struct {
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
		}
		json.Unmarshal(m.Payload(), &req)
		cl.Publish("v1/devices/me/rpc/response/"+id, 1, false, fmt.Sprintf(`{"done":%q,"params":%s}`, req.Method, req.Params))
	})
	tok.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := d.kafkaAddr()
	kcatRun(t, ctx, "boiler-1|{\"method\":\"setGpio\",\"params\":{\"pin\":7}}\nboiler-1|{\"method\":\"reboot\"}\n",
		"-b", b, "-P", "-t", "commands", "-K", "|", "-H", "correlation=abc-1")
	var lines []string
	deadline := time.Now().Add(20 * time.Second)
	for len(lines) < 2 && time.Now().Before(deadline) {
		out := kcatRun(t, ctx, "", "-b", b, "-C", "-t", "rpc_responses", "-o", "beginning", "-e", "-q", "-f", "%k\t%s\t%h\n")
		lines = strings.Split(strings.TrimSpace(out), "\n")
		if lines[0] == "" {
			lines = nil
			time.Sleep(100 * time.Millisecond)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("rpc_responses: %q", lines)
	}
	for i, want := range []string{`"done":"setGpio","params":{"pin":7}`, `"done":"reboot"`} {
		parts := strings.SplitN(lines[i], "\t", 3)
		if len(parts) != 3 || parts[0] != "boiler-1" || !strings.Contains(parts[1], want) || !strings.Contains(parts[1], `"status":"ok"`) {
			t.Fatalf("response %d: %q", i, lines[i])
		}
		if !strings.Contains(parts[2], "ferry.request.offset="+strconv.Itoa(i)) || !strings.Contains(parts[2], "correlation=abc-1") {
			t.Fatalf("response %d headers: %q", i, parts[2])
		}
	}
}

// kafkaRoundTrip sends one request at its version over a new connection
// and decodes the answer (for requests a client library would not send
// as asked: unsupported versions, other APIs).
func kafkaRoundTrip(t *testing.T, addr string, req kmsg.Request) kmsg.Response {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(kmsg.NewRequestFormatter(kmsg.FormatterClientID("raw")).AppendRequest(nil, req, 1)); err != nil {
		t.Fatal(err)
	}
	var size [4]byte
	if _, err := io.ReadFull(c, size[:]); err != nil {
		t.Fatalf("%s: %v", kmsg.NameForKey(req.Key()), err)
	}
	b := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	resp := req.ResponseKind()
	b = b[4:] // correlation id
	if resp.IsFlexible() && req.Key() != kmsg.ApiVersions.Int16() {
		b = b[1:] // empty header tags
	}
	if err := resp.ReadFrom(b); err != nil {
		t.Fatalf("%s: decode: %v", kmsg.NameForKey(req.Key()), err)
	}
	return resp
}

// TestKafkaMetrics: after a known workload the Kafka metrics say what
// happened: ferry_kafka_groups by state, ferry_kafka_fetch_bytes_total
// to the byte, ferry_kafka_requests_total by API and error code.
func TestKafkaMetrics(t *testing.T) {
	d := startDaemon(t, "", "")
	d.createTopic(t, "met", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := d.kgoClient(t, kgo.DefaultProduceTopic("met"))
	for i := range 20 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if v := d.metric(`ferry_kafka_requests_total{api="CreateTopics",error="NONE"}`); v != 1 {
		t.Fatalf("CreateTopics answered %v times", v)
	}

	// One Fetch of everything: the fetch bytes are its record bytes.
	f := kmsg.NewPtrFetchRequest()
	f.Version, f.ReplicaID, f.MaxBytes, f.SessionEpoch = 11, -1, 1<<20, -1
	f.Topics = []kmsg.FetchRequestTopic{{Topic: "met", Partitions: []kmsg.FetchRequestTopicPartition{{Partition: 0, FetchOffset: 0, PartitionMaxBytes: 1 << 20, CurrentLeaderEpoch: -1}}}}
	fr := kafkaRoundTrip(t, d.kafkaAddr(), f).(*kmsg.FetchResponse)
	n := len(fr.Topics[0].Partitions[0].RecordBatches)
	if n == 0 {
		t.Fatal("fetched nothing")
	}
	if v := d.metric(`ferry_kafka_fetch_bytes_total{topic="met"}`); v != float64(n) {
		t.Fatalf("fetch bytes %v, the Fetch carried %d", v, n)
	}

	// Refusals, each counted with its error code.
	lo := kmsg.NewPtrListOffsetsRequest()
	lo.Version = 4
	lo.Topics = []kmsg.ListOffsetsRequestTopic{{Topic: "met", Partitions: []kmsg.ListOffsetsRequestTopicPartition{{Partition: 7, Timestamp: -1}}}}
	kafkaRoundTrip(t, d.kafkaAddr(), lo)
	dt := kmsg.NewPtrDeleteTopicsRequest()
	dt.Version, dt.TopicNames = 4, []string{"telemetry"} // written by the gateway: protected
	if r := kafkaRoundTrip(t, d.kafkaAddr(), dt).(*kmsg.DeleteTopicsResponse); r.Topics[0].ErrorCode != kerr.PolicyViolation.Code {
		t.Fatalf("deleting telemetry: error %d", r.Topics[0].ErrorCode)
	}
	dc := kmsg.NewPtrDescribeConfigsRequest() // not served
	dc.Version = 1
	dc.Resources = []kmsg.DescribeConfigsRequestResource{{ResourceType: kmsg.ConfigResourceTypeTopic, ResourceName: "met"}}
	kafkaRoundTrip(t, d.kafkaAddr(), dc)
	for line, want := range map[string]float64{
		`ferry_kafka_requests_total{api="ListOffsets",error="UNKNOWN_TOPIC_OR_PARTITION"}`: 1,
		`ferry_kafka_requests_total{api="DeleteTopics",error="POLICY_VIOLATION"}`:          1,
		`ferry_kafka_requests_total{api="Unknown",error="UNSUPPORTED_VERSION"}`:            1,
		`ferry_kafka_unsupported_total{api="DescribeConfigs"}`:                             1,
		`ferry_kafka_requests_total{api="Fetch",error="NONE"}`:                             1,
	} {
		if v := d.metric(line); v != want {
			t.Errorf("%s = %v, want %v", line, v, want)
		}
	}
	if _, err := d.Daemon.log.Topic("telemetry"); err != nil {
		t.Fatalf("telemetry deleted: %v", err)
	}

	// Groups by state: one member consuming (Stable), one group with
	// commits only (Empty); then the member leaves (both Empty).
	adm := kadm.NewClient(cl)
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: "met", Partition: 0, At: 5, LeaderEpoch: -1})
	if err := adm.CommitAllOffsets(ctx, "met-committer", offs); err != nil {
		t.Fatal(err)
	}
	cons := d.kgoClient(t, kgo.ConsumerGroup("met-g"), kgo.ConsumeTopics("met"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	for got := 0; got == 0; got = cons.PollFetches(ctx).NumRecords() {
		if ctx.Err() != nil {
			t.Fatal("the group member read nothing")
		}
	}
	if s, e := d.metric(`ferry_kafka_groups{state="Stable"}`), d.metric(`ferry_kafka_groups{state="Empty"}`); s != 1 || e != 1 {
		t.Fatalf("groups: %v Stable, %v Empty; want 1 and 1", s, e)
	}
	cons.Close() // leaves
	if e := d.metric(`ferry_kafka_groups{state="Empty"}`); e != 2 {
		t.Fatalf("after the member left: %v groups Empty, want 2", e)
	}
	if s, ok := d.metricValue(`ferry_kafka_groups{state="Stable"}`); ok {
		t.Fatalf("after the member left: %v groups Stable", s)
	}
}

// TestKafkaGroupsAPI: GET /api/v1/groups lists the consumer groups with
// their state and members; an unknown group is 404, and with the Kafka
// listener off the group routes are 404 too.
func TestKafkaGroupsAPI(t *testing.T) {
	d := startDaemon(t, "", "")
	d.createTopic(t, "api-g", 2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := d.kgoClient(t, kgo.DefaultProduceTopic("api-g"))
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	var list struct {
		Groups []groupJSON `json:"groups"`
	}
	if code := d.api("GET", "/api/v1/groups", nil, &list); code != 200 || len(list.Groups) != 0 {
		t.Fatalf("no groups yet: %d %+v", code, list)
	}
	cons := d.kgoClient(t, kgo.ConsumerGroup("listed"), kgo.ConsumeTopics("api-g"), kgo.ClientID("lister"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	for got := 0; got == 0; got = cons.PollFetches(ctx).NumRecords() {
		if ctx.Err() != nil {
			t.Fatal("the group member read nothing")
		}
	}
	if err := cons.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	if code := d.api("GET", "/api/v1/groups", nil, &list); code != 200 || len(list.Groups) != 1 {
		t.Fatalf("groups: %d %+v", code, list)
	}
	g := list.Groups[0]
	if g.Name != "listed" || g.State != "Stable" || g.ProtocolType != "consumer" || g.Protocol != "cooperative-sticky" ||
		len(g.Members) != 1 || g.Members[0].ClientID != "lister" || len(g.Members[0].Assigned["api-g"]) != 2 || g.Leader != g.Members[0].ID {
		t.Fatalf("listed group: %+v", g)
	}
	var one groupJSON
	if code := d.api("GET", "/api/v1/groups/listed", nil, &one); code != 200 || len(one.Offsets) == 0 {
		t.Fatalf("GET the group: %d %+v", code, one)
	}
	var e struct {
		Error string `json:"error"`
	}
	if code := d.api("GET", "/api/v1/groups/nope", nil, &e); code != 404 || !strings.Contains(e.Error, "nope") {
		t.Fatalf("unknown group: %d %+v", code, e)
	}

	off := startDaemonEnv(t, "", "", []string{"FERRY_KAFKA_LISTEN="})
	if off.KafkaAddr() != nil {
		t.Fatal("FERRY_KAFKA_LISTEN= left the listener on")
	}
	for _, path := range []string{"/api/v1/groups", "/api/v1/groups/listed"} {
		if code := off.api("GET", path, nil, nil); code != 404 {
			t.Fatalf("kafka off: GET %s: %d", path, code)
		}
	}
}

// TestKafkaAdvertised: kafka.advertised is the address Metadata hands
// clients.
func TestKafkaAdvertised(t *testing.T) {
	d := startDaemonEnv(t, "", "", []string{"FERRY_KAFKA_ADVERTISED=ferry.site.example:19092"})
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 9
	resp := kafkaRoundTrip(t, d.kafkaAddr(), md).(*kmsg.MetadataResponse)
	if len(resp.Brokers) != 1 || resp.Brokers[0].Host != "ferry.site.example" || resp.Brokers[0].Port != 19092 {
		t.Fatalf("metadata brokers: %+v", resp.Brokers)
	}
}
