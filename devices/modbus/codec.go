package modbus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/ferry-iot/ferry/configs"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// Register is a Modbus data table.
type Register uint8

// The four tables.
const (
	Coil     Register = iota // read/write bits (FC 1, 5, 15)
	Discrete                 // read-only bits (FC 2)
	Holding                  // read/write registers (FC 3, 6, 16)
	Input                    // read-only registers (FC 4)
)

var registerNames = [...]string{"coil", "discrete", "holding", "input"}

func (r Register) String() string { return registerNames[r] }

func (r Register) bits() bool { return r == Coil || r == Discrete }

func parseRegister(s string) (Register, error) {
	for i, n := range registerNames {
		if s == n {
			return Register(i), nil
		}
	}
	return 0, fmt.Errorf("%q is not coil, discrete, holding or input", s)
}

// Protocol limits of one read (Modbus application protocol v1.1b3, 6.1-6.4).
const (
	maxWords = 125
	maxBits  = 2000
)

// Type is how a point's registers are read.
type Type uint8

// Value types.
const (
	Bool Type = iota
	Int16
	Uint16
	Int32
	Uint32
	Int64
	Uint64
	Float32
	Float64
	String
)

var typeNames = [...]string{"bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"}

func (t Type) String() string { return typeNames[t] }

// words is the type's register count (strings: given by count).
func (t Type) words() int {
	switch t {
	case Int32, Uint32, Float32:
		return 2
	case Int64, Uint64, Float64:
		return 4
	}
	return 1
}

func parseType(s string) (Type, error) {
	for i, n := range typeNames {
		if s == n {
			return Type(i), nil
		}
	}
	return 0, fmt.Errorf("%q is not bool, int16, uint16, int32, uint32, int64, uint64, float32, float64 or string", s)
}

// Order is a byte and register order of multi-register values.
type Order struct {
	swapBytes bool // bytes swapped within each register (BADC, DCBA)
	swapWords bool // registers in reverse order (CDAB, DCBA)
}

func parseOrder(s string) (Order, error) {
	switch strings.ToUpper(s) {
	case "", "ABCD", "AB":
		return Order{}, nil
	case "DCBA", "BA":
		return Order{swapBytes: true, swapWords: true}, nil
	case "BADC":
		return Order{swapBytes: true}, nil
	case "CDAB":
		return Order{swapWords: true}, nil
	}
	return Order{}, fmt.Errorf("%q is not ABCD, DCBA, BADC or CDAB", s)
}

// point is a compiled Point.
type point struct {
	name  string // key or method
	reg   Register
	addr  uint16
	typ   Type
	n     int     // registers or bits read
	scale float64 // 0: none
	pow10 float64 // 10^(the scale's decimals): scaled integers round to them; 0: round with roundScaled
	bit   int     // -1: whole value
	order Order
	index int // in its device's values
}

// compilePoint checks pt and compiles it with the device's default
// order; errors name keys relative to the point.
func compilePoint(pt Point, deviceOrder string) (point, error) {
	var p configs.Problems
	c := point{name: pt.Key, addr: uint16(pt.Address), scale: pt.Scale, bit: -1}
	if pt.Method != "" {
		c.name = pt.Method
	}
	var err error
	if c.reg, err = parseRegister(pt.Register); err != nil {
		p.Add("register", "%v", err)
	}
	typ := pt.Type
	if typ == "" && c.reg.bits() {
		typ = "bool"
	}
	if c.typ, err = parseType(typ); err != nil {
		p.Add("type", "%v", err)
	}
	order := pt.ByteOrder
	if order == "" {
		order = deviceOrder
	}
	if c.order, err = parseOrder(order); err != nil {
		p.Add("byte_order", "%v", err)
	}
	if pt.Scale < 0 || math.IsNaN(pt.Scale) || math.IsInf(pt.Scale, 0) {
		p.Add("scale", "%v is not a positive number", pt.Scale)
	} else if pt.Scale != 0 {
		// An integer times a scale of d decimals has at most d decimals:
		// rounding to them removes the binary noise exactly.
		txt := strconv.FormatFloat(pt.Scale, 'f', -1, 64)
		if _, frac, ok := strings.Cut(txt, "."); !ok {
			c.pow10 = 1
		} else if len(frac) <= 9 {
			c.pow10 = math.Pow(10, float64(len(frac)))
		}
	}
	switch {
	case c.reg.bits():
		c.n = 1
		if c.typ != Bool {
			p.Add("type", "%s registers hold bits: bool only", c.reg)
		}
		if pt.Bit != nil {
			p.Add("bit", "applies to holding and input registers")
		}
		if pt.Scale != 0 {
			p.Add("scale", "does not apply to bits")
		}
	case c.typ == String:
		c.n = pt.Count
		if pt.Count < 1 || pt.Count > maxWords {
			p.Add("count", "%d: a string needs its register count (1-%d)", pt.Count, maxWords)
		}
		if pt.Scale != 0 {
			p.Add("scale", "does not apply to strings")
		}
	default:
		c.n = c.typ.words()
		if pt.Count != 0 && pt.Count != c.n {
			p.Add("count", "%d: %s is %d register(s)", pt.Count, c.typ, c.n)
		}
	}
	if pt.Bit != nil {
		c.bit = *pt.Bit
		if c.typ != Bool {
			p.Add("bit", "needs type bool")
		}
		if c.bit < 0 || c.bit > 15 {
			p.Add("bit", "%d is not 0-15", c.bit)
		}
	}
	if c.typ == Bool && !c.reg.bits() && pt.Scale != 0 {
		p.Add("scale", "does not apply to bool")
	}
	if pt.Address < 0 || pt.Address+c.n > 65536 {
		p.Add("address", "%d is not within 0-65535 (for %d registers)", pt.Address, max(c.n, 1))
	}
	return c, p.Err()
}

// decode reads the point's value from its registers (words) or bits.
func (c *point) decode(words []uint16, bits []bool) (tb.Value, error) {
	if c.reg.bits() {
		return tb.Value{Kind: tb.KindBool, Bool: bits[0]}, nil
	}
	if c.typ == Bool {
		w := words[0]
		if c.bit >= 0 {
			return tb.Value{Kind: tb.KindBool, Bool: w&(1<<c.bit) != 0}, nil
		}
		return tb.Value{Kind: tb.KindBool, Bool: w != 0}, nil
	}
	b := c.order.bytes(words)
	if c.typ == String {
		s := strings.TrimRight(string(b), "\x00 ")
		if i := strings.IndexByte(s, 0); i >= 0 {
			s = s[:i]
		}
		return tb.Value{Kind: tb.KindString, Str: s}, nil
	}
	var i int64
	var u uint64
	var f float64
	isInt, signed := true, true
	switch c.typ {
	case Int16:
		i = int64(int16(binary.BigEndian.Uint16(b)))
	case Uint16:
		i = int64(binary.BigEndian.Uint16(b))
	case Int32:
		i = int64(int32(binary.BigEndian.Uint32(b)))
	case Uint32:
		i = int64(binary.BigEndian.Uint32(b))
	case Int64:
		i = int64(binary.BigEndian.Uint64(b))
	case Uint64:
		u, signed = binary.BigEndian.Uint64(b), false
	case Float32:
		f, isInt = float64(math.Float32frombits(binary.BigEndian.Uint32(b))), false
	case Float64:
		f, isInt = math.Float64frombits(binary.BigEndian.Uint64(b)), false
	}
	if isInt {
		if !signed {
			if u > math.MaxInt64 || c.scale != 0 {
				f, isInt = float64(u), false
			} else {
				i = int64(u)
			}
		}
		if isInt && c.scale == 0 {
			return tb.Value{Kind: tb.KindLong, Long: i}, nil
		}
		if isInt {
			f = float64(i)
		}
	}
	switch {
	case c.scale != 0 && isInt && c.pow10 != 0:
		f = math.Round(f*c.scale*c.pow10) / c.pow10
	case c.scale != 0:
		f = roundScaled(f * c.scale)
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return tb.Value{}, fmt.Errorf("modbus: %s reads as %v", c.name, f)
	}
	return tb.Value{Kind: tb.KindDouble, Double: f}, nil
}

// roundScaled removes the binary noise of a scale (215 × 0.1 is
// 21.500000000000004): twelve significant digits are more than any
// register holds.
func roundScaled(f float64) float64 {
	if f == 0 || math.IsNaN(f) || math.IsInf(f, 0) {
		return f
	}
	exp := math.Floor(math.Log10(math.Abs(f)))
	p := math.Pow(10, 11-exp)
	if math.IsInf(p, 0) || p == 0 {
		return f
	}
	return math.Round(f*p) / p
}

// bytes lays the registers out in big-endian ABCD order.
func (o Order) bytes(words []uint16) []byte {
	b := make([]byte, 2*len(words))
	n := len(words)
	for i, w := range words {
		j := i
		if o.swapWords {
			j = n - 1 - i
		}
		if o.swapBytes {
			w = w<<8 | w>>8
		}
		binary.BigEndian.PutUint16(b[2*j:], w)
	}
	return b
}

// words is the inverse of bytes.
func (o Order) words(b []byte) []uint16 {
	n := len(b) / 2
	out := make([]uint16, n)
	for i := range n {
		j := i
		if o.swapWords {
			j = n - 1 - i
		}
		w := binary.BigEndian.Uint16(b[2*j:])
		if o.swapBytes {
			w = w<<8 | w>>8
		}
		out[i] = w
	}
	return out
}

// errValue is a write value that does not fit the point.
var errValue = errors.New("modbus: value does not fit")

// encode turns a value for the point into registers (or a coil state).
func (c *point) encode(v tb.Value) ([]uint16, bool, error) {
	if c.reg.bits() || c.typ == Bool {
		switch {
		case v.Kind == tb.KindBool:
			return nil, v.Bool, nil
		case v.Kind == tb.KindLong && (v.Long == 0 || v.Long == 1):
			return nil, v.Long == 1, nil
		}
		return nil, false, fmt.Errorf("%w: %s takes true or false", errValue, c.name)
	}
	if c.typ == String {
		if v.Kind != tb.KindString || len(v.Str) > 2*c.n {
			return nil, false, fmt.Errorf("%w: %s takes a string of at most %d bytes", errValue, c.name, 2*c.n)
		}
		b := make([]byte, 2*c.n)
		copy(b, v.Str)
		return c.order.words(b), false, nil
	}
	var f float64
	switch v.Kind {
	case tb.KindLong:
		f = float64(v.Long)
	case tb.KindDouble:
		f = v.Double
	case tb.KindBool:
		if v.Bool {
			f = 1
		}
	default:
		return nil, false, fmt.Errorf("%w: %s takes a number", errValue, c.name)
	}
	if c.scale != 0 {
		f /= c.scale
	}
	b := make([]byte, 2*c.typ.words())
	if c.typ == Float32 {
		binary.BigEndian.PutUint32(b, math.Float32bits(float32(f)))
		return c.order.words(b), false, nil
	}
	if c.typ == Float64 {
		binary.BigEndian.PutUint64(b, math.Float64bits(f))
		return c.order.words(b), false, nil
	}
	if v.Kind == tb.KindLong && c.scale == 0 {
		// Exact: a 64-bit integer does not survive a float64.
		if !c.typ.holds(v.Long) {
			return nil, false, fmt.Errorf("%w: %d is outside %s's range", errValue, v.Long, c.typ)
		}
		putInt(b, c.typ, uint64(v.Long))
		return c.order.words(b), false, nil
	}
	r := math.Round(f)
	lo, hi := c.typ.intRange()
	if math.IsNaN(r) || r < lo || r >= hi+1 {
		return nil, false, fmt.Errorf("%w: %v is outside %s's range", errValue, f, c.typ)
	}
	if c.typ == Uint64 {
		putInt(b, c.typ, uint64(r))
	} else {
		putInt(b, c.typ, uint64(int64(r)))
	}
	return c.order.words(b), false, nil
}

// putInt writes the low bytes of u that t holds, big-endian.
func putInt(b []byte, t Type, u uint64) {
	switch t.words() {
	case 1:
		binary.BigEndian.PutUint16(b, uint16(u))
	case 2:
		binary.BigEndian.PutUint32(b, uint32(u))
	default:
		binary.BigEndian.PutUint64(b, u)
	}
}

// holds reports whether integer type t holds i.
func (t Type) holds(i int64) bool {
	lo, hi := t.intRange()
	if t == Int64 || t == Uint64 {
		return t == Int64 || i >= 0
	}
	return float64(i) >= lo && float64(i) <= hi
}

func (t Type) intRange() (lo, hi float64) {
	switch t {
	case Int16:
		return math.MinInt16, math.MaxInt16
	case Uint16:
		return 0, math.MaxUint16
	case Int32:
		return math.MinInt32, math.MaxInt32
	case Uint32:
		return 0, math.MaxUint32
	case Int64:
		return math.MinInt64, math.MaxInt64
	}
	return 0, math.MaxUint64
}
