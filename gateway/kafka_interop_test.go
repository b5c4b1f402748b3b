package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
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

// TestKafkaGroupChurnKgo: three franz-go group members join and leave
// while records flow; each commits what it processed before giving up
// partitions. Every record is consumed exactly once.
func TestKafkaGroupChurnKgo(t *testing.T) {
	d := startDaemon(t, "", "")
	d.createTopic(t, "churn", 6)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	const total = 6000
	prod := d.kgoClient(t, kgo.DefaultProduceTopic("churn"))
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := 0; i < total; i++ {
			prod.Produce(ctx, &kgo.Record{Key: []byte("k" + strconv.Itoa(i%50)), Value: []byte(strconv.Itoa(i))}, nil)
			if i%200 == 0 {
				time.Sleep(20 * time.Millisecond) // records keep flowing while members come and go
			}
		}
		prod.Flush(ctx)
	}()

	var mu sync.Mutex
	seen := map[string]string{} // value → member that processed it
	dups := 0
	member := func(name string, stop <-chan struct{}, done chan<- struct{}) {
		defer close(done)
		cl, err := kgo.NewClient(kgo.SeedBrokers(d.kafkaAddr()), kgo.ConsumerGroup("churners"), kgo.ConsumeTopics("churn"),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll(),
			kgo.FetchMaxWait(100*time.Millisecond), kgo.SessionTimeout(6*time.Second), kgo.ClientID(name))
		if err != nil {
			t.Error(err)
			return
		}
		defer cl.Close() // leaves the group
		for {
			select {
			case <-stop:
				return
			default:
			}
			pctx, pcancel := context.WithTimeout(ctx, 300*time.Millisecond)
			fs := cl.PollFetches(pctx)
			pcancel()
			mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				if prev, ok := seen[string(r.Value)]; ok {
					dups++
					t.Errorf("record %s consumed by %s and again by %s", r.Value, prev, name)
				}
				seen[string(r.Value)] = name
			})
			mu.Unlock()
			if err := cl.CommitUncommittedOffsets(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("%s: commit: %v", name, err)
			}
			cl.AllowRebalance()
		}
	}
	type m struct{ stop, done chan struct{} }
	start := func(name string) m {
		x := m{make(chan struct{}), make(chan struct{})}
		go member(name, x.stop, x.done)
		return x
	}
	stopM := func(x m) { close(x.stop); <-x.done }

	a, b, c := start("a"), start("b"), start("c")
	time.Sleep(1500 * time.Millisecond)
	stopM(a) // leaves mid-stream
	time.Sleep(1000 * time.Millisecond)
	a2 := start("a2")
	time.Sleep(1000 * time.Millisecond)
	stopM(b)
	<-produced
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n >= total || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopM(c)
	stopM(a2)
	if len(seen) != total || dups != 0 {
		t.Fatalf("consumed %d distinct of %d records, %d twice", len(seen), total, dups)
	}
	// The group's committed offsets cover every record.
	var g groupJSON
	d.api("GET", "/api/v1/groups/churners", nil, &g)
	var lag int64
	for _, o := range g.Offsets {
		lag += o.Lag
	}
	if len(g.Offsets) != 6 || lag != 0 {
		t.Fatalf("group offsets %+v: want 6 partitions with lag 0", g.Offsets)
	}
	if v := d.metric(`ferry_kafka_group_lag{group="churners",partition="0",topic="churn"}`); v != 0 {
		t.Fatalf("lag metric %v", v)
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
