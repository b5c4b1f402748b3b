package kafka

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/bridge"
	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/state"
	"github.com/ferry-iot/ferry/broker/testkit"
)

// TestGatewayRestart: the engine and the edge (log and state store) are
// closed mid-drain and reopened from the same directory several times,
// with records arriving between runs. The upstream ends with every edge
// record exactly once. In the stale variant the local checkpoints are
// deleted between runs, so only the upstream's (committed in the same
// transactions as the records) can say where to resume.
func TestGatewayRestart(t *testing.T) {
	for _, stale := range []bool{false, true} {
		t.Run(map[bool]string{false: "local checkpoints", true: "stale local checkpoints"}[stale], func(t *testing.T) {
			c := cluster(t)
			dir := t.TempDir()
			e := newEdge(t, dir)
			const backlog = 15000
			e.produce("telemetry", 0, backlog, 100)
			total, acked, resumed := backlog, int64(0), 0
			for round := range 4 {
				tg := target(t, c.ListenAddrs(), ExactlyOnce)
				en := engineFor(t, e, tg, bridge.Config{MaxBatchBytes: 64 << 10})
				if stale && round > 0 {
					for _, p := range en.Status().Partitions {
						if p.Next != 0 {
							t.Fatalf("local checkpoint of %s/%d survived its deletion: %+v", p.Topic, p.Partition, p)
						}
					}
				}
				en.Start()
				if round == 3 {
					waitLag(t, en, 60*time.Second)
				} else {
					sent := int64(1000 + rand.IntN(2000))
					testkit.Eventually(t, 30*time.Second, func() bool { return en.Status().RecordsSent >= sent }, "progress")
				}
				st := en.Status()
				if err := en.Close(); err != nil {
					t.Fatal(err)
				}
				acked += st.RecordsSent
				if st.RecordsSent < 1000 && round < 3 {
					t.Fatalf("round %d: only %d records sent", round, st.RecordsSent)
				}
				if round == 3 {
					break
				}
				e.produce("telemetry", total, 500, 100) // ingest goes on while the bridge is down
				total += 500
				e.close()
				e = newEdge(t, dir)
				if stale {
					resumed += deleteCheckpoints(t, e.st, "kafka")
				}
			}
			u := readUpstream(t, c.ListenAddrs(), "site1.telemetry", total, 30*time.Second)
			u.check(t, e, "telemetry", false)
			e.close()
			if len(u.recs) != total || acked > int64(total) {
				t.Fatalf("upstream %d records, edge %d, acknowledged %d", len(u.recs), total, acked)
			}
			t.Logf("4 runs, %d records exactly once; %d acknowledged by the engines (the rest committed by a Send that Close abandoned); local checkpoints deleted: %d",
				total, acked, resumed)
		})
	}
}

// deleteCheckpoints removes bridge name's local checkpoints.
func deleteCheckpoints(t *testing.T, st *state.Store, name string) int {
	t.Helper()
	var keys [][]byte
	err := st.Scan([]byte("bridge/"+name+"\x00"), func(k, _ []byte) error {
		keys = append(keys, append([]byte(nil), k...))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := st.Delete(k); err != nil {
			t.Fatal(err)
		}
	}
	if len(keys) == 0 {
		t.Fatal("no local checkpoints to delete")
	}
	return len(keys)
}

// TestUpstreamRestart: the upstream cluster (kfake persisting to a
// directory) is shut down mid-drain and started again on the same port
// and directory, three times. The engine reconnects, resumes from the
// checkpoints the restarted cluster kept, and the upstream ends with every
// edge record exactly once.
func TestUpstreamRestart(t *testing.T) {
	t.Parallel() // mostly waiting out stall timeouts and backoffs
	dataDir := t.TempDir()
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(4), kfake.DataDir(dataDir)}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { c.Close() }()
	addrs := c.ListenAddrs()
	_, portStr, _ := strings.Cut(addrs[0], ":")
	port, _ := strconv.Atoi(portStr)

	e := newEdge(t, "")
	defer e.close()
	const backlog = 20000
	e.produce("telemetry", 0, backlog, 100)
	tg := target(t, addrs, ExactlyOnce)
	en := engineFor(t, e, tg, bridge.Config{StallTimeout: time.Second, MaxBatchBytes: 64 << 10})
	en.Start()
	defer en.Close()
	in := startIngest(e, backlog, 50, 100, 50*time.Millisecond)
	for round := range 3 {
		sent := en.Status().RecordsSent
		testkit.Eventually(t, 30*time.Second, func() bool { return en.Status().RecordsSent > sent+1000 }, "progress")
		before := en.Status()
		c.Close()
		testkit.Eventually(t, 30*time.Second, func() bool { return en.Status().Reconnects > before.Reconnects }, "the engine to notice")
		down := time.Duration(100+rand.IntN(400)) * time.Millisecond
		time.Sleep(down)
		if c, err = kfake.NewCluster(append(opts, kfake.Ports(port))...); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: upstream restarted with lag %d, down %v", round, before.Lag, down)
	}
	total := in.halt(t)
	waitLag(t, en, 60*time.Second)
	st := en.Status()
	if err := en.Close(); err != nil {
		t.Fatal(err)
	}
	u := readUpstream(t, addrs, "site1.telemetry", total, 30*time.Second)
	u.check(t, e, "telemetry", false)
	if len(u.recs) != total {
		t.Fatalf("upstream %d records, edge %d", len(u.recs), total)
	}
	t.Logf("3 upstream restarts, %d records exactly once, reconnects %d", total, st.Reconnects)
}

// Child process mode for TestSIGKILLMidTransaction (see TestMain).
const (
	childDirEnv     = "FERRY_BRIDGE_CHILD_DIR"
	childBrokersEnv = "FERRY_BRIDGE_CHILD_BROKERS"
)

// bridgeChild is a gateway reduced to its bridge: it opens the edge in
// $FERRY_BRIDGE_CHILD_DIR and drains it to $FERRY_BRIDGE_CHILD_BROKERS in
// small transactions, until it is killed.
func bridgeChild() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "bridge child:", err)
		return 1
	}
	dir := os.Getenv(childDirEnv)
	st, err := state.Open(filepath.Join(dir, "state"))
	if err != nil {
		return fail(err)
	}
	lg, err := commitlog.Open(filepath.Join(dir, "log"), commitlog.WithLogger(quiet()))
	if err != nil {
		return fail(err)
	}
	tg, err := New(Config{Brokers: strings.Split(os.Getenv(childBrokersEnv), ","), Topics: map[string]string{"telemetry": "site1.telemetry"},
		NodeID: "gw-test", Logger: quiet()})
	if err != nil {
		return fail(err)
	}
	en, err := bridge.New(bridge.Config{Name: "kafka", Topics: []string{"telemetry"}, MaxBatchBytes: 64 << 10,
		Backoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, Logger: quiet()}, lg, st, tg)
	if err != nil {
		return fail(err)
	}
	en.Start()
	fmt.Println("started")
	for {
		time.Sleep(time.Hour) // until SIGKILL
	}
}

// TestSIGKILLMidTransaction: a gateway process draining a large backlog
// in small transactions is killed with SIGKILL at random moments and
// restarted. The restarted process's InitProducerId fences the dead one's
// epoch and aborts its open transaction at once (no wait for the
// transaction timeout); in the end the upstream holds every edge record
// exactly once.
func TestSIGKILLMidTransaction(t *testing.T) {
	if testing.Short() {
		t.Skip("SIGKILL test: skipped in -short mode")
	}
	c := cluster(t)
	dir := t.TempDir()
	e := newEdge(t, dir)
	const total = 60000
	e.produce("telemetry", 0, total, 500)
	e.close()

	adm := kadm.NewClient(mustClient(t, c.ListenAddrs()))
	defer adm.Close()
	txn := func() kadm.DescribedTransaction {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d, err := adm.DescribeTransactions(ctx, "ferry-gw-test")
		if err != nil {
			t.Fatal(err)
		}
		return d["ferry-gw-test"]
	}

	// Each killed process commits its first transaction at once; the
	// cluster holds its later EndTxns for 2 s, so the kill comes while a
	// transaction with records upstream is open (the process asked to
	// commit, the cluster has not handled it). The next process's
	// InitProducerId fences that epoch and aborts the transaction; the
	// dead epoch's late EndTxn is then refused. A hold that ends before
	// any fence arrived (a very slow start) lets that commit through:
	// counted in late. Without the hold a backlog this size drains in a
	// few hundred milliseconds and leaves nothing in flight to kill. The
	// final run commits at full speed.
	var (
		slowCommits atomic.Bool
		endTxns     atomic.Int32 // EndTxn requests of the running process
		fences      atomic.Int32 // InitProducerId requests
		late        atomic.Int32 // holds that ended with no fence since they began
	)
	slowCommits.Store(true)
	c.ControlKey(int16(kmsg.InitProducerID), func(kmsg.Request) (kmsg.Response, error, bool) {
		fences.Add(1)
		return nil, nil, false
	})
	c.ControlKey(int16(kmsg.EndTxn), func(kmsg.Request) (kmsg.Response, error, bool) {
		if slowCommits.Load() && endTxns.Add(1) >= 2 {
			before := fences.Load()
			c.SleepControl(func() {
				time.Sleep(2 * time.Second)
				if fences.Load() == before {
					late.Add(1)
				}
			})
		}
		return nil, nil, false
	})

	kills, open := 0, 0
	var lastEpoch int16 = -1
	for kills < 5 || (open == 0 && kills < 15) {
		endTxns.Store(0)
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childDirEnv+"="+dir, childBrokersEnv+"="+strings.Join(c.ListenAddrs(), ","))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(out)
		if !lines.Scan() || lines.Text() != "started" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child did not start: %q\n%s", lines.Text(), stderr.String())
		}
		time.Sleep(time.Duration(100+rand.IntN(700)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		kills++
		if os.Getenv("FERRY_TEST_LOG") != "" {
			t.Logf("child %d stderr:\n%s", kills, stderr.String())
		}
		time.Sleep(30 * time.Millisecond) // an EndTxn the process wrote before it died reaches the cluster
		d := txn()
		if d.State == "Ongoing" && len(d.Topics["site1.telemetry"]) > 0 {
			open++ // killed with records of a transaction upstream, uncommitted
		}
		lastEpoch = d.ProducerEpoch
		t.Logf("kill %d: transaction %s (producer %d epoch %d, %d partitions)", kills, d.State, d.ProducerID, d.ProducerEpoch, len(d.Topics))
	}

	// The last run, in process: a fresh connect fences the killed
	// process's open transaction.
	slowCommits.Store(false)
	e = newEdge(t, dir)
	defer e.close()
	tg := target(t, c.ListenAddrs(), ExactlyOnce)
	en := engineFor(t, e, tg, bridge.Config{MaxBatchBytes: 1 << 20})
	start := time.Now()
	en.Start()
	testkit.Eventually(t, 30*time.Second, func() bool { return en.Status().RecordsSent > 0 }, "the first commit after the kills")
	first := time.Since(start)
	waitLag(t, en, 60*time.Second)
	if err := en.Close(); err != nil {
		t.Fatal(err)
	}
	if d := txn(); d.State == "Ongoing" || d.ProducerEpoch <= lastEpoch {
		t.Fatalf("after the final run: transaction %s epoch %d (killed epoch %d)", d.State, d.ProducerEpoch, lastEpoch)
	}
	u := readUpstream(t, c.ListenAddrs(), "site1.telemetry", total, 30*time.Second)
	u.check(t, e, "telemetry", false)
	if len(u.recs) != total {
		t.Fatalf("upstream %d records, edge %d", len(u.recs), total)
	}
	if open == 0 {
		t.Fatal("no kill landed inside a transaction")
	}
	commits, aborts := txnMarkers(t, c.ListenAddrs(), "site1.telemetry")
	if aborts < open-int(late.Load()) {
		t.Fatalf("%d transactions killed open (%d of them committed late, before any fence), only %d aborted upstream", open, late.Load(), aborts)
	}
	t.Logf("%d SIGKILLs, %d inside a transaction with records upstream (%d committed late); upstream transactions: %d committed, %d aborted (each restart's fence aborts the dead process's transaction); "+
		"final run's first commit %v after start (transaction timeout 2 min); %d records exactly once, the final run sent %d",
		kills, open, late.Load(), commits, aborts, first.Round(time.Millisecond), total, en.Status().RecordsSent)
}

func mustClient(t *testing.T, addrs []string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatal(err)
	}
	return cl
}
