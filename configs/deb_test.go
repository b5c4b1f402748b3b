package configs

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-iot/ferry/broker/testkit"
)

// requireTool is testkit.NeedTool for the packaging tests, which also need
// root (chroot, file ownership).
func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p := testkit.NeedTool(t, name, pkg)
	if os.Geteuid() != 0 {
		testkit.Missing(t, "not root: installing into a chroot needs it")
	}
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// buildDebs runs scripts/package.sh as a user would, with version.
func buildDebs(t *testing.T, dir, version, arches string) map[string]string {
	t.Helper()
	cmd := exec.Command("scripts/package.sh", dir)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "FERRY_VERSION="+version, "ARCHES="+arches)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("scripts/package.sh: %v\n%s%s", err, out, stderr)
	}
	debs := map[string]string{}
	for _, line := range strings.Fields(string(out)) {
		debs[strings.TrimSuffix(strings.TrimPrefix(filepath.Base(line), "ferry_"+version+"_"), ".deb")] = line
	}
	return debs
}

// TestDebContents builds every package and checks each one's control
// data, files, maintainer scripts and binary: the architecture the file
// name and the control file say is the one the ELF header says.
func TestDebContents(t *testing.T) {
	dpkgDeb := requireTool(t, "dpkg-deb", "dpkg")
	version := strings.TrimSpace(string(must(os.ReadFile("../VERSION"))))
	debs := buildDebs(t, t.TempDir(), version, "amd64 arm64 armhf armv6")
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "armhf": elf.EM_ARM, "armhf-armv6": elf.EM_ARM}
	if len(debs) != len(machines) {
		t.Fatalf("packages %v, want one per %v", debs, machines)
	}
	for name, deb := range debs {
		info := run(t, dpkgDeb, "-I", deb)
		arch := strings.TrimSuffix(name, "-armv6")
		for _, want := range []string{"Package: ferry\n", "Version: " + version + "\n", "Architecture: " + arch + "\n",
			"conffiles", "postinst", "prerm", "postrm"} {
			if !strings.Contains(info, want) {
				t.Errorf("%s: dpkg-deb -I lacks %q:\n%s", name, want, info)
			}
		}
		if conf := run(t, dpkgDeb, "-I", deb, "conffiles"); strings.TrimSpace(conf) != "/etc/ferry/ferry.yaml" {
			t.Errorf("%s: conffiles %q", name, conf)
		}
		list := run(t, dpkgDeb, "-c", deb)
		modes := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
			if f := strings.Fields(line); len(f) >= 6 {
				modes[f[len(f)-1]] = f[0] + " " + f[1]
			}
		}
		for path, want := range map[string]string{
			"./usr/bin/ferry":                        "-rwxr-xr-x root/root",
			"./etc/ferry/ferry.yaml":                 "-rw-r--r-- root/root",
			"./usr/lib/systemd/system/ferry.service": "-rw-r--r-- root/root",
		} {
			if modes[path] != want {
				t.Errorf("%s: %s is %q, want %q; dpkg-deb -c:\n%s", name, path, modes[path], want, list)
			}
		}
		x := t.TempDir()
		run(t, dpkgDeb, "-x", deb, x)
		f, err := elf.Open(filepath.Join(x, "usr/bin/ferry"))
		if err != nil {
			t.Fatal(err)
		}
		if f.Machine != machines[name] {
			t.Errorf("%s: binary for %v", name, f.Machine)
		}
		f.Close()
	}
}

// TestDebLifecycle installs the amd64 package in a Debian chroot with
// systemd (as on a Pi: a chroot has no running systemd, so nothing is
// started, exactly as when an image is built), then upgrades it with an
// edited conffile and data in place, removes it and purges it, checking
// after each step what Debian users expect. The unit file is validated by
// systemd-analyze verify inside the chroot, against the installed binary.
func TestDebLifecycle(t *testing.T) {
	mmdebstrap := requireTool(t, "mmdebstrap", "mmdebstrap")
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	out, err := exec.Command(mmdebstrap, "--variant=minbase", "--include=systemd,passwd", "--quiet",
		"bookworm", root, "http://deb.debian.org/debian").CombinedOutput()
	if err != nil {
		t.Fatalf("mmdebstrap: %v\n%s", err, out)
	}
	in := func(args ...string) string { t.Helper(); return run(t, "chroot", append([]string{root}, args...)...) }
	exists := func(p string) bool { _, err := os.Lstat(filepath.Join(root, p)); return err == nil }
	install := func(version string) {
		t.Helper()
		deb := buildDebs(t, t.TempDir(), version, "amd64")["amd64"]
		if err := os.WriteFile(filepath.Join(root, "tmp/ferry.deb"), must(os.ReadFile(deb)), 0o644); err != nil {
			t.Fatal(err)
		}
		in("dpkg", "-i", "/tmp/ferry.deb")
		if got := in("ferry", "--version"); got != "ferry "+version+"\n" {
			t.Fatalf("ferry --version after installing %s: %q", version, got)
		}
	}

	install("1.0.0")
	id := in("id", "ferry")
	for _, g := range []string{"(ferry)", "(dialout)", "(i2c)", "(spi)", "(gpio)"} {
		if !strings.Contains(id, g) {
			t.Errorf("ferry user not in %s: %s", g, id)
		}
	}
	if got := in("stat", "-c", "%U:%G %a", "/var/lib/ferry"); got != "ferry:ferry 750\n" {
		t.Errorf("/var/lib/ferry: %q", got)
	}
	if !exists("etc/systemd/system/multi-user.target.wants/ferry.service") {
		t.Error("the service is not enabled after installing")
	}
	if v := in("systemd-analyze", "verify", "ferry.service"); v != "" {
		t.Errorf("systemd-analyze verify ferry.service:\n%s", v)
	}
	if got := in("su", "-s", "/bin/sh", "-c", "ferry --print-default-config >/dev/null && echo ok", "ferry"); got != "ok\n" {
		t.Errorf("ferry as the ferry user: %q", got)
	}

	// Upgrade: the administrator's edit of the conffile and the data stay.
	conf := filepath.Join(root, "etc/ferry/ferry.yaml")
	edited := append(must(os.ReadFile(conf)), "node_id: site-7\n"...)
	if err := os.WriteFile(conf, edited, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/ferry/kept"), []byte("data"), 0o640); err != nil {
		t.Fatal(err)
	}
	install("1.1.0")
	if got := string(must(os.ReadFile(conf))); got != string(edited) {
		t.Errorf("the upgrade replaced the edited conffile:\n%s", got)
	}
	if !exists("var/lib/ferry/kept") || !exists("etc/systemd/system/multi-user.target.wants/ferry.service") {
		t.Error("the upgrade lost the data or the enablement")
	}

	// Remove: the program goes, the data and the configuration stay.
	in("dpkg", "-r", "ferry")
	if exists("usr/bin/ferry") || exists("usr/lib/systemd/system/ferry.service") {
		t.Error("remove left the program or the unit")
	}
	if !exists("var/lib/ferry/kept") || !exists("etc/ferry/ferry.yaml") {
		t.Error("remove deleted the data or the configuration")
	}

	// Purge: everything of ferry's goes.
	in("dpkg", "-P", "ferry")
	for _, p := range []string{"var/lib/ferry", "etc/ferry/ferry.yaml", "etc/systemd/system/multi-user.target.wants/ferry.service"} {
		if exists(p) {
			t.Errorf("purge left %s", p)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
