package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

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
	d := newChildDaemon(t, fmt.Sprintf("data_dir: %s\nmqtt: {listen: %q}\nhttp: {listen: %q}\nkafka: {listen: \"127.0.0.1:0\"}\nlog: {min_free_ratio: 0}\nlogging: {level: warn}\ndevices:\n%s",
		dataDir, mqttAddr, httpAddr, seqDevices(devices)), mqttAddr)

	// Publishers: each device publishes seq 0, 1, 2, ... at QoS 1 and
	// records the seqs whose PUBACK arrived. After an error it reconnects
	// and goes on with the next seq (the failed one may or may not be
	// stored: at least once).
	pubs := startSeqPublishers(mqttAddr, devices, 0)
	kills := 0
	for round := 0; round < 6; round++ {
		time.Sleep(time.Duration(200+rand.IntN(700)) * time.Millisecond)
		d.kill()
		kills++
		d.start()
	}
	time.Sleep(500 * time.Millisecond)
	pubs.halt()
	if err := d.shutdown(); err != nil {
		t.Fatalf("clean shutdown after the restarts failed: %v", err)
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
	for dev, seqs := range pubs.acked {
		for s := range seqs {
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
