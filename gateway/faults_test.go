package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/ferry-iot/ferry/broker/testkit"
)

// smallTmpfs mounts a tmpfs of size bytes at dir (created) for the test:
// a real filesystem that fills up. It needs root; outside CI the test is
// skipped without it.
func smallTmpfs(t *testing.T, dir string, size int64) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("cannot mount a tmpfs (root needed): %v %s", err, out)
		}
		t.Fatalf("mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
}

// fillFile writes name until the filesystem refuses (ENOSPC): another
// process filling the disk.
func fillFile(t *testing.T, name string) {
	t.Helper()
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			return
		}
	}
}

// seqPublisher publishes {"seq":N} at QoS 1 as one MQTT 3.1.1 device that
// reconnects (every 100 ms) whenever its connection is refused or lost,
// and remembers which sequence numbers were acknowledged.
type seqPublisher struct {
	t       *testing.T
	broker  string
	c       paho.Client
	next    int
	acked   map[int]bool
	refused int // publishes not acknowledged, and connects refused
}

func (p *seqPublisher) connect() bool {
	opts := paho.NewClientOptions().AddBroker(p.broker).SetClientID("seq-pub").SetUsername("TOKEN1").
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetProtocolVersion(4).SetCleanSession(true)
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		p.refused++
		return false
	}
	p.c = c
	return true
}

// publish sends the next number once; it reports whether it was acknowledged.
func (p *seqPublisher) publish() bool {
	if p.c == nil || !p.c.IsConnected() {
		if p.c != nil {
			p.c.Disconnect(0)
			p.c = nil
		}
		if !p.connect() {
			time.Sleep(100 * time.Millisecond)
			return false
		}
	}
	seq := p.next
	p.next++
	tok := p.c.Publish("v1/devices/me/telemetry", 1, false, fmt.Sprintf(`{"seq":%d}`, seq))
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil || !p.c.IsConnected() {
		p.refused++
		return false
	}
	// paho completes a QoS 1 token on the PUBACK alone.
	p.acked[seq] = true
	return true
}

func (p *seqPublisher) close() {
	if p.c != nil {
		p.c.Disconnect(100)
	}
}

// TestDiskFullSpellEndToEnd: another process fills the log's filesystem
// (a real tmpfs) for a while and frees it. While it is full, publishes are
// refused — the 3.1.1 device is closed and its reconnects refused with
// "server unavailable", no storm of publishes into the full disk — and
// /healthz says why; once space returns Ferry accepts again by itself: no
// partition turned read-only, no restart, and every acknowledged message
// is stored.
func TestDiskFullSpellEndToEnd(t *testing.T) {
	dataDir := t.TempDir()
	logDir := filepath.Join(dataDir, "log")
	smallTmpfs(t, logDir, 24<<20)
	d := startDaemon(t, dataDir, "")
	p := &seqPublisher{t: t, broker: d.broker(), acked: map[int]bool{}}
	defer p.close()
	for len(p.acked) < 100 {
		if !p.publish() && p.refused > 5 {
			t.Fatal("publishes refused before the disk filled")
		}
	}

	filler := filepath.Join(logDir, "filler.bin")
	fillFile(t, filler)
	before := len(p.acked)
	for i := 0; i < 400 && p.refused < 20; i++ {
		p.publish()
	}
	if p.refused < 20 {
		t.Fatalf("only %d refusals while the disk was full (%d acknowledged meanwhile)", p.refused, len(p.acked)-before)
	}
	var health map[string]any
	if code := d.api("GET", "/healthz", nil, &health); code != 503 || health["disk_full"] != true {
		t.Fatalf("healthz during the spell: %d %v", code, health)
	}
	if n := d.metric("ferry_log_disk_full"); n != 1 {
		t.Fatalf("ferry_log_disk_full %v during the spell", n)
	}

	if err := os.Remove(filler); err != nil { // the other process frees its space
		t.Fatal(err)
	}
	resumed := len(p.acked)
	testkit.Eventually(t, 30*time.Second, func() bool {
		p.publish()
		return len(p.acked) >= resumed+100
	}, "100 publishes acknowledged after space returned")

	if code := d.api("GET", "/healthz", nil, &health); code != 200 {
		t.Fatalf("healthz after the spell: %d %v", code, health)
	}
	for part := range 3 {
		if n := d.metric(fmt.Sprintf(`ferry_log_partition_failed{partition="%d",topic="telemetry"}`, part)); n != 0 {
			t.Fatalf("telemetry/%d turned read-only", part)
		}
	}
	if n := d.metric("ferry_log_disk_full_spells_total"); n < 1 {
		t.Fatalf("ferry_log_disk_full_spells_total %v", n)
	}
	stored := map[int]bool{}
	for _, r := range d.records("telemetry") {
		var v struct {
			Values struct {
				Seq *int `json:"seq"`
			} `json:"values"`
		}
		if err := json.Unmarshal(r.Value, &v); err == nil && v.Values.Seq != nil {
			stored[*v.Values.Seq] = true
		}
	}
	var lost []string
	for seq := range p.acked {
		if !stored[seq] {
			lost = append(lost, fmt.Sprint(seq))
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d acknowledged messages not stored: %s", len(lost), strings.Join(lost, ","))
	}
	t.Logf("%d acknowledged (%d before the spell, %d after), %d refusals during it", len(p.acked), before, len(p.acked)-resumed, p.refused)
}

// TestDamagedTopicSettingsDoNotStopTheGateway: the telemetry topic's
// settings file garbled, emptied or gone (the message log intact) is
// rebuilt, the gateway starts with every record still there and the
// configured settings, and /healthz says what was repaired.
func TestDamagedTopicSettingsDoNotStopTheGateway(t *testing.T) {
	for _, c := range []struct {
		name    string
		content []byte // nil: removed
	}{{"empty", []byte{}}, {"garbled", []byte("{\x00\x13garbage")}, {"missing", nil}} {
		t.Run(c.name, func(t *testing.T) {
			dataDir := t.TempDir()
			d := startDaemon(t, dataDir, "")
			dev := connectDevice(t, d, "TOKEN1")
			for i := range 20 {
				if tok := dev.Publish("v1/devices/me/telemetry", 1, false, fmt.Sprintf(`{"n":%d}`, i)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
					t.Fatalf("publish: %v", tok.Error())
				}
			}
			dev.Disconnect(100)
			d.stop()
			file := filepath.Join(dataDir, "log", "telemetry", "topic.json")
			if c.content == nil {
				if err := os.Remove(file); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(file, c.content, 0o644); err != nil {
				t.Fatal(err)
			}

			d = startDaemon(t, dataDir, "")
			if n := len(d.records("telemetry")); n != 20 {
				t.Fatalf("%d telemetry records after the settings were rebuilt, want 20", n)
			}
			var topic struct {
				Partitions []any `json:"partitions"`
			}
			if code := d.api("GET", "/api/v1/topics/telemetry", nil, &topic); code != 200 || len(topic.Partitions) != 3 {
				t.Fatalf("telemetry topic: %d, %d partitions (want the configured 3)", code, len(topic.Partitions))
			}
			var health struct {
				Status   string   `json:"status"`
				Warnings []string `json:"warnings"`
			}
			if code := d.api("GET", "/healthz", nil, &health); code != 200 || !strings.Contains(strings.Join(health.Warnings, "\n"), "rebuilt the settings of topic \"telemetry\"") {
				t.Fatalf("healthz: %d %+v", code, health)
			}
			if n := d.metric(`ferry_log_repairs_total{kind="metadata"}`); n != 1 {
				t.Fatalf("metadata repairs %v", n)
			}
		})
	}
}
