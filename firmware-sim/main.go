// Command firmware-sim simulates a fleet of ThingsBoard devices talking
// MQTT 3.1.1 to a broker (Ferry, or a real ThingsBoard), to load-test it
// and check what it stored:
//
//	go run ./firmware-sim --broker tcp://127.0.0.1:1883 --devices 100 --rate 10
//
// Each device logs in with an access token (--token-format) or
// self-provisions (--provision-key, --provision-secret), publishes
// telemetry in every ThingsBoard payload shape, optionally client
// attributes, answers server-side RPC with --answer-rpc, and reconnects
// with backoff. A progress line goes to stderr once a second; after
// --duration, --messages per device or Ctrl-C a summary goes to stdout.
// The exit status is 1 if any message failed, nothing was acknowledged or
// a device gave up, 2 for bad flags. The simulation is package sim.
//
// # Modbus
//
// The modbus subcommand simulates a Modbus energy meter instead (package
// modbussim, which documents the register map): one or more unit ids
// behind Modbus TCP and/or Modbus RTU on a serial port or a pty it opens,
// with dead units, exception ranges and delays to inject:
//
//	go run ./firmware-sim modbus --listen tcp://127.0.0.1:5020 --rtu pty --units 1,2,3 --dead-units 3
//
// It prints "tcp URL" and "rtu PATH" lines to stdout once serving, and
// its counters when interrupted or after --duration. The exit status is 1
// if serving failed, 2 for bad flags; `firmware-sim modbus -h` lists the
// flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ferry-iot/ferry/firmware-sim/sim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal, restore the default so a second one kills.
	context.AfterFunc(ctx, stop)
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command line, parsed.
type options struct {
	cfg      sim.Config
	duration time.Duration
	verbose  bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	c := &o.cfg
	fs := flag.NewFlagSet("firmware-sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: firmware-sim [flags]\n       firmware-sim modbus [flags]\n\n"+
			"Simulates ThingsBoard device firmware over MQTT 3.1.1, or with modbus a Modbus\n"+
			"meter over TCP and RTU (see firmware-sim modbus -h).\n\nflags:")
		fs.PrintDefaults()
	}
	var qos uint
	var shapes string
	fs.StringVar(&c.Broker, "broker", "tcp://127.0.0.1:1883", "MQTT broker URL (tcp://, ssl://, ws://, wss://)")
	fs.IntVar(&c.Devices, "devices", 1, "number of simulated devices, one MQTT connection each")
	fs.Float64Var(&c.Rate, "rate", 1, "telemetry messages per second per device; 0 = as fast as acknowledgements allow")
	fs.IntVar(&c.Messages, "messages", 0, "telemetry messages per device, then stop; 0 = no limit")
	fs.DurationVar(&o.duration, "duration", 0, "stop after this long; 0 = no limit")
	fs.UintVar(&qos, "qos", 1, "MQTT QoS of publishes: 0 or 1")
	fs.IntVar(&c.Inflight, "inflight", sim.DefaultInflight, "max unacknowledged publishes per device")
	fs.StringVar(&c.TokenFormat, "token-format", sim.DefaultTokenFormat, "access token of device i, as fmt.Sprintf(format, i)")
	fs.StringVar(&c.DeviceNameFormat, "device-name-format", sim.DefaultDeviceNameFormat, "name and client id of device i, as fmt.Sprintf(format, i)")
	fs.StringVar(&c.ProvisionKey, "provision-key", "", "self-provision with this device profile key instead of --token-format")
	fs.StringVar(&c.ProvisionSecret, "provision-secret", "", "device profile provision secret (with --provision-key)")
	fs.StringVar(&shapes, "shapes", strings.Join(sim.DefaultShapes(), ","), "telemetry payload shapes to rotate, comma-separated")
	fs.IntVar(&c.AttributesEvery, "attributes-every", 0, "send client attributes every N telemetry messages; 0 = never")
	fs.BoolVar(&c.AnswerRPC, "answer-rpc", false, "subscribe to server-side RPC and answer it")
	fs.DurationVar(&c.StartSpread, "start-spread", 0, "spread the devices' first connections over this long")
	fs.BoolVar(&o.verbose, "verbose", false, "log every connection event, not only problems")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("firmware-sim: unexpected argument %q", fs.Arg(0))
	}
	switch qos {
	case 0:
		c.QoS = sim.AtMostOnce
	case 1:
		c.QoS = 1
	default:
		return o, fmt.Errorf("firmware-sim: --qos %d: ThingsBoard supports QoS 0 and 1", qos)
	}
	if o.duration < 0 {
		return o, fmt.Errorf("firmware-sim: --duration %v is negative", o.duration)
	}
	c.Shapes = strings.Split(shapes, ",")
	c.Provision = c.ProvisionKey != "" || c.ProvisionSecret != ""
	return o, nil
}

// run is main without the process: it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "modbus" {
		return runModbus(ctx, args[1:], stdout, stderr)
	}
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	tty := isTerminal(stderr)
	level := slog.LevelWarn
	if o.verbose {
		level = slog.LevelInfo
	}
	o.cfg.Logger = slog.New(slog.NewTextHandler(lineClearer{stderr, tty}, &slog.HandlerOptions{Level: level}))
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}

	start := time.Now()
	p := progressPrinter{w: stderr, tty: tty, start: start}
	sum, err := sim.Run(ctx, o.cfg, p.print)
	p.finish()
	if errors.Is(err, sim.ErrInvalidConfig) {
		fmt.Fprintln(stderr, err)
		return 2
	}
	printSummary(stdout, sum, time.Since(start))
	status := 0
	if err != nil {
		fmt.Fprintln(stderr, err)
		status = 1
	}
	if sum.Failed > 0 {
		fmt.Fprintf(stderr, "firmware-sim: %d messages failed\n", sum.Failed)
		status = 1
	}
	if sum.Acked == 0 {
		fmt.Fprintln(stderr, "firmware-sim: no message was acknowledged")
		status = 1
	}
	return status
}

// progressPrinter writes the live progress line: rewritten in place on a
// terminal, one line per second otherwise.
type progressPrinter struct {
	w         io.Writer
	tty       bool
	start     time.Time
	lastAcked int64
	lastAt    time.Time
	printed   bool
}

func (p *progressPrinter) print(s sim.Summary) {
	now := time.Now()
	since := p.lastAt
	if since.IsZero() {
		since = p.start
	}
	rate := float64(s.Acked-p.lastAcked) / now.Sub(since).Seconds()
	p.lastAcked, p.lastAt = s.Acked, now
	line := fmt.Sprintf("%6s  connected %d/%d  sent %d  acked %d (%.0f/s)  unconfirmed %d  failed %d  reconnects %d  rpc %d  p50 %v  p99 %v",
		now.Sub(p.start).Round(time.Second), s.Connected, s.Devices, s.Sent, s.Acked, rate,
		s.Unconfirmed, s.Failed, s.Reconnects, s.RPCAnswered, roundLatency(s.P50), roundLatency(s.P99))
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K"+line)
	} else {
		fmt.Fprintln(p.w, line)
	}
	p.printed = true
}

// finish ends an in-place progress line.
func (p *progressPrinter) finish() {
	if p.tty && p.printed {
		fmt.Fprintln(p.w)
	}
}

func printSummary(w io.Writer, s sim.Summary, took time.Duration) {
	perSecond := float64(s.Acked) / max(took.Seconds(), 1e-9)
	fmt.Fprintf(w, "firmware-sim summary after %v\n", took.Round(time.Millisecond))
	fmt.Fprintf(w, "  devices       %d (%d connected at the end, %d provisioned)\n", s.Devices, s.Connected, s.Provisioned)
	fmt.Fprintf(w, "  sent          %d\n", s.Sent)
	fmt.Fprintf(w, "  acknowledged  %d (%.1f/s)\n", s.Acked, perSecond)
	fmt.Fprintf(w, "  unconfirmed   %d (in flight across a reconnect or at the end)\n", s.Unconfirmed)
	fmt.Fprintf(w, "  failed        %d\n", s.Failed)
	fmt.Fprintf(w, "  retried       %d (refused while the connection dropped, sent again)\n", s.Retried)
	fmt.Fprintf(w, "  reconnects    %d\n", s.Reconnects)
	fmt.Fprintf(w, "  rpc answered  %d\n", s.RPCAnswered)
	fmt.Fprintf(w, "  attributes    %d\n", s.Attributes)
	fmt.Fprintf(w, "  latency       p50 %v  p99 %v  max %v (publish → PUBACK)\n",
		roundLatency(s.P50), roundLatency(s.P99), roundLatency(s.Max))
}

func roundLatency(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}

// lineClearer clears an in-place progress line before each log record.
type lineClearer struct {
	w   io.Writer
	tty bool
}

func (l lineClearer) Write(p []byte) (int, error) {
	if l.tty {
		if _, err := io.WriteString(l.w, "\r\033[K"); err != nil {
			return 0, err
		}
	}
	return l.w.Write(p)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
