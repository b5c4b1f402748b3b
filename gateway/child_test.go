package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// childDaemon runs the daemon as a child process — this test binary,
// started as the daemon (TestMain) — so a test can SIGKILL it. Its output
// goes to a file, shown when the test fails.
type childDaemon struct {
	t       *testing.T
	cfgFile string
	env     []string // more environment
	ready   string   // an address that accepts once the daemon is up
	logFile *os.File

	mu  sync.Mutex
	cmd *exec.Cmd
}

// newChildDaemon writes cfg to a file and starts the daemon; it is
// stopped (SIGTERM, then SIGKILL) when the test ends.
func newChildDaemon(t *testing.T, cfg, ready string, env ...string) *childDaemon {
	t.Helper()
	c := &childDaemon{t: t, cfgFile: filepath.Join(t.TempDir(), "ferry.yaml"), env: env, ready: ready}
	if err := os.WriteFile(c.cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	var err error
	if c.logFile, err = os.Create(filepath.Join(t.TempDir(), "daemon.log")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			out, _ := os.ReadFile(c.logFile.Name())
			t.Logf("daemon log:\n%s", tail(string(out), 8000))
		}
		c.logFile.Close()
	})
	c.start()
	return c
}

// start runs the daemon and waits until ready accepts.
func (c *childDaemon) start() {
	c.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), "GATEWAY_E2E_DAEMON=1", "GATEWAY_E2E_ARGS=--config "+c.cfgFile), c.env...)
	cmd.Stdout, cmd.Stderr = c.logFile, c.logFile
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		if conn, err := net.DialTimeout("tcp", c.ready, 200*time.Millisecond); err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			c.t.Fatal("the daemon did not come up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.mu.Lock()
	c.cmd = cmd
	c.mu.Unlock()
}

// kill SIGKILLs the daemon and waits for it.
func (c *childDaemon) kill() {
	c.mu.Lock()
	cmd := c.cmd
	c.mu.Unlock()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		c.t.Fatal(err)
	}
	cmd.Wait()
}

// shutdown stops the daemon with SIGTERM and returns how it exited.
func (c *childDaemon) shutdown() error {
	c.mu.Lock()
	cmd := c.cmd
	c.mu.Unlock()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	return cmd.Wait()
}

// stop ends a daemon still running: SIGTERM, then SIGKILL after 10 s.
func (c *childDaemon) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil || c.cmd.ProcessState != nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
}

// seqPublishers are devices dev-0.. (tokens T0..) publishing
// {"seq":N,"device":D} at QoS 1 over MQTT 3.1.1 until stopped, each
// reconnecting after any failure and remembering which seqs were
// acknowledged.
type seqPublishers struct {
	stop  chan struct{}
	wg    sync.WaitGroup
	acked []map[int]bool // by device; read after halt
}

func startSeqPublishers(mqttAddr string, devices int, pause time.Duration) *seqPublishers {
	p := &seqPublishers{stop: make(chan struct{}), acked: make([]map[int]bool, devices)}
	for i := range devices {
		p.acked[i] = map[int]bool{}
		p.wg.Go(func() {
			var c paho.Client
			for seq := 0; ; {
				select {
				case <-p.stop:
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
					p.acked[i][seq] = true
				} else {
					c.Disconnect(0)
				}
				seq++
				if pause > 0 {
					time.Sleep(pause)
				}
			}
		})
	}
	return p
}

// halt stops the publishers and waits for them.
func (p *seqPublishers) halt() {
	close(p.stop)
	p.wg.Wait()
}

// seqDevices is the devices section for n publishers.
func seqDevices(n int) string {
	s := ""
	for i := range n {
		s += fmt.Sprintf("  - {name: dev-%d, token: T%d}\n", i, i)
	}
	return s
}
