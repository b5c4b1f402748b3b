package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/ferry-iot/ferry/broker/state"
)

// probeCommand is the child process that checks the state store before
// the daemon opens it (this binary with --probe-state); tests replace it,
// since their binary is not the daemon's.
var probeCommand = func(dir string) *exec.Cmd {
	// os.Args[0] first: under qemu-user (a container of another
	// architecture) os.Executable names the emulator, not this binary.
	exe, err := exec.LookPath(os.Args[0])
	if err != nil {
		if exe, err = os.Executable(); err != nil {
			exe = os.Args[0]
		}
	}
	return exec.Command(exe, "--probe-state", dir)
}

// probeDamaged is the exit status of a probe that found the store
// damaged; a crash of badger in the probe is the other verdict of damage
// (a Go panic or fatal fault, exit status 2 with its trace).
const probeDamaged = 3

// openState opens the state store so that neither a damaged store nor a
// full disk stops the daemon from starting. Badger panics on some damaged
// tables in goroutines no recover reaches, so an existing store is first
// opened by a child process (state.Probe); if that fails or crashes, the
// store is moved aside — kept for inspection — and started anew, and the
// config-listed devices are registered again as at every start. A store
// badger refuses in-process (a damaged MANIFEST) gets the same. On a full
// disk the store opens read-only (state.Open).
func openState(dir string, logger *slog.Logger) (st *state.Store, moved string, err error) {
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); err == nil {
		out, err := probeCommand(dir).CombinedOutput()
		var exit *exec.ExitError
		damaged := errors.As(err, &exit) && (exit.ExitCode() == probeDamaged ||
			strings.Contains(string(out), "\npanic: ") || strings.HasPrefix(string(out), "panic: ") ||
			strings.Contains(string(out), "fatal error: "))
		if err != nil && !damaged {
			// The probe did not run (no binary to run, say): no verdict.
			logger.Warn("could not probe the state store in a child process; opening it directly", "dir", dir, "err", err,
				"output", strings.TrimSpace(string(out)))
		}
		if damaged {
			why := strings.TrimSpace(string(out))
			if i := strings.Index(why, "panic: "); i >= 0 {
				why = why[i:]
			}
			if i := strings.IndexByte(why, '\n'); i >= 0 {
				why = why[:i] // a crash's first line says enough
			}
			if moved, err = state.MoveAside(dir); err != nil {
				return nil, "", fmt.Errorf("the state store %s cannot be opened (%s) and cannot be moved aside: %w", dir, why, err)
			}
			logger.Error("state store damaged: moved aside and started anew (config-listed devices are registered again; devices added at runtime, attributes and consumer-group offsets are in the old copy)",
				"dir", dir, "kept_as", moved, "probe", why)
		}
	}
	st, err = state.Open(dir, state.WithLogger(logger), state.WithRebuildOnDamage())
	if err != nil {
		return nil, "", err
	}
	if moved == "" {
		moved = st.Rebuilt
	}
	return st, moved, nil
}

// stateWarning says what opening the state store had to do, for /healthz.
func stateWarning(st *state.Store, moved string) string {
	var parts []string
	if moved != "" {
		parts = append(parts, "the state store was damaged and started anew; the old copy is "+moved)
	}
	if st.ReadOnly() {
		parts = append(parts, "the state store is read-only: the disk is below its reserve (device changes, attributes and offsets are refused)")
	}
	if st.Volatile {
		parts = append(parts, "the state store runs from memory (the disk was full at start): restart once there is room")
	}
	return strings.Join(parts, "; ")
}
