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

// TestDamagedStateStoreDoesNotStopTheGateway: a state store badger cannot
// open — a garbled table, which panics badger in a goroutine of its own, or
// a garbled MANIFEST — is moved aside (kept) and started anew; the gateway
// starts, its config-listed devices connect, and /healthz says what
// happened.
func TestDamagedStateStoreDoesNotStopTheGateway(t *testing.T) {
	for _, damage := range []string{"table", "manifest"} {
		t.Run(damage, func(t *testing.T) {
			dataDir := t.TempDir()
			d := startDaemon(t, dataDir, "")
			dev := connectDevice(t, d, "TOKEN1")
			for i := range 50 {
				if tok := dev.Publish("v1/devices/me/attributes", 1, false, fmt.Sprintf(`{"a%d":%d}`, i, i)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
					t.Fatalf("attributes: %v", tok.Error())
				}
			}
			dev.Disconnect(100)
			d.stop() // badger writes its memtable as a table on close
			stateDir := filepath.Join(dataDir, "state")
			switch damage {
			case "table":
				tables, _ := filepath.Glob(filepath.Join(stateDir, "*.sst"))
				if len(tables) == 0 {
					t.Fatal("no table to damage")
				}
				for _, name := range tables {
					f, err := os.OpenFile(name, os.O_RDWR, 0)
					if err != nil {
						t.Fatal(err)
					}
					fi, _ := f.Stat()
					f.WriteAt([]byte{0xff, 0xff, 0xff, 0x7f}, fi.Size()-4)
					f.Close()
				}
			case "manifest":
				if err := os.WriteFile(filepath.Join(stateDir, "MANIFEST"), []byte("garbage!"), 0o600); err != nil {
					t.Fatal(err)
				}
			}

			d = startDaemon(t, dataDir, "")
			connectDevice(t, d, "TOKEN1").Disconnect(100) // registered again from the configuration
			var health struct {
				Warnings []string `json:"warnings"`
			}
			d.api("GET", "/healthz", nil, &health)
			if !strings.Contains(strings.Join(health.Warnings, "\n"), "the state store was damaged and started anew") {
				t.Fatalf("healthz warnings: %q", health.Warnings)
			}
			kept, _ := filepath.Glob(stateDir + ".broken-*")
			if len(kept) != 1 {
				t.Fatalf("damaged copies kept: %v", kept)
			}
		})
	}
}

// clientAttr returns boiler-1's client attribute key through the API.
func clientAttr(t *testing.T, d *daemon, key string) string {
	t.Helper()
	var attrs map[string]map[string]json.RawMessage
	if code := d.api("GET", "/api/v1/devices/boiler-1/attributes", nil, &attrs); code != 200 {
		t.Fatalf("attributes: %d", code)
	}
	return string(attrs["client"][key])
}

// TestStateStoreOnFullDisk: with the whole data directory on a full
// filesystem, an attributes publish is refused and not applied, the
// daemon does not crash (badger faults on a full disk if it is let write),
// it restarts on the full disk, and once space returns attributes are
// stored again.
func TestStateStoreOnFullDisk(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	smallTmpfs(t, dataDir, 160<<20)
	d := startDaemon(t, dataDir, "")
	publishAttr := func(v string) error {
		c, tok := mqttClient(t, d.broker(), "TOKEN1", "attr-dev", nil)
		if tok.Error() != nil {
			return tok.Error()
		}
		defer c.Disconnect(50)
		tok2 := c.Publish("v1/devices/me/attributes", 1, false, fmt.Sprintf(`{"fw":%q}`, v))
		if !tok2.WaitTimeout(5*time.Second) || tok2.Error() != nil || !c.IsConnected() {
			return fmt.Errorf("not acknowledged (%v)", tok2.Error())
		}
		return nil
	}
	if err := publishAttr("v1"); err != nil {
		t.Fatal(err)
	}

	filler := filepath.Join(dataDir, "filler.bin")
	fillFile(t, filler)
	if err := publishAttr("v2"); err == nil {
		t.Fatal("an attributes publish was acknowledged on a full disk")
	}
	if v := clientAttr(t, d, "fw"); v != `"v1"` {
		t.Fatalf("fw = %s after a refused publish, want \"v1\" (a refused write must not be applied)", v)
	}
	d.stop()
	d = startDaemon(t, dataDir, "") // starts on the full disk
	if v := clientAttr(t, d, "fw"); v != `"v1"` {
		t.Fatalf("fw = %s after a restart on the full disk", v)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, func() bool { return publishAttr("v3") == nil }, "an attributes publish acknowledged after space returned")
	if v := clientAttr(t, d, "fw"); v != `"v3"` {
		t.Fatalf("fw = %s after space returned", v)
	}
}
