package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/broker/testkit"
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
	kcat := testkit.NeedTool(t, "kcat", "kcat")
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
