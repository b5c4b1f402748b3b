package main

import (
	"runtime/debug"
)

// version is set at link time by scripts/package.sh
// (-ldflags "-X main.version=..."): the git tag, or the VERSION file.
var version string

// Version is the daemon's version: the one linked in, else "devel" with
// the VCS revision the Go toolchain recorded (go build from a checkout).
func Version() string {
	if version != "" {
		return version
	}
	v := "devel"
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "-dirty"
				}
			}
		}
		if rev != "" {
			v += " (" + rev[:min(12, len(rev))] + dirty + ")"
		}
	}
	return v
}
