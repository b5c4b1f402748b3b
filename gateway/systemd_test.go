package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/broker/testkit"
)

// TestRunWatchdog: the watchdog pings while the check passes, stops while
// it fails (saying so once, not per tick), and resumes when it passes.
func TestRunWatchdog(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	var mu sync.Mutex
	var pings int
	notify := func(s string) {
		if s != "WATCHDOG=1" {
			t.Errorf("notified %q", s)
		}
		mu.Lock()
		pings++
		mu.Unlock()
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return pings }
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	check := func(ctx context.Context) error {
		if healthy.Load() {
			return nil
		}
		<-ctx.Done() // a wedged daemon: the check runs out of time
		return ctx.Err()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { runWatchdog(ctx, 30*time.Millisecond, check, notify, logger); close(done) }()
	testkit.Eventually(t, 10*time.Second, func() bool { return count() >= 5 }, "pings while healthy")
	healthy.Store(false)
	time.Sleep(30 * time.Millisecond) // let a tick that was already running finish
	before := count()
	time.Sleep(200 * time.Millisecond)
	if n := count() - before; n > 0 {
		t.Fatalf("%d pings while the check failed", n)
	}
	healthy.Store(true)
	testkit.Eventually(t, 10*time.Second, func() bool { return count() >= before+3 }, "pings again")
	cancel()
	<-done
	out := logs.String()
	if n := strings.Count(out, "does not answer"); n != 1 {
		t.Fatalf("the failing spell was logged %d times:\n%s", n, out)
	}
	if !strings.Contains(out, "answers again") {
		t.Fatalf("the recovery was not logged:\n%s", out)
	}
}

// TestDaemonAlive: the watchdog's checks pass on a running daemon, fail
// naming the MQTT server once it is closed, and naming the log once the
// daemon is.
func TestDaemonAlive(t *testing.T) {
	d := startDaemon(t, "", "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.alive(ctx); err != nil {
		t.Fatalf("alive on a running daemon: %v", err)
	}
	dd := d.Daemon
	if err := dd.mqtt.Close(); err != nil {
		t.Fatal(err)
	}
	if err := dd.alive(ctx); err == nil || !strings.HasPrefix(err.Error(), "mqtt:") {
		t.Fatalf("alive with the MQTT server closed: %v", err)
	}
	d.stop()
	if err := dd.alive(ctx); err == nil || !strings.HasPrefix(err.Error(), "log:") {
		t.Fatalf("alive after Close: %v", err)
	}
}

// TestSystemdNotify runs the daemon binary as systemd would with
// Type=notify and WatchdogSec: READY=1 comes once the listeners accept,
// WATCHDOG=1 keeps coming, and SIGTERM sends STOPPING=1 before a clean exit.
func TestSystemdNotify(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	mq, web := freePort(t), freePort(t)
	cfgFile := filepath.Join(dir, "ferry.yaml")
	cfg := fmt.Sprintf("data_dir: %s\nmqtt: {listen: %q}\nhttp: {listen: %q}\nkafka: {listen: \"127.0.0.1:0\"}\nlog: {min_free_ratio: 0}\n",
		filepath.Join(dir, "data"), mq, web)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(daemonBinary(t), "--config", cfgFile)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=300000")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	next := func(want string) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					t.Fatalf("notify socket closed waiting for %s", want)
				}
				if strings.Contains(m, want) {
					return
				}
			case <-timeout:
				t.Fatalf("no %s within 30 s; daemon output:\n%s", want, out.String())
			}
		}
	}
	next("READY=1")
	for _, addr := range []string{mq, web} {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatalf("READY=1 came before %s accepted: %v", addr, err)
		}
		c.Close()
	}
	for range 3 {
		next("WATCHDOG=1")
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	next("STOPPING=1")
	if err := cmd.Wait(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("exit %v:\n%s", err, out.String())
		}
		t.Fatal(err)
	}
}

// TestCommandLineCheckAndVersion: --check validates a configuration
// without starting anything (the image's boot-partition import relies on
// it), and --version prints the linked-in version.
func TestCommandLineCheckAndVersion(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("mqtt: {listen: 5}\nbogus_key: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"--config", bad, "--check"}, nil, &out, &errOut); code != 2 ||
		!strings.Contains(errOut.String(), "bogus_key: unknown key") || !strings.Contains(errOut.String(), "mqtt.listen") {
		t.Fatalf("--check of a bad file: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	out.Reset()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("node_id: site-1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"FERRY_DATA_DIR=" + filepath.Join(dir, "data")}
	if code := run([]string{"--config", good, "--check"}, env, &out, &errOut); code != 0 || out.String() != "ferry: configuration valid\n" {
		t.Fatalf("--check of a good file: exit %d %q", code, out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
		t.Fatal("--check created a data directory")
	}
	out.Reset()
	old := version
	version = "9.8.7"
	defer func() { version = old }()
	if code := run([]string{"--version"}, nil, &out, &errOut); code != 0 || out.String() != "ferry 9.8.7\n" {
		t.Fatalf("--version: exit %d %q", code, out.String())
	}
}
