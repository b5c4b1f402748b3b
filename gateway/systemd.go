package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
)

// Under systemd (Type=notify, configs/systemd/ferry.service) the daemon
// says READY=1 once start has returned — the log open and recovered, every
// listener bound — and STOPPING=1 when it begins to shut down. With
// WatchdogSec set, a goroutine pings the watchdog only after proving the
// daemon works: the log's commit goroutine ran a no-op (Log.Ping; stuck
// fsyncs block it) and the MQTT server completed a CONNECT/PINGREQ round
// trip on its own listener (mqtt.Server.Probe). A daemon that is wedged stops
// pinging and systemd restarts it; a bare timer would keep a dead daemon
// "alive". Outside systemd (no NOTIFY_SOCKET) all of this does nothing.

// alive runs the watchdog's checks.
func (d *Daemon) alive(ctx context.Context) error {
	if err := d.log.Ping(ctx); err != nil {
		return fmt.Errorf("log: %w", err)
	}
	if err := d.mqtt.Probe(ctx); err != nil {
		return fmt.Errorf("mqtt: %w", err)
	}
	return nil
}

// sdNotify sends state to systemd; without NOTIFY_SOCKET it does nothing.
func sdNotify(logger *slog.Logger, state string) {
	if _, err := sd.SdNotify(false, state); err != nil {
		logger.Warn("systemd notify failed", "state", state, "err", err)
	}
}

// runWatchdog pings systemd's watchdog every interval/3 while check
// passes, until ctx ends. A failed check is logged once per spell (and
// its end once); the pings it skips let systemd act at WatchdogSec.
func runWatchdog(ctx context.Context, interval time.Duration, check func(context.Context) error,
	notify func(string), logger *slog.Logger) {
	every := interval / 3
	tick := time.NewTicker(every)
	defer tick.Stop()
	failing := false
	for {
		cctx, cancel := context.WithTimeout(ctx, every)
		err := check(cctx)
		cancel()
		switch {
		case err == nil:
			notify(sd.SdNotifyWatchdog)
			if failing {
				logger.Info("watchdog: the daemon answers again; pinging systemd")
				failing = false
			}
		case ctx.Err() != nil:
			return
		case !failing:
			logger.Error("watchdog: the daemon does not answer; not pinging systemd, which restarts it after WatchdogSec",
				"err", err, "watchdog", interval)
			failing = true
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// startSystemd tells systemd the daemon is ready and starts the watchdog
// when the unit asked for one.
func (d *Daemon) startSystemd(ctx context.Context, logger *slog.Logger) {
	sdNotify(logger, sd.SdNotifyReady+"\nSTATUS=serving")
	interval, err := sd.SdWatchdogEnabled(false)
	if err != nil {
		logger.Warn("systemd watchdog settings unreadable; no watchdog", "err", err)
		return
	}
	if interval <= 0 {
		return
	}
	// A socket that refuses the pings is said once, not every ping.
	warned := false
	ping := func(state string) {
		if _, err := sd.SdNotify(false, state); err != nil && !warned {
			warned = true
			logger.Warn("systemd watchdog ping failed; systemd will restart the daemon", "err", err)
		}
	}
	go runWatchdog(ctx, interval, d.alive, ping, logger)
}
