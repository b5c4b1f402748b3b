package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/broker/testkit"
)

// readmeBlocks returns the ```sh blocks of one section of README.md.
func readmeBlocks(t *testing.T, root, section string) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, body, ok := strings.Cut(string(raw), "\n## "+section+"\n")
	if !ok {
		t.Fatalf("README.md has no section %q", section)
	}
	if i := strings.Index(body, "\n## "); i >= 0 {
		body = body[:i]
	}
	var blocks []string
	for {
		_, rest, ok := strings.Cut(body, "```sh\n")
		if !ok {
			return blocks
		}
		block, after, ok := strings.Cut(rest, "```")
		if !ok {
			t.Fatalf("unterminated code block in %q", section)
		}
		blocks = append(blocks, block)
		body = after
	}
}

// freshCheckout copies the repository's tracked files (what a clone holds)
// into a new directory.
func freshCheckout(t *testing.T, root string) string {
	t.Helper()
	out, err := exec.Command("git", "-C", root, "ls-files", "-z").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	dir := t.TempDir()
	for _, name := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		src := filepath.Join(root, name)
		fi, err := os.Lstat(src)
		if err != nil {
			if os.IsNotExist(err) {
				continue // deleted in the working tree, not yet committed
			}
			t.Fatal(err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// readmeWalkthrough prepares a test that runs a README section as
// written: it skips in -short mode and without root (a network namespace
// of its own), needs the section's tools, and returns the section's code
// blocks and a fresh checkout to run them in.
func readmeWalkthrough(t *testing.T, section string, tools ...[2]string) (blocks []string, dir string) {
	t.Helper()
	if testing.Short() {
		t.Skip("README walk-through: skipped in -short mode")
	}
	for _, tool := range append([][2]string{{"unshare", "util-linux"}, {"ip", "iproute2"}, {"curl", "curl"}, {"git", "git"}}, tools...) {
		testkit.NeedTool(t, tool[0], tool[1])
	}
	if os.Geteuid() != 0 {
		t.Skip("a network namespace of its own needs root")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return readmeBlocks(t, root, section), freshCheckout(t, root)
}

// runWalkthrough runs script in a network namespace of its own and
// returns what it printed between "=== README commands" and "=== done",
// and after that.
func runWalkthrough(t *testing.T, script string) (cmds, after, all string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--net", "--fork", "bash", "-c", script)
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	out, err := cmd.CombinedOutput()
	all = string(out)
	if err != nil {
		t.Fatalf("the README's commands failed: %v\n%s", err, all)
	}
	_, cmds, _ = strings.Cut(all, "=== README commands\n")
	cmds, after, _ = strings.Cut(cmds, "=== done\n")
	return cmds, after, all
}

// TestReadmeFirstDevice runs the README's "First device in one minute"
// exactly as written, on a fresh copy of the repository, in a network
// namespace of its own (so the default ports are free and nothing leaves
// loopback): `go run ./gateway` in the background, then the second
// block's commands, whose output must show the device's token, its
// reading read back with kcat and over HTTP.
func TestReadmeFirstDevice(t *testing.T) {
	blocks, dir := readmeWalkthrough(t, "First device in one minute", [2]string{"mosquitto_pub", "mosquitto-clients"}, [2]string{"kcat", "kcat"})
	if len(blocks) != 2 || strings.TrimSpace(blocks[0]) != "go run ./gateway" {
		t.Fatalf("the section's code blocks changed (this test runs the first in the background and the second after it): %q", blocks)
	}
	script := fmt.Sprintf(`set -euo pipefail
set -m
ip link set lo up
cd %q
( %s ) >daemon.log 2>&1 &
daemon=$!
for i in $(seq 1 1200); do curl -sf -o /dev/null http://localhost:8080/healthz && break; kill -0 $daemon || { cat daemon.log; exit 1; }; sleep 0.1; done
echo "=== README commands"
%s
echo "=== done"
kill -INT -- -$daemon
wait $daemon || true
cat daemon.log
`, dir, strings.TrimSpace(blocks[0]), blocks[1])
	cmds, daemonLog, text := runWalkthrough(t, script)
	for _, want := range []string{
		`"name":"my-sensor"`, `"token":"`, // the device, with its generated token
		`key=my-sensor value={"ts":`, `"values":{"temperature":21.5}}`, // kcat
		`"records":[{"partition":0,"offset":0`, // the HTTP API
	} {
		if !strings.Contains(cmds, want) {
			t.Fatalf("the README's commands printed no %q:\n%s", want, text)
		}
	}
	if !strings.Contains(daemonLog, "data/admin-token (generated now)") || !strings.Contains(daemonLog, "stopped cleanly") {
		t.Fatalf("the daemon's output:\n%s", daemonLog)
	}
}

// TestReadmeModbusMeter runs the README's "Read a Modbus meter" as
// written, on a fresh copy of the repository in a network namespace of
// its own: the simulated meter and the gateway in the background, then
// the third block's commands once the meter was polled, whose output
// must show the device's poll record, its readings read with kcat, and
// the setpoint written and read back through RPC.
func TestReadmeModbusMeter(t *testing.T) {
	blocks, dir := readmeWalkthrough(t, "Read a Modbus meter", [2]string{"kcat", "kcat"})
	if len(blocks) != 3 || !strings.HasPrefix(strings.TrimSpace(blocks[0]), "go run ./firmware-sim modbus") ||
		!strings.HasPrefix(strings.TrimSpace(blocks[1]), "go run ./gateway") {
		t.Fatalf("the section's code blocks changed (this test runs the first two in the background and the third after them): %q", blocks)
	}
	script := fmt.Sprintf(`set -euo pipefail
set -m
ip link set lo up
cd %q
( %s ) >meter.log 2>&1 &
meter=$!
( %s ) >daemon.log 2>&1 &
daemon=$!
for i in $(seq 1 1200); do
  curl -sf -H "Authorization: Bearer $(cat data/admin-token 2>/dev/null)" http://localhost:8080/api/v1/devices/meter-1 2>/dev/null | grep -q '"state":"ok"' && break
  kill -0 $daemon || { cat daemon.log; exit 1; }
  kill -0 $meter || { cat meter.log; exit 1; }
  sleep 0.1
done
echo "=== README commands"
%s
echo "=== done"
kill -INT -- -$daemon -$meter
wait $daemon || true
wait $meter || true
cat daemon.log
`, dir, strings.TrimSpace(blocks[0]), strings.TrimSpace(blocks[1]), blocks[2])
	cmds, _, text := runWalkthrough(t, script)
	for _, want := range []string{
		`"bus":"meter-line"`, `"state":"ok"`, `"last_poll":{`, // the device's poll record
		`key=meter-1 value={"ts":`, `"voltage":`, `"energy":`, // kcat
		`{"response":{"ok":true,"value":19.5}}`, `{"response":{"value":19.5}}`, // the setpoint, written and read
	} {
		if !strings.Contains(cmds, want) {
			t.Fatalf("the README's commands printed no %q:\n%s", want, text)
		}
	}
}
