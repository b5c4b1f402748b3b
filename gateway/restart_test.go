package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

// TestRestartAfterSIGKILL publishes QoS 1 telemetry from several devices
// while the daemon (a child process) is killed with SIGKILL at random
// moments and restarted. Every data point that got a PUBACK must be in the
// log afterwards.
func TestRestartAfterSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("restart test: skipped in -short mode")
	}
	const devices = 8
	dataDir := t.TempDir()
	mqttAddr, httpAddr := freePort(t), freePort(t)
	var devs strings.Builder
	for i := 0; i < devices; i++ {
		fmt.Fprintf(&devs, "  - {name: dev-%d, token: T%d}\n", i, i)
	}
	cfgFile := filepath.Join(t.TempDir(), "ferry.yaml")
	cfg := fmt.Sprintf("data_dir: %s\nmqtt: {listen: %q}\nhttp: {listen: %q}\nkafka: {listen: \"127.0.0.1:0\"}\nlog: {min_free_ratio: 0}\nlogging: {level: warn}\ndevices:\n%s",
		dataDir, mqttAddr, httpAddr, devs.String())
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(t.TempDir(), "daemon.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()

	var mu sync.Mutex
	var cmd *exec.Cmd
	start := func() {
		c := exec.Command(os.Args[0], "-test.run=^$")
		c.Env = append(os.Environ(), "GATEWAY_E2E_DAEMON=1", "GATEWAY_E2E_ARGS=--config "+cfgFile)
		c.Stdout, c.Stderr = logFile, logFile
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(20 * time.Second); ; {
			if conn, err := net.DialTimeout("tcp", mqttAddr, 200*time.Millisecond); err == nil {
				conn.Close()
				break
			}
			if time.Now().After(deadline) {
				out, _ := os.ReadFile(logFile.Name())
				t.Fatalf("daemon did not come up:\n%s", out)
			}
			time.Sleep(20 * time.Millisecond)
		}
		mu.Lock()
		cmd = c
		mu.Unlock()
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if cmd != nil && cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	start()

	// Publishers: each device publishes seq 0, 1, 2, ... at QoS 1 and
	// records the seqs whose PUBACK arrived. After an error it reconnects
	// and goes on with the next seq (the failed one may or may not be
	// stored: at least once).
	stop := make(chan struct{})
	acked := make([][]int, devices)
	var wg sync.WaitGroup
	for i := 0; i < devices; i++ {
		wg.Go(func() {
			var c paho.Client
			seq := 0
			for {
				select {
				case <-stop:
					if c != nil {
						c.Disconnect(0)
					}
					return
				default:
				}
				if c == nil || !c.IsConnected() {
					opts := paho.NewClientOptions().AddBroker("tcp://" + mqttAddr).SetClientID(fmt.Sprintf("dev-%d", i)).
						SetUsername(fmt.Sprintf("T%d", i)).SetAutoReconnect(false).SetProtocolVersion(4).
						SetConnectTimeout(2 * time.Second).SetWriteTimeout(2 * time.Second)
					c = paho.NewClient(opts)
					if tok := c.Connect(); !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
						time.Sleep(50 * time.Millisecond)
						continue
					}
				}
				tok := c.Publish("v1/devices/me/telemetry", 1, false, fmt.Sprintf(`{"seq":%d,"device":%d}`, seq, i))
				if tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
					acked[i] = append(acked[i], seq)
				} else {
					c.Disconnect(0)
				}
				seq++
			}
		})
	}

	kills := 0
	for round := 0; round < 6; round++ {
		time.Sleep(time.Duration(200+rand.IntN(700)) * time.Millisecond)
		mu.Lock()
		c := cmd
		mu.Unlock()
		if err := c.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		c.Wait()
		kills++
		start()
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	mu.Lock()
	c := cmd
	mu.Unlock()
	if err := c.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(); err != nil {
		out, _ := os.ReadFile(logFile.Name())
		t.Fatalf("clean shutdown after the restarts failed: %v\n%s", err, out)
	}

	// Every acknowledged data point must be in the log.
	l, err := commitlog.Open(filepath.Join(dataDir, "log"), commitlog.WithMinFreeRatio(0))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	tp, err := l.Topic("telemetry")
	if err != nil {
		t.Fatal(err)
	}
	stored := map[[2]int]int{}
	for _, p := range tp.Partitions() {
		for off := p.StartOffset(); off < p.HighWatermark(); {
			recs, next, _, err := p.ReadRecords(off, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				var v struct {
					Values struct{ Seq, Device int } `json:"values"`
				}
				if err := json.Unmarshal(r.Value, &v); err != nil {
					t.Fatalf("record %s: %v", r.Value, err)
				}
				stored[[2]int{v.Values.Device, v.Values.Seq}]++
			}
			off = next
		}
	}
	total, dups := 0, 0
	for dev, seqs := range acked {
		for _, s := range seqs {
			total++
			if stored[[2]int{dev, s}] == 0 {
				t.Errorf("device %d seq %d was acknowledged but is not in the log", dev, s)
			}
		}
	}
	for _, n := range stored {
		if n > 1 {
			dups += n - 1
		}
	}
	if total < devices*10 {
		t.Fatalf("only %d publishes were acknowledged: the test did not exercise much", total)
	}
	t.Logf("%d kills; %d acknowledged data points all present; %d stored in all; %d duplicates (unacknowledged resends)", kills, total, len(stored), dups)
}
