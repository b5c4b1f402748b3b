package configs

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// serviceChecks are the checks testdata/service-vm.sh reports; each must
// come back "ok", so a check the script skipped or never reached fails
// the test too.
var serviceChecks = []string{
	"install", "started-on-install", "enabled", "type-notify", "healthz", "runs-as-ferry", "no-devices",
	"logs-in-journal", "restart", "active-after-restart", "device-allow", "opens-configured-port",
	"cgroup-allows-ttyS1", "cgroup-denies-ttyS2", "journal-device-line", "watchdog-sec", "watchdog-restart",
	"watchdog-journal", "restart-on-failure", "upgrade", "active-after-upgrade", "restarted-by-upgrade",
	"new-version", "conffile-kept", "boot-config-runs", "boot-hostname", "boot-ssh-keys", "boot-wifi",
	"boot-ferry-yaml", "boot-bad-yaml-refused", "boot-bad-yaml-kept", "boot-bad-yaml-said", "stop", "stopped-inactive", "stopped-cleanly", "remove", "remove-stopped",
	"remove-keeps-data", "purge", "purge-removes-data", "hardware-watchdog",
}

// TestServiceOnSystemd installs the amd64 package on a running systemd:
// a Debian bookworm root made by mmdebstrap with Debian's kernel, booted
// under qemu-system-x86_64, where testdata/service-vm.sh installs the
// package, checks that installing started the service (Type=notify:
// active only after READY=1), that DeviceAllow= follows the configured
// buses and the cgroup enforces it (/dev/ttyS1 configured opens, /dev/ttyS2
// does not), that a frozen daemon is restarted by the watchdog and a
// killed one by Restart=on-failure, that an upgrade restarts it with the
// administrator's configuration kept, that a stop is clean, and that
// remove stops it and purge removes the data. The image's hardware
// watchdog setting is checked on QEMU's i6300esb, and its boot-partition
// import (ferry.yaml checked and kept when broken, host name, SSH keys,
// Wi-Fi) by its own unit. The chroot of
// TestDebLifecycle has no running systemd; this has.
func TestServiceOnSystemd(t *testing.T) {
	mmdebstrap := requireTool(t, "mmdebstrap", "mmdebstrap")
	qemu := requireTool(t, "qemu-system-x86_64", "qemu-system-x86")
	mke2fs := requireTool(t, "mke2fs", "e2fsprogs")
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	start := time.Now()
	// The initramfs carries only what this VM needs (virtio disk, ext4),
	// so making it and booting it is quick.
	out, err := exec.Command(mmdebstrap, "--variant=minbase", "--quiet",
		"--include=systemd,systemd-sysv,udev,linux-image-amd64,initramfs-tools,passwd,sudo,wpasupplicant",
		"--dpkgopt=force-confold", "--dpkgopt=force-confdef",
		`--setup-hook=mkdir -p "$1/etc/initramfs-tools/conf.d"`,
		`--setup-hook=echo MODULES=list > "$1/etc/initramfs-tools/conf.d/ferry-test"`,
		`--setup-hook=printf "virtio_pci\nvirtio_blk\next4\n" > "$1/etc/initramfs-tools/modules"`,
		`--customize-hook=ln -sf /dev/null "$1/etc/systemd/system/serial-getty@ttyS0.service"`,
		`--customize-hook=echo ferry-test > "$1/etc/hostname"`,
		"bookworm", root, "http://deb.debian.org/debian").CombinedOutput()
	if err != nil {
		t.Fatalf("mmdebstrap: %v\n%s", err, out)
	}
	t.Logf("root file system made in %s", time.Since(start).Round(time.Second))

	debs := filepath.Join(root, "root/debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"1.0.0", "1.1.0"} {
		deb := buildDebs(t, t.TempDir(), v, "amd64")["amd64"]
		if err := os.WriteFile(filepath.Join(debs, filepath.Base(deb)), must(os.ReadFile(deb)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	script := filepath.Join(root, "root/service-vm.sh")
	if err := os.WriteFile(script, must(os.ReadFile("testdata/service-vm.sh")), 0o755); err != nil {
		t.Fatal(err)
	}
	unit := `[Unit]
Description=Ferry service checks (configs/service_test.go)
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/root/service-vm.sh
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TimeoutStartSec=20min

[Install]
WantedBy=multi-user.target
`
	if err := os.WriteFile(filepath.Join(root, "etc/systemd/system/ferry-vmtest.service"), []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "chroot", root, "systemctl", "enable", "ferry-vmtest.service")
	// The image's boot-partition import (its unit and script), run by the
	// checks on this systemd.
	for _, f := range []string{"usr/lib/ferry/boot-config", "etc/systemd/system/ferry-boot-config.service"} {
		mode := os.FileMode(0o644)
		if strings.HasPrefix(f, "usr/lib") {
			mode = 0o755
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, f), must(os.ReadFile(filepath.Join("image/rootfs", f))), mode); err != nil {
			t.Fatal(err)
		}
	}
	// The image's hardware watchdog setting, on QEMU's i6300esb.
	wd := "etc/systemd/system.conf.d/ferry-watchdog.conf"
	if err := os.MkdirAll(filepath.Dir(filepath.Join(root, wd)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, wd), must(os.ReadFile(filepath.Join("image/rootfs", wd))), 0o644); err != nil {
		t.Fatal(err)
	}
	kernel := globOne(t, filepath.Join(root, "boot/vmlinuz-*"))
	initrd := globOne(t, filepath.Join(root, "boot/initrd.img-*"))
	disk := filepath.Join(dir, "disk.img")
	run(t, mke2fs, "-q", "-t", "ext4", "-d", root, disk, "2G")

	console := filepath.Join(dir, "console.log")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	boot := time.Now()
	// Three serial ports: the console, and two lines for the device
	// checks (ttyS1 configured, ttyS2 not). No network: the checks run
	// inside.
	cmd := exec.CommandContext(ctx, qemu, "-machine", "q35", "-m", "1024", "-smp", "2",
		"-display", "none", "-no-reboot", "-nic", "none",
		"-kernel", kernel, "-initrd", initrd,
		"-append", "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=0",
		"-drive", "file="+disk+",format=raw,if=virtio", "-device", "i6300esb",
		"-serial", "file:"+console, "-serial", "null", "-serial", "null")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("qemu: %v\n%s\nconsole:\n%s", err, out, tail(console, 60))
	}
	t.Logf("VM booted, ran the checks and powered off in %s", time.Since(boot).Round(time.Second))

	f, err := os.Open(console)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	results := map[string]bool{}
	var done bool
	line := regexp.MustCompile(`VMTEST: (ok|FAIL|measured|start|done)\s*(\S*)(.*)`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := line.FindStringSubmatch(strings.TrimRight(sc.Text(), "\r"))
		if m == nil {
			continue
		}
		switch m[1] {
		case "ok":
			results[m[2]] = true
		case "FAIL":
			results[strings.TrimSuffix(m[2], ":")] = false
			t.Errorf("in the VM: %s%s", m[2], m[3])
		case "measured", "start":
			t.Logf("in the VM: %s%s", m[2], m[3])
		case "done":
			done = true
		}
	}
	if !done {
		t.Errorf("the checks did not finish; console:\n%s", tail(console, 60))
	}
	for _, c := range serviceChecks {
		if _, ok := results[c]; !ok {
			t.Errorf("check %s not reported", c)
		}
	}
}

func globOne(t *testing.T, pattern string) string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil || len(m) != 1 {
		t.Fatalf("%s: %v %v", pattern, m, err)
	}
	return m[0]
}

// tail is the last n lines of a file, for a failure's message.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(string(b), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
