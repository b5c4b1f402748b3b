// Command gateway is the Ferry daemon: an MQTT broker that speaks the
// ThingsBoard device API, writing every accepted data point to the durable
// log, with a Kafka listener for backend services, bridges to an upstream
// Kafka cluster and an HTTP API for devices, topics and RPC.
//
//	go run ./gateway                     embedded defaults (configs/ferry.yaml), data in ./data
//	go run ./gateway --config my.yaml    plus a file; FERRY_<KEY> variables override both
//	go run ./gateway --print-default-config
//	ferry --check | --version | --device-allow
//
// No config file is needed: the defaults are configs/ferry.yaml, embedded.
// A file holds only the keys it changes. Every key can be set with
// FERRY_<KEY>, dots as underscores, lists and maps included
// (FERRY_BRIDGES_KAFKA_BROKERS=a:9092,b:9092, FERRY_DEVICES='[{"name":"a","token":"t"}]',
// FERRY_LOG_TOPICS_ALARMS_PARTITIONS=3); the head of configs/ferry.yaml
// gives the rules, and how a file merges into the defaults. The
// configuration is validated once; every problem is printed with its full
// key and the exit status is 2.
//
// On start the daemon prints its node id and the absolute data directory,
// every listener's bound address, where the HTTP API token is, and how to
// add a first device. SIGINT or SIGTERM stops
// accepting, lets in-flight appends commit and their acknowledgements go
// out, closes the log cleanly and exits 0.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	sd "github.com/coreos/go-systemd/v22/daemon"

	"github.com/ferry-iot/ferry/broker/state"
	"github.com/ferry-iot/ferry/configs"
)

func main() {
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

func run(args, environ []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", "", "YAML config file (defaults: configs/ferry.yaml, embedded)")
	printConfig := fs.Bool("print-default-config", false, "print the default configuration and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	check := fs.Bool("check", false, "validate the configuration (--config and FERRY_* variables), print its problems and exit: 0 valid, 2 not")
	printDevices := fs.Bool("device-allow", false, "print the device nodes the configured buses open, as systemd DeviceAllow= entries, and exit")
	applyDevices := fs.String("apply-device-allow", "", "set the systemd `unit`'s DeviceAllow= to the configured buses' devices for this boot (its ExecStartPre) and exit")
	probe := fs.String("probe-state", "", "check that the state store in `dir` opens (used by the daemon itself at start) and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "ferry", Version())
		return 0
	}
	if *probe != "" {
		if err := state.Probe(*probe); err != nil {
			fmt.Fprintln(stderr, "ferry: state store damaged:", err)
			return probeDamaged
		}
		return 0
	}
	if *printConfig {
		_, _ = stdout.Write(configs.Default)
		return 0
	}
	cfg, err := LoadConfig(*configFile, environ)
	if err != nil {
		if ce, ok := err.(*ConfigError); ok {
			fmt.Fprintln(stderr, "ferry: invalid configuration:")
			for _, p := range ce.Problems {
				fmt.Fprintln(stderr, "  -", p)
			}
		} else {
			fmt.Fprintln(stderr, "ferry:", err)
		}
		return 2
	}
	if *check {
		fmt.Fprintln(stdout, "ferry: configuration valid")
		return 0
	}
	if *printDevices {
		for _, e := range deviceAllow(cfg, os.Stat) {
			fmt.Fprintln(stdout, e)
		}
		return 0
	}
	if *applyDevices != "" {
		if err := applyDeviceAllow(*applyDevices, deviceAllow(cfg, os.Stat), stdout); err != nil {
			fmt.Fprintln(stderr, "ferry:", err)
			return 1
		}
		return 0
	}
	logger := newLogger(cfg.Logging, stderr)
	if limit := int64(cfg.MemoryLimit); limit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(limit)
	}
	autoGC := cfg.GCPercent == GCAuto && os.Getenv("GOGC") == ""
	if cfg.GCPercent != GCAuto && os.Getenv("GOGC") == "" {
		debug.SetGCPercent(int(cfg.GCPercent))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := start(cfg, logger, faultOptions(environ))
	if err != nil {
		fmt.Fprintln(stderr, "ferry:", err)
		return 1
	}
	if autoGC {
		go newGCTuner(d.metrics, debug.SetGCPercent, logger).run(ctx)
	}
	d.banner(stdout)
	d.startSystemd(ctx, logger)
	<-ctx.Done()
	fmt.Fprintln(stdout, "ferry: shutting down")
	sdNotify(logger, sd.SdNotifyStopping)
	if err := d.Close(); err != nil {
		fmt.Fprintln(stderr, "ferry: shutdown:", err)
		return 1
	}
	fmt.Fprintln(stdout, "ferry: stopped cleanly")
	return 0
}

func newLogger(c LoggingConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(strings.ToUpper(c.Level)))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
