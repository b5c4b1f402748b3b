package streams

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
	"github.com/ferry-iot/ferry/broker/testkit"
)

// The kill test's pipeline and input: 40 devices, a record every 1 ms of
// event time with up to 300 ms of disorder, one-second windows with 150 ms
// grace (so some records are late), and an alert.
const (
	killDevices = 40
	killRecords = 120000
	childEnv    = "FERRY_STREAMS_KILL_CHILD"
	kills       = 30
)

func killTopology(t testing.TB) *Topology {
	b := New("kill")
	s := b.Stream("telemetry")
	s.Aggregate(Tumbling(time.Second, 150*time.Millisecond), FieldAggs{"v": {Avg, Min, Max, Count, Last}}, OnWindowClose).
		To("kill_1s")
	s.Alert("high",
		func(r *Record) (bool, error) { v, _ := r.Number("v"); return int64(v)%97 > 80, nil },
		func(r *Record) (bool, error) { v, _ := r.Number("v"); return int64(v)%97 < 10, nil }).
		To("kill_alerts")
	top, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return top
}

// writeKillInput writes the same input into a new log at dir every time.
func writeKillInput(t *testing.T, dir string) {
	l := openLog(t, dir)
	defer l.Close()
	writeKillRecords(t, l)
}

func writeKillRecords(t *testing.T, l *commitlog.Log) { writeKillN(t, l, killRecords/raceScale) }

func writeKillN(t *testing.T, l *commitlog.Log, n int) {
	top, err := l.CreateTopic("telemetry", commitlog.TopicConfig{Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	var recs []commitlog.Record
	for i := range n {
		key := fmt.Sprintf("d%02d", i%killDevices)
		ts := t0 + int64(i) - rng.Int64N(300)
		recs = append(recs, commitlog.Record{Key: []byte(key), Timestamp: ts,
			Value: fmt.Appendf(nil, `{"ts":%d,"values":{"v":%d}}`, ts, i)})
		if len(recs) == 1000 {
			if _, err := top.Append(context.Background(), recs).Wait(context.Background()); err != nil {
				t.Fatal(err)
			}
			recs = recs[:0]
		}
	}
}

// TestKillChild is the pipeline process TestExactlyOnceAcrossKills kills;
// it runs only as that child.
func TestKillChild(t *testing.T) {
	dir := os.Getenv(childEnv)
	if dir == "" {
		t.Skip("the child of TestExactlyOnceAcrossKills")
	}
	l, err := commitlog.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(uint64(os.Getpid()), 1))
	task := NewTask(l, killTopology(t), Options{
		CommitInterval:  time.Duration(1+rng.IntN(20)) * time.Millisecond,
		MaxBatchRecords: 5 + rng.IntN(50), // many commits, so kills fall in every phase of one
	})
	go func() {
		for range time.Tick(5 * time.Millisecond) {
			s := task.Status()
			fmt.Printf("progress %d %d %s\n", s.RecordsIn, s.Commits, s.State)
		}
	}()
	task.Run(context.Background()) // until killed
}

// TestExactlyOnceAcrossKills runs a pipeline over a backlog in a child
// process and SIGKILLs it at random moments, 30 times, then lets it
// finish; every output must be there exactly once, the same as a run
// that was never interrupted produced.
func TestExactlyOnceAcrossKills(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("in the child")
	}
	killed, reference := t.TempDir(), t.TempDir()
	writeKillInput(t, killed)
	writeKillInput(t, reference)

	ref := openLog(t, reference)
	drained := drain(t, ref, killTopology(t))
	want := outputsOf(t, ref)
	ref.Close()
	if st := drained; st.RecordsIn != killRecords/raceScale {
		t.Fatalf("reference run read %d records", st.RecordsIn)
	}
	if len(want["kill_1s"]) < 1000/raceScale || len(want["kill.late"]) == 0 || len(want["kill_alerts"]) == 0 {
		t.Fatalf("reference run: %d windows, %d late, %d alerts: the input does not exercise the pipeline",
			len(want["kill_1s"]), len(want["kill.late"]), len(want["kill_alerts"]))
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	var progress []string
	midRun := 0
	for i := range kills {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKillChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), childEnv+"="+killed)
		var stdout testkit.SyncBuffer
		var stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Once it processes (restored from its changelog, reading), kill
		// it at a random moment; every fifth kill comes at a random moment
		// of its start instead.
		if i%5 != 4 {
			deadline := time.Now().Add(30 * time.Second)
			for !processing(stdout.String()) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		}
		time.Sleep(time.Duration(rng.IntN(200)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("kill %d: the child ended on its own (%v):\n%s", i, err, stderr.String())
		}
		var in, commits int64
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		fmt.Sscanf(lines[len(lines)-1], "progress %d %d", &in, &commits)
		if in > 0 {
			midRun++
		}
		progress = append(progress, fmt.Sprintf("%d/%d", in, commits))
	}
	t.Logf("records read / commits made by each killed child: %s", strings.Join(progress, " "))
	if midRun < 20 {
		t.Fatalf("only %d of %d kills came while the child was processing", midRun, kills)
	}

	l := openLog(t, killed)
	defer l.Close()
	st := drain(t, l, killTopology(t))
	got := outputsOf(t, l)
	for topic, w := range want {
		g := got[topic]
		if !slices.Equal(g, w) {
			t.Errorf("%s: %d outputs after %d kills, %d without; first difference: %s", topic, len(g), kills, len(w), firstDiff(g, w))
		}
	}
	t.Logf("after %d kills (%d mid-run): %d windows, %d late, %d alerts, each once; the final run read %d records",
		kills, midRun, len(got["kill_1s"]), len(got["kill.late"]), len(got["kill_alerts"]), st.RecordsIn)
}

// outputsOf is each output topic's records, described without the
// commit headers (which differ between runs) and sorted.
func outputsOf(t *testing.T, l *commitlog.Log) map[string][]string {
	out := map[string][]string{}
	for _, topic := range []string{"kill_1s", "kill.late", "kill_alerts"} {
		for _, o := range readTopic(t, l, topic) {
			var b strings.Builder
			fmt.Fprintf(&b, "%s@%d", o.key, o.ts)
			keys := make([]string, 0, len(o.values))
			for k := range o.values {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				v := o.values[k]
				fmt.Fprintf(&b, " %s=%s", k, v.AppendJSON(nil))
			}
			out[topic] = append(out[topic], b.String())
		}
		slices.Sort(out[topic])
	}
	return out
}

func firstDiff(got, want []string) string {
	if os.Getenv("FERRY_DEBUG_DIFF") != "" {
		gm, wm := map[string]int{}, map[string]int{}
		for _, g := range got {
			gm[g]++
		}
		for _, w := range want {
			wm[w]++
		}
		var extra, missing []string
		for k, n := range gm {
			if n > wm[k] {
				extra = append(extra, fmt.Sprintf("%dx %s", n-wm[k], k))
			}
		}
		for k, n := range wm {
			if n > gm[k] {
				missing = append(missing, fmt.Sprintf("%dx %s", n-gm[k], k))
			}
		}
		slices.Sort(extra)
		slices.Sort(missing)
		return fmt.Sprintf("extra %d: %v\nmissing %d: %v", len(extra), extra[:min(10, len(extra))], len(missing), missing[:min(10, len(missing))])
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("got %q, want %q", got[i], want[i])
		}
	}
	if len(got) > len(want) {
		return fmt.Sprintf("extra %q", got[len(want)])
	}
	if len(want) > len(got) {
		return fmt.Sprintf("missing %q", want[len(got)])
	}
	return "none"
}

// processing reports whether a child's progress lines show records read.
func processing(out string) bool {
	i := strings.LastIndex(strings.TrimSpace(out), "progress ")
	if i < 0 {
		return false
	}
	var in int64
	fmt.Sscanf(out[i:], "progress %d", &in)
	return in > 0
}

// TestExactlyOnceAcrossPowerCuts cuts the power under a running pipeline
// 20 times: the log lives on an in-memory filesystem whose crash image
// keeps only what was fsynced, plus torn remains of what was not; each
// run starts from the previous cut's image. The outputs must then be what
// an uninterrupted run writes, each once.
func TestExactlyOnceAcrossPowerCuts(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("in the child")
	}
	// Half the kill test's input: the in-memory filesystem is slower than
	// a disk under the race detector.
	const records = killRecords / 2 / raceScale
	ref := openLog(t, t.TempDir())
	writeKillN(t, ref, records)
	drain(t, ref, killTopology(t))
	want := outputsOf(t, ref)
	ref.Close()

	mem := vfs.NewMem()
	open := func() *commitlog.Log {
		l, err := commitlog.Open("/data", commitlog.WithFS(mem), commitlog.WithLogger(testLogger(t)))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	l := open()
	writeKillN(t, l, records)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5))
	var progress []string
	midRun := 0
	for range 20 {
		l := open()
		task := NewTask(l, killTopology(t), Options{CommitInterval: time.Duration(1+rng.IntN(20)) * time.Millisecond,
			MaxBatchRecords: 5 + rng.IntN(50), Logger: testLogger(t)})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { task.Run(ctx); close(done) }()
		testkit.Eventually(t, 30*time.Second, func() bool { return task.Status().RecordsIn > 0 || caughtUp(task) }, "the pipeline reads")
		time.Sleep(time.Duration(rng.IntN(25)) * time.Millisecond)
		cut := mem.CrashClone(vfs.CrashOptions{Rand: rng}) // the power goes here
		st := task.Status()
		if st.RecordsIn > 0 && !caughtUp(task) {
			midRun++
		}
		cancel()
		<-done
		_ = l.Close()
		mem = cut
		progress = append(progress, fmt.Sprintf("%d/%d", st.RecordsIn, st.Commits))
	}
	t.Logf("records read / commits made before each cut: %s", strings.Join(progress, " "))
	if midRun < 15 {
		t.Fatalf("only %d of 20 cuts came while the pipeline was processing", midRun)
	}
	l = open()
	defer l.Close()
	st := drain(t, l, killTopology(t))
	got := outputsOf(t, l)
	for topic, w := range want {
		if g := got[topic]; !slices.Equal(g, w) {
			t.Errorf("%s: %d outputs after 20 power cuts, %d without; %s", topic, len(g), len(w), firstDiff(g, w))
		}
	}
	t.Logf("after 20 power cuts: %d windows, %d late, %d alerts, each once; the final run read %d records",
		len(got["kill_1s"]), len(got["kill.late"]), len(got["kill_alerts"]), st.RecordsIn)
}

func caughtUp(task *Task) bool {
	s := task.Status()
	if len(s.Lag) == 0 {
		return false
	}
	for _, lag := range s.Lag {
		if lag > 0 {
			return false
		}
	}
	return true
}
