package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-iot/ferry/firmware-sim/modbussim"
)

// modbusOptions are the modbus subcommand's command line, parsed.
type modbusOptions struct {
	cfg      modbussim.Config
	listen   string // Modbus TCP URL; "" serves no TCP
	rtu      string // tty path, "pty", or "" for no RTU
	duration time.Duration
	verbose  bool
}

const modbusUsage = `usage: firmware-sim modbus [flags]

Simulates a Modbus energy meter (package firmware-sim/modbussim, which
documents the register map) behind one or more unit ids, over Modbus TCP
and/or Modbus RTU on a serial port or a new pty. Prints "tcp URL" and
"rtu PATH" lines to stdout once serving, and counters when it stops.

flags:`

func parseModbusFlags(args []string, stderr io.Writer) (modbusOptions, error) {
	var o modbusOptions
	c := &o.cfg
	fs := flag.NewFlagSet("firmware-sim modbus", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, modbusUsage)
		fs.PrintDefaults()
	}
	var unitList, wordOrder, deadList string
	var delay time.Duration
	var exceptions []string
	fs.StringVar(&o.listen, "listen", "tcp://127.0.0.1:5020", `Modbus TCP URL to serve; "" serves no TCP`)
	fs.StringVar(&o.rtu, "rtu", "", `serve Modbus RTU on this tty, or on a new pty with "pty" (its path goes to stdout)`)
	fs.IntVar(&c.Line.Baud, "baud", modbussim.DefaultBaud, "RTU line speed")
	fs.StringVar(&c.Line.Parity, "parity", modbussim.DefaultParity, "RTU parity: N, E or O")
	fs.IntVar(&c.Line.StopBits, "stop-bits", 0, "RTU stop bits, 1 or 2; 0 = 1 with parity, 2 without")
	fs.BoolVar(&c.Line.Emulate, "emulate-line", false, "pace RTU answers as on a real line at --baud, at most one transaction per modbussim.LineTime (a pty transfers at once)")
	fs.StringVar(&unitList, "units", "1", "unit ids to serve, comma-separated, ranges allowed (1,2,5-7)")
	fs.StringVar(&wordOrder, "word-order", "ABCD", "register order of 32/64-bit values: ABCD, DCBA, BADC or CDAB, for all units; UNIT=ORDER entries set one unit (CDAB,2=ABCD)")
	fs.StringVar(&deadList, "dead-units", "", "unit ids that never answer, comma-separated")
	fs.DurationVar(&delay, "delay", 0, "wait this long before every answer")
	fs.Func("exception", "answer exceptions for a range: UNIT:TABLE:FIRST-LAST[:CODE], TABLE coils, discrete, holding or input, CODE default 2 (repeatable)", func(s string) error {
		exceptions = append(exceptions, s)
		return nil
	})
	fs.DurationVar(&c.Tick, "tick", modbussim.DefaultTick, "meter update period")
	fs.Uint64Var(&c.Seed, "seed", modbussim.DefaultSeed, "meter noise seed")
	fs.DurationVar(&c.DeadHold, "dead-hold", modbussim.DefaultDeadHold, "Modbus TCP: hold a dead unit's request this long, then answer exception 0x0B")
	fs.DurationVar(&o.duration, "duration", 0, "stop after this long; 0 = until interrupted")
	fs.BoolVar(&o.verbose, "verbose", false, "log server start and stop, not only problems")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("firmware-sim modbus: unexpected argument %q", fs.Arg(0))
	}
	if o.listen == "" && o.rtu == "" {
		return o, errors.New("firmware-sim modbus: nothing to serve: give --listen or --rtu")
	}
	if o.duration < 0 {
		return o, fmt.Errorf("firmware-sim modbus: --duration %v is negative", o.duration)
	}
	var err error
	c.Units, err = buildUnits(unitList, wordOrder, deadList, delay, exceptions)
	return o, err
}

// buildUnits turns the unit flags into the units' configs.
func buildUnits(unitList, wordOrder, deadList string, delay time.Duration, exceptions []string) ([]modbussim.UnitConfig, error) {
	ids, err := parseUnitList(unitList)
	if err != nil {
		return nil, fmt.Errorf("firmware-sim modbus: --units: %w", err)
	}
	units := make([]modbussim.UnitConfig, len(ids))
	byID := map[uint8]*modbussim.UnitConfig{}
	for i, id := range ids {
		units[i] = modbussim.UnitConfig{ID: id, Delay: delay}
		byID[id] = &units[i]
	}
	served := func(flag string, id uint8) (*modbussim.UnitConfig, error) {
		if u, ok := byID[id]; ok {
			return u, nil
		}
		return nil, fmt.Errorf("firmware-sim modbus: %s: unit %d is not in --units", flag, id)
	}
	for _, entry := range strings.Split(wordOrder, ",") {
		unit, order, perUnit := strings.Cut(entry, "=")
		if !perUnit {
			order = unit
		}
		o, err := modbussim.ParseWordOrder(strings.TrimSpace(order))
		if err != nil {
			return nil, fmt.Errorf("firmware-sim modbus: --word-order: %w", err)
		}
		if !perUnit {
			for i := range units {
				units[i].WordOrder = o
			}
			continue
		}
		id, err := parseUnit(unit)
		if err != nil {
			return nil, fmt.Errorf("firmware-sim modbus: --word-order: %w", err)
		}
		u, err := served("--word-order", id)
		if err != nil {
			return nil, err
		}
		u.WordOrder = o
	}
	if deadList != "" {
		dead, err := parseUnitList(deadList)
		if err != nil {
			return nil, fmt.Errorf("firmware-sim modbus: --dead-units: %w", err)
		}
		for _, id := range dead {
			u, err := served("--dead-units", id)
			if err != nil {
				return nil, err
			}
			u.Dead = true
		}
	}
	for _, e := range exceptions {
		id, r, err := parseException(e)
		if err != nil {
			return nil, fmt.Errorf("firmware-sim modbus: --exception %q: %w", e, err)
		}
		u, err := served("--exception", id)
		if err != nil {
			return nil, err
		}
		u.Exceptions = append(u.Exceptions, r)
	}
	return units, nil
}

// parseUnitList parses "1,2,5-7".
func parseUnitList(s string) ([]uint8, error) {
	var ids []uint8
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		first, err := parseUnit(lo)
		if err != nil {
			return nil, err
		}
		last := first
		if isRange {
			if last, err = parseUnit(hi); err != nil {
				return nil, err
			}
		}
		if last < first {
			return nil, fmt.Errorf("range %q runs backwards", part)
		}
		for id := int(first); id <= int(last); id++ {
			if !slices.Contains(ids, uint8(id)) {
				ids = append(ids, uint8(id))
			}
		}
	}
	return ids, nil
}

func parseUnit(s string) (uint8, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 8)
	if err != nil {
		return 0, fmt.Errorf("unit id %q: %w", s, err)
	}
	return uint8(n), nil
}

// parseException parses UNIT:TABLE:FIRST-LAST[:CODE]; CODE is decimal or
// 0x-prefixed hex.
func parseException(s string) (uint8, modbussim.ExceptionRange, error) {
	var r modbussim.ExceptionRange
	parts := strings.Split(s, ":")
	if len(parts) != 3 && len(parts) != 4 {
		return 0, r, errors.New("want UNIT:TABLE:FIRST-LAST[:CODE]")
	}
	id, err := parseUnit(parts[0])
	if err != nil {
		return 0, r, err
	}
	if r.Table, err = modbussim.ParseTable(parts[1]); err != nil {
		return 0, r, err
	}
	first, last, isRange := strings.Cut(parts[2], "-")
	if !isRange {
		last = first
	}
	f, err := strconv.ParseUint(first, 0, 16)
	if err != nil {
		return 0, r, fmt.Errorf("first address: %w", err)
	}
	l, err := strconv.ParseUint(last, 0, 16)
	if err != nil {
		return 0, r, fmt.Errorf("last address: %w", err)
	}
	r.First, r.Last = uint16(f), uint16(l)
	if len(parts) == 4 {
		code, err := strconv.ParseUint(parts[3], 0, 8)
		if err != nil {
			return 0, r, fmt.Errorf("exception code: %w", err)
		}
		r.Code = byte(code)
	}
	return id, r, nil
}

// runModbus is the modbus subcommand: it returns the exit status, 0
// after an interrupt or --duration, 1 if serving failed, 2 for bad flags.
func runModbus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseModbusFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	level := slog.LevelWarn
	if o.verbose {
		level = slog.LevelInfo
	}
	o.cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	o.cfg.EnsureDefaults()
	s, err := modbussim.New(o.cfg)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	status := serveModbus(ctx, s, o, stdout, stderr)
	if err := s.Close(); err != nil {
		fmt.Fprintln(stderr, err)
		status = 1
	}
	st := s.Stats()
	fmt.Fprintf(stdout, "requests %d  answers %d  exceptions %d  silent %d  ignored %d  bad frames %d\n",
		st.Requests, st.Answers, st.Exceptions, st.Silent, st.Ignored, st.BadFrames)
	return status
}

// serveModbus serves until ctx ends, --duration passes or serving fails.
func serveModbus(ctx context.Context, s *modbussim.Slave, o modbusOptions, stdout, stderr io.Writer) int {
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	if o.listen != "" {
		t, err := s.StartTCP(o.listen)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintf(stdout, "tcp %s\n", t.URL())
	}
	if o.rtu == "" {
		<-ctx.Done()
		return 0
	}
	port, path, err := openRTU(o.rtu, o.cfg.Line)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "rtu %s\n", path)
	status := 0
	if err := s.ServeRTU(ctx, port); err != nil {
		fmt.Fprintln(stderr, err)
		status = 1
	}
	if err := port.Close(); err != nil {
		fmt.Fprintf(stderr, "firmware-sim modbus: close %s: %v\n", path, err)
		status = 1
	}
	return status
}

// openRTU opens the tty at path, or a new pty for "pty", and returns it
// with the path a client opens.
func openRTU(path string, line modbussim.Line) (io.ReadWriteCloser, string, error) {
	if path == "pty" {
		p, err := modbussim.OpenPTY()
		if err != nil {
			return nil, "", err
		}
		return p, p.Path, nil
	}
	f, err := modbussim.OpenSerial(path, line)
	return f, path, err
}
