package modbussim

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/ferry-iot/ferry/configs"
)

// Defaults, exported so the command can document them.
const (
	DefaultUnit     = 1
	DefaultTick     = 100 * time.Millisecond
	DefaultDeadHold = time.Second
	DefaultBaud     = 9600
	DefaultParity   = "E"
	DefaultSeed     = 1
)

// Table is one of the four Modbus data tables.
type Table uint8

// The data tables.
const (
	Coils            Table = iota + 1 // read/write bits, FC 1, 5, 15
	DiscreteInputs                    // read-only bits, FC 2
	HoldingRegisters                  // read/write 16-bit registers, FC 3, 6, 16
	InputRegisters                    // read-only 16-bit registers, FC 4
)

var tableNames = map[Table]string{
	Coils: "coils", DiscreteInputs: "discrete", HoldingRegisters: "holding", InputRegisters: "input",
}

func (t Table) String() string {
	if n, ok := tableNames[t]; ok {
		return n
	}
	return fmt.Sprintf("Table(%d)", uint8(t))
}

// ParseTable parses "coils", "discrete", "holding" or "input".
func ParseTable(s string) (Table, error) {
	for t, n := range tableNames {
		if strings.EqualFold(s, n) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("modbussim: unknown table %q (want coils, discrete, holding or input)", s)
}

// ExceptionRange makes a unit answer every request that touches
// [First, Last] of Table with exception Code instead of data.
type ExceptionRange struct {
	Table       Table
	First, Last uint16
	Code        byte // ExIllegalDataAddress when zero
}

// Line is the serial framing of the RTU slave: 8 data bits, Parity and
// StopBits. Over a pty it only matters for the emulated line timing.
type Line struct {
	// Baud is the line speed in bits per second (default 9600).
	Baud int
	// Parity is "N", "E" or "O" (default "E", the Modbus default).
	Parity string
	// StopBits is 1 or 2 (default 1 with parity, 2 without, so that a
	// character is 11 bits as the Modbus serial line spec asks).
	StopBits int
	// Emulate makes the slave answer when the answer would be complete on
	// a real line, and carry at most one transaction per LineTime (see
	// LineTime): a pty transfers instantly.
	Emulate bool
}

// BitsPerChar is the length of one character on the line: a start bit,
// 8 data bits, the parity bit if any, and the stop bits.
func (l Line) BitsPerChar() int {
	bits := 1 + 8 + l.StopBits
	if l.Parity != "N" {
		bits++
	}
	return bits
}

// UnitConfig is one unit id the slave serves and the faults it starts
// with (the Slave methods change them later).
type UnitConfig struct {
	// ID is the unit id (slave address), 1..247.
	ID uint8
	// WordOrder is the register order of values wider than 16 bits
	// (default ABCD, big-endian).
	WordOrder WordOrder
	// Dead units never answer (see Slave.SetDead).
	Dead bool
	// Delay is waited before every answer (see Slave.SetDelay).
	Delay time.Duration
	// Exceptions are address ranges answered with an exception.
	Exceptions []ExceptionRange
}

// Config describes a Slave. Zero fields take the defaults EnsureDefaults
// documents; New validates the config once and reports every problem at
// once.
type Config struct {
	// Units are the unit ids served, each with its own register banks
	// (default: unit 1 alone).
	Units []UnitConfig
	// Tick is the meter's update period (default 100 ms).
	Tick time.Duration
	// ManualClock stops the meter's clock: values change only when
	// Slave.Advance is called, so tests see exactly the values they step
	// to.
	ManualClock bool
	// Seed seeds the meter noise (default 1); the same seed gives the same
	// values after the same steps.
	Seed uint64
	// DeadHold is how long the TCP server holds a request to a dead unit
	// before it answers exception 0x0B, as a Modbus TCP gateway does when
	// the serial device behind it is silent (default 1 s). The RTU slave
	// never answers a dead unit.
	DeadHold time.Duration
	// Line is the RTU serial framing.
	Line Line
	// Logger receives server start and stop, and I/O errors (default:
	// discard). Bad frames are counted in Stats, not logged.
	Logger *slog.Logger
}

// EnsureDefaults fills zero fields with their defaults.
func (c *Config) EnsureDefaults() {
	if len(c.Units) == 0 {
		c.Units = []UnitConfig{{ID: DefaultUnit}}
	}
	for i := range c.Units {
		for j := range c.Units[i].Exceptions {
			if c.Units[i].Exceptions[j].Code == 0 {
				c.Units[i].Exceptions[j].Code = ExIllegalDataAddress
			}
		}
	}
	if c.Tick == 0 {
		c.Tick = DefaultTick
	}
	if c.Seed == 0 {
		c.Seed = DefaultSeed
	}
	if c.DeadHold == 0 {
		c.DeadHold = DefaultDeadHold
	}
	if c.Line.Baud == 0 {
		c.Line.Baud = DefaultBaud
	}
	if c.Line.Parity == "" {
		c.Line.Parity = DefaultParity
	}
	c.Line.Parity = strings.ToUpper(c.Line.Parity)
	if c.Line.StopBits == 0 {
		c.Line.StopBits = 1
		if c.Line.Parity == "N" {
			c.Line.StopBits = 2
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every problem at once, each a *configs.FieldError
// naming its Config field ("Units[1].ID") and wrapping ErrInvalidConfig.
// Call it after EnsureDefaults.
func (c *Config) Validate() error {
	p := configs.Problems{Kind: ErrInvalidConfig}
	bad := p.Add
	seen := map[uint8]bool{}
	for i, u := range c.Units {
		key := fmt.Sprintf("Units[%d]", i)
		if u.ID < 1 || u.ID > 247 {
			bad(key+".ID", "%d is outside 1..247", u.ID)
		}
		if seen[u.ID] {
			bad(key+".ID", "unit %d is listed twice", u.ID)
		}
		seen[u.ID] = true
		if _, ok := wordOrderNames[u.WordOrder]; !ok {
			bad(key+".WordOrder", "unknown word order %d", u.WordOrder)
		}
		if u.Delay < 0 {
			bad(key+".Delay", "%v is negative", u.Delay)
		}
		for j, r := range u.Exceptions {
			if err := r.validate(); err != nil {
				bad(fmt.Sprintf("%s.Exceptions[%d]", key, j), "%s", err)
			}
		}
	}
	if c.Tick < time.Millisecond {
		bad("Tick", "%v is under 1ms", c.Tick)
	}
	if c.DeadHold < 0 {
		bad("DeadHold", "%v is negative", c.DeadHold)
	}
	if c.Line.Baud < 50 || c.Line.Baud > 4_000_000 {
		bad("Line.Baud", "%d is outside 50..4000000", c.Line.Baud)
	}
	if !slices.Contains([]string{"N", "E", "O"}, c.Line.Parity) {
		bad("Line.Parity", "%q is not N, E or O", c.Line.Parity)
	}
	if c.Line.StopBits != 1 && c.Line.StopBits != 2 {
		bad("Line.StopBits", "%d is not 1 or 2", c.Line.StopBits)
	}
	return p.Err()
}

// validate checks one range; its text is the problem without a key.
func (r ExceptionRange) validate() error {
	var problems []string
	if _, ok := tableNames[r.Table]; !ok {
		problems = append(problems, fmt.Sprintf("unknown table %d", r.Table))
	}
	if r.First > r.Last {
		problems = append(problems, fmt.Sprintf("first address %d is after last %d", r.First, r.Last))
	}
	if _, ok := exceptionErrors[r.Code]; !ok {
		problems = append(problems, fmt.Sprintf("exception code %#02x is not one of 01-06, 08, 0A, 0B", r.Code))
	}
	if problems == nil {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(problems, "; "))
}

// overlaps reports whether [addr, addr+qty) touches the range.
func (r ExceptionRange) overlaps(t Table, addr, qty uint16) bool {
	last := int(addr) + int(qty) - 1
	return t == r.Table && int(addr) <= int(r.Last) && last >= int(r.First)
}
