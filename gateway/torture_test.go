package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferry-iot/ferry/bridge"
	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/testkit"
)

// tortureSteps is how many faults one run injects; TORTURE_STEPS and
// TORTURE_SEED override it and the seed (the seed is logged).
const tortureSteps = 10

// TestTorture runs the daemon binary (a child process) with its data on a
// small tmpfs and a bridge to an upstream Kafka cluster (kfake), while
// devices publish at QoS 1, and injects a bounded random mix of faults:
// SIGKILL and restart, full-disk spells, bit flips in stored batches, and
// steps of the wall clock. At the end: the daemon is up and healthy,
// every acknowledged record is readable — or lies in a batch a bit flip
// damaged and is reported unreadable by its exact offset — and the
// upstream holds every readable record.
func TestTorture(t *testing.T) {
	if testing.Short() {
		t.Skip("torture: skipped in -short mode")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TORTURE_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	steps := tortureSteps
	if s := os.Getenv("TORTURE_STEPS"); s != "" {
		steps, _ = strconv.Atoi(s)
	}
	t.Logf("seed %d (TORTURE_SEED=%d reproduces it), %d steps", seed, seed, steps)
	rng := rand.New(rand.NewPCG(seed, 7))

	dataDir := filepath.Join(t.TempDir(), "data")
	smallTmpfs(t, dataDir, 192<<20)
	up, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	clockFile := filepath.Join(t.TempDir(), "clock")
	if err := os.WriteFile(clockFile, []byte("0s"), 0o644); err != nil {
		t.Fatal(err)
	}
	const devices = 4
	mqttAddr, httpAddr := freePort(t), freePort(t)
	cfg := fmt.Sprintf(`data_dir: %s
mqtt: {listen: %q}
http: {listen: %q, admin_token: %s}
kafka: {listen: "127.0.0.1:0"}
log:
  min_free_ratio: 0
  topics:
    telemetry: {partitions: 2, segment_bytes: 16384}
bridges:
  kafka:
    brokers: [%q]
    topics: {telemetry: up.telemetry}
    backoff: 100ms
    max_backoff: 1s
    stall_timeout: 5s
logging: {level: warn}
devices:
%s`, dataDir, mqttAddr, httpAddr, adminToken, up.ListenAddrs()[0], seqDevices(devices))
	d := newChildDaemon(t, cfg, httpAddr, faultClockEnv+"="+clockFile)
	api := apiClient("http://" + httpAddr)
	pubs := startSeqPublishers(mqttAddr, devices, 2*time.Millisecond)

	// flipped records what a bit flip damaged: partition → offsets, and
	// the device/seq each held.
	flipped := map[int32]map[int64]string{}
	clock := time.Duration(0)
	counts := map[string]int{}
	for step := range steps {
		time.Sleep(time.Duration(300+rng.IntN(700)) * time.Millisecond)
		switch kind := []string{"sigkill", "disk_full", "bit_flip", "clock_step"}[rng.IntN(4)]; kind {
		case "sigkill":
			d.kill()
			d.start()
			counts[kind]++
		case "disk_full":
			filler := filepath.Join(dataDir, "filler.bin")
			fillFile(t, filler)
			time.Sleep(time.Duration(500+rng.IntN(1500)) * time.Millisecond)
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			counts[kind]++
		case "bit_flip":
			if part, offs, ok := flipSealedBatch(t, filepath.Join(dataDir, "log", "telemetry"), rng); ok {
				if flipped[part] == nil {
					flipped[part] = map[int64]string{}
				}
				for off, id := range offs {
					flipped[part][off] = id
				}
				counts[kind]++
			}
		case "clock_step":
			clock = []time.Duration{30 * 24 * time.Hour, -3 * 365 * 24 * time.Hour, 0}[rng.IntN(3)]
			if err := os.WriteFile(clockFile, []byte(clock.String()), 0o644); err != nil {
				t.Fatal(err)
			}
			counts[kind]++
		}
		t.Logf("step %d done", step)
	}
	time.Sleep(time.Second)
	pubs.halt()
	acked := pubs.acked
	t.Logf("faults injected: %v; acknowledged per device: %d %d %d %d", counts, len(acked[0]), len(acked[1]), len(acked[2]), len(acked[3]))

	// The daemon is up, and healthy once any full-disk spell is over.
	testkit.Eventually(t, 30*time.Second, func() bool { code, _ := api("GET", "/healthz"); return code == 200 }, "a healthy daemon")

	// Every acknowledged record is readable, or in a flipped batch.
	type rec struct {
		part int32
		off  int64
	}
	readable := map[string]rec{}
	for _, r := range topicRecords(t, "telemetry", func(path string) (int, []byte) { return api("GET", path) }) {
		if id := seqID(r.Value); id != "" {
			readable[id] = rec{r.Partition, r.Offset}
		}
	}
	inFlipped := map[string]bool{}
	for _, offs := range flipped {
		for _, id := range offs {
			inFlipped[id] = true
		}
	}
	// The damage /healthz reports, by exact offsets.
	_, body := api("GET", "/healthz")
	reported := damagedOffsets(string(body))
	for part, offs := range flipped {
		for off := range offs {
			if !reported[part][off] {
				// A flip in a batch the daemon has not read since its last
				// restart is found by the next read: the records read above.
				t.Errorf("telemetry/%d offset %d was flipped but is not reported damaged (report %v)", part, off, reported)
			}
		}
	}
	lost := 0
	for d := range devices {
		for seq := range acked[d] {
			id := fmt.Sprintf("%d/%d", d, seq)
			if _, ok := readable[id]; ok {
				continue
			}
			if !inFlipped[id] {
				lost++
				if lost < 10 {
					t.Errorf("acknowledged record device %d seq %d is neither readable nor in a damaged batch", d, seq)
				}
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d acknowledged records lost", lost)
	}

	// The upstream is complete: every readable record is there.
	testkit.Eventually(t, 60*time.Second, func() bool {
		var st struct {
			Bridges []bridge.Status `json:"bridges"`
		}
		_, b := api("GET", "/api/v1/bridges")
		return json.Unmarshal(b, &st) == nil && len(st.Bridges) == 1 && st.Bridges[0].Lag == 0
	}, "the bridge caught up")
	cl, err := kgo.NewClient(kgo.SeedBrokers(up.ListenAddrs()...), kgo.ConsumeTopics("up.telemetry"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	upstream := map[string]bool{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for ctx.Err() == nil && len(upstream) < len(readable) {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			if id := seqID(r.Value); id != "" {
				upstream[id] = true
			}
		})
	}
	missing := 0
	for id := range readable {
		if !upstream[id] {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d readable records are not upstream", missing, len(readable))
	}
	t.Logf("%d records readable and upstream; %d in flipped batches", len(readable), len(inFlipped))
}

// apiClient returns a function making authorized API calls.
func apiClient(base string) func(method, path string) (int, []byte) {
	return func(method, path string) (int, []byte) {
		req, err := http.NewRequest(method, base+path, nil)
		if err != nil {
			return 0, nil
		}
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
}

var offsetsRe = regexp.MustCompile(`telemetry/(\d+): .*?offsets (\d+)\.\.(\d+) unreadable`)

// damagedOffsets reads the damage /healthz warnings report, by partition.
func damagedOffsets(health string) map[int32]map[int64]bool {
	out := map[int32]map[int64]bool{}
	for _, m := range offsetsRe.FindAllStringSubmatch(health, -1) {
		part, _ := strconv.Atoi(m[1])
		first, _ := strconv.ParseInt(m[2], 10, 64)
		last, _ := strconv.ParseInt(m[3], 10, 64)
		if out[int32(part)] == nil {
			out[int32(part)] = map[int64]bool{}
		}
		for o := first; o <= last; o++ {
			out[int32(part)][o] = true
		}
	}
	return out
}

// flipSealedBatch flips one bit inside the records of a random batch of a
// random sealed segment of the topic in dir, and returns the partition,
// the batch's offsets and the device/seq each held.
func flipSealedBatch(t *testing.T, dir string, rng *rand.Rand) (int32, map[int64]string, bool) {
	t.Helper()
	part := rng.IntN(2)
	logs, _ := filepath.Glob(filepath.Join(dir, strconv.Itoa(part), "*.log"))
	if len(logs) < 2 {
		return 0, nil, false // only the active segment so far
	}
	name := logs[rng.IntN(len(logs)-1)] // never the active (last) one
	b, err := os.ReadFile(name)
	if err != nil {
		return 0, nil, false
	}
	type batch struct {
		pos  int64
		data []byte
	}
	var batches []batch
	pos := int64(0)
	commitlog.SplitBatches(b, func(h commitlog.BatchHeader, data []byte) error {
		batches = append(batches, batch{pos, data})
		pos += h.Size()
		return nil
	})
	if len(batches) == 0 {
		return 0, nil, false
	}
	victim := batches[rng.IntN(len(batches))]
	_, recs, err := commitlog.DecodeRecords(victim.data, commitlog.NewDecompressor(0))
	if err != nil {
		return 0, nil, false // damaged already
	}
	offs := map[int64]string{}
	for _, r := range recs {
		offs[r.Offset] = seqID(r.Value)
	}
	at := victim.pos + commitlog.BatchHeaderSize + int64(rng.IntN(len(victim.data)-commitlog.BatchHeaderSize))
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return 0, nil, false
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{b[at] ^ 1<<rng.IntN(8)}, at); err != nil {
		t.Fatal(err)
	}
	return int32(part), offs, true
}

// seqID is "device/seq" of a sequence publisher's record value
// ({"ts":..,"values":{"seq":N,"device":D}}), "" for anything else.
func seqID(value []byte) string {
	var v struct {
		Values struct {
			Seq    *int `json:"seq"`
			Device *int `json:"device"`
		} `json:"values"`
	}
	if json.Unmarshal(value, &v) != nil || v.Values.Seq == nil || v.Values.Device == nil {
		return ""
	}
	return fmt.Sprintf("%d/%d", *v.Values.Device, *v.Values.Seq)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
