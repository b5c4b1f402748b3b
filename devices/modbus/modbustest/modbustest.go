// Package modbustest runs a Modbus slave nobody here wrote — Debian's
// python3-pymodbus — for tests: over TCP, or as an RTU slave on one end
// of a pty pair made by socat, with units that can be silenced and
// registers that can be read and set while it runs (pyslave.py).
package modbustest

import (
	"bufio"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/broker/testkit"
)

//go:embed pyslave.py
var script []byte

// Python is the interpreter Debian's python3-pymodbus loads with.
const Python = "/usr/bin/python3"

// Tables are a unit's initial values by address (200 of each table).
type Tables struct {
	HR, IR, CO, DI map[int]int
}

// Need checks that pymodbus (and socat, for rtu) are there: in CI their
// absence fails the test (scripts/test.sh installs them), elsewhere it
// skips.
func Need(tb testing.TB, rtu bool) {
	tb.Helper()
	missing := ""
	if err := exec.Command(Python, "-c", "import pymodbus").Run(); err != nil {
		missing = "python3-pymodbus"
	} else if _, err := exec.LookPath("socat"); rtu && err != nil {
		missing = "socat"
	}
	if missing == "" {
		return
	}
	testkit.Missing(tb, "Debian package %s not installed: scripts/test.sh installs it", missing)
}

// Slave is a running pyslave.
type Slave struct {
	tb    testing.TB
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
	mu    sync.Mutex
	// Addr is host:port (tcp) or the pty the slave serves (rtu).
	Addr string
	// Port is the pty end a master opens (rtu only).
	Port string
	args []string
	dir  string
	done chan struct{}
}

// StartTCP serves units over Modbus TCP on a free loopback port.
func StartTCP(tb testing.TB, units map[int]Tables) *Slave {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return StartTCPAt(tb, addr, units)
}

// StartTCPAt serves units over Modbus TCP on addr.
func StartTCPAt(tb testing.TB, addr string, units map[int]Tables) *Slave {
	tb.Helper()
	Need(tb, false)
	s := &Slave{tb: tb, Addr: addr, dir: tb.TempDir()}
	s.start("tcp", addr, units)
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) {
			tb.Fatalf("pymodbus slave did not listen on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StartRTU serves units as an RTU slave on one end of a socat pty pair;
// Port is the other end, for the master.
func StartRTU(tb testing.TB, units map[int]Tables, baud int) *Slave {
	tb.Helper()
	Need(tb, true)
	a, b := PtyPair(tb)
	s := &Slave{tb: tb, Addr: b, Port: a, dir: tb.TempDir()}
	s.start("rtu", b, units, fmt.Sprint(baud))
	return s
}

func (s *Slave) start(mode, where string, units map[int]Tables, extra ...string) {
	tb := s.tb
	init := map[string]map[string]map[string]int{}
	for u, t := range units {
		m := map[string]map[string]int{}
		for name, tab := range map[string]map[int]int{"hr": t.HR, "ir": t.IR, "co": t.CO, "di": t.DI} {
			m[name] = map[string]int{}
			for a, v := range tab {
				m[name][fmt.Sprint(a)] = v
			}
		}
		init[fmt.Sprint(u)] = m
	}
	raw, _ := json.Marshal(init)
	initFile, scriptFile := filepath.Join(s.dir, "init.json"), filepath.Join(s.dir, "pyslave.py")
	if err := os.WriteFile(initFile, raw, 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(scriptFile, script, 0o644); err != nil {
		tb.Fatal(err)
	}
	s.args = append([]string{scriptFile, mode, where, initFile}, extra...)
	s.launch()
	tb.Cleanup(s.Kill)
}

func (s *Slave) launch() {
	s.cmd = exec.Command(Python, s.args...)
	var err error
	if s.stdin, err = s.cmd.StdinPipe(); err != nil {
		s.tb.Fatal(err)
	}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		s.tb.Fatal(err)
	}
	s.cmd.Stderr = io.Discard
	if err := s.cmd.Start(); err != nil {
		s.tb.Fatalf("pymodbus slave: %v", err)
	}
	s.out = bufio.NewScanner(stdout)
	if !s.out.Scan() || s.out.Text() != "serving" {
		s.tb.Fatalf("pymodbus slave did not start: %q", s.out.Text())
	}
	s.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(s.cmd, s.done)
}

// Kill stops the slave at once (a peer that dies).
func (s *Slave) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart starts the slave again with its initial values (the same
// address and port).
func (s *Slave) Restart() {
	s.Kill()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.launch()
}

// Cmd sends one control command (see pyslave.py) and returns its answer.
func (s *Slave) Cmd(line string) string {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := io.WriteString(s.stdin, line+"\n"); err != nil {
		s.tb.Fatalf("pymodbus slave: %v", err)
	}
	if !s.out.Scan() {
		s.tb.Fatalf("pymodbus slave: no answer to %q", line)
	}
	ans := s.out.Text()
	if strings.HasPrefix(ans, "error") {
		s.tb.Fatalf("pymodbus slave: %q: %s", line, ans)
	}
	return ans
}

// PtyPair makes a socat pty pair and returns its two ends.
func PtyPair(tb testing.TB) (a, b string) {
	tb.Helper()
	dir := tb.TempDir()
	a, b = filepath.Join(dir, "a"), filepath.Join(dir, "b")
	socat := exec.Command("socat", "pty,raw,echo=0,link="+a, "pty,raw,echo=0,link="+b)
	if err := socat.Start(); err != nil {
		tb.Fatalf("socat: %v", err)
	}
	tb.Cleanup(func() { _ = socat.Process.Kill(); _ = socat.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, errA := os.Stat(a)
		_, errB := os.Stat(b)
		if errA == nil && errB == nil {
			return a, b
		}
		if time.Now().After(deadline) {
			tb.Fatal("socat made no pty pair")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
