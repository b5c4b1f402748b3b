package thingsboard

import (
	"math"
	"strconv"
	"unicode"
	"unicode/utf8"
)

// Typing rules for numbers and numeric strings.
//
// ThingsBoard's JsonConverter (common/proto/.../adaptor/JsonConverter.java,
// parseProtoValues and buildNumericKeyValueProto; type cast enabled, the
// default) does, for a JSON number or for a string that passes
// commons-lang3 NumberUtils.isParsable:
//
//	var bd = new BigDecimal(valueAsString);
//	if (bd.stripTrailingZeros().scale() <= 0 && !isSimpleDouble(valueAsString)) {
//	    LONG bd.longValueExact(), or on overflow STRING bd.toPlainString()
//	} else if (bd.scale() <= 16) {
//	    DOUBLE bd.doubleValue()
//	} else {
//	    STRING bd.toPlainString()
//	}
//	isSimpleDouble(s) = s.contains(".") && !s.contains("E") && !s.contains("e")
//
// For a string the whole conversion sits in a try block whose catch stores
// the original string, and isParsable accepts only an optional leading '-',
// digits (Character.isDigit, so any BMP decimal digit) and at most one '.',
// not at the end: no '+', no exponent, no spaces.
//
// So: 42 → LONG; 42.0 → DOUBLE; "42" → LONG; 4.2e1 → LONG 42 (integral,
// not a "simple double"); 1.5e-3 → DOUBLE; 123456789012345678901 → STRING;
// 1e400 → STRING "1" followed by 400 zeros; 0.12345678901234567 (scale 17)
// → STRING.
//
// Where this package departs from the Java code, for safety or so that
// canonical output parses back to the same value:
//   - a number whose plain form would be far longer than its literal
//     (1e100000) is refused once the per-payload padding budget (1 KiB plus
//     the payload size) is spent; Java would build the string;
//   - an exponent outside the int32 range is refused (Java: NumberFormatException,
//     which closes the connection);
//   - a double that overflows to ±Inf is refused (Java stores Infinity);
//   - an integral value that overflows int64 and was written with trailing
//     fractional zeros and an exponent (12345678901234567890.0e0) becomes the
//     STRING of its integer digits; Java keeps the ".0", which would parse
//     back as a DOUBLE.

// decimal is a number literal split as BigDecimal sees it: the value is
// (-1)^neg × digits × 10^(-scale), digits without leading zeros.
type decimal struct {
	neg    bool
	digits []byte // no leading zeros; empty means zero
	scale  int64
	dot    bool // the literal has a '.'
	exp    bool // the literal has an exponent
}

// maxExponent is the largest exponent magnitude BigDecimal accepts.
const maxExponent = math.MaxInt32

// parseDecimal splits a literal that is already known to be well formed:
// a JSON number, or a string accepted by isParsable and normalised to
// ASCII digits. When the digits must be joined they go to *scratch (nil:
// a new slice).
func parseDecimal(lit []byte, scratch *[]byte) (decimal, bool) {
	var d decimal
	i := 0
	if i < len(lit) && lit[i] == '-' {
		d.neg = true
		i++
	}
	start := i
	for i < len(lit) && lit[i] >= '0' && lit[i] <= '9' {
		i++
	}
	intPart := lit[start:i]
	var frac []byte
	if i < len(lit) && lit[i] == '.' {
		d.dot = true
		i++
		fs := i
		for i < len(lit) && lit[i] >= '0' && lit[i] <= '9' {
			i++
		}
		frac = lit[fs:i]
	}
	var exp int64
	if i < len(lit) && (lit[i] == 'e' || lit[i] == 'E') {
		d.exp = true
		i++
		eneg := false
		if i < len(lit) && (lit[i] == '+' || lit[i] == '-') {
			eneg = lit[i] == '-'
			i++
		}
		for ; i < len(lit); i++ {
			if exp <= maxExponent {
				exp = exp*10 + int64(lit[i]-'0')
			}
		}
		if exp > maxExponent {
			return d, false
		}
		if eneg {
			exp = -exp
		}
	}
	// digits = intPart ++ frac without leading zeros. Usually one of the
	// two is empty or intPart is "0", so no copy is needed.
	switch {
	case len(frac) == 0:
		d.digits = trimZeros(intPart)
	case len(trimZeros(intPart)) == 0:
		d.digits = trimZeros(frac)
	default:
		var buf []byte
		if scratch != nil {
			buf = (*scratch)[:0]
		}
		buf = append(append(buf, trimZeros(intPart)...), frac...)
		if scratch != nil {
			*scratch = buf
		}
		d.digits = buf
	}
	d.scale = int64(len(frac)) - exp
	if d.scale > math.MaxInt32 || d.scale < math.MinInt32 {
		return d, false
	}
	return d, true
}

func trimZeros(b []byte) []byte {
	for len(b) > 0 && b[0] == '0' {
		b = b[1:]
	}
	return b
}

// strippedScale is bd.stripTrailingZeros().scale(); zero strips to scale 0.
func (d decimal) strippedScale() int64 {
	if len(d.digits) == 0 {
		return 0
	}
	tz := 0
	for tz < len(d.digits) && d.digits[len(d.digits)-1-tz] == '0' {
		tz++
	}
	return d.scale - int64(tz)
}

// int64 returns the value when it is an integer that fits an int64.
func (d decimal) int64() (int64, bool) {
	if d.strippedScale() > 0 {
		return 0, false
	}
	if len(d.digits) == 0 {
		return 0, true
	}
	n := int64(len(d.digits)) - d.scale // digits of the integer
	if n > 19 {
		return 0, false
	}
	var u uint64
	for i := int64(0); i < n; i++ {
		c := byte('0')
		if i < int64(len(d.digits)) {
			c = d.digits[i]
		}
		u = u*10 + uint64(c-'0') // n ≤ 19 digits cannot wrap uint64
	}
	if d.neg {
		if u > 1<<63 {
			return 0, false
		}
		return -int64(u), true // u == 1<<63 wraps to math.MinInt64, as wanted
	}
	if u > math.MaxInt64 {
		return 0, false
	}
	return int64(u), true
}

// float64pow10 holds the powers of ten that float64 represents exactly.
var float64pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// float is Clinger's fast path: with at most 15 digits and a power of ten
// up to 1e22, both operands are exact and one IEEE operation rounds
// correctly, as BigDecimal.doubleValue does. ok is false otherwise.
func (d decimal) float() (float64, bool) {
	if len(d.digits) > 15 || d.scale > 22 || d.scale < -22 {
		return 0, false
	}
	var m uint64
	for _, c := range d.digits {
		m = m*10 + uint64(c-'0')
	}
	f := float64(m)
	if d.scale >= 0 {
		f /= float64pow10[d.scale]
	} else {
		if m > 1<<53 {
			return 0, false
		}
		f *= float64pow10[-d.scale]
	}
	if d.neg {
		f = -f
	}
	return f, true
}

// plainLen is the length of the text appendPlain writes.
func (d decimal) plainLen(integer bool) int64 {
	nd := int64(len(d.digits))
	if nd == 0 {
		if integer || d.scale <= 0 {
			return 1
		}
		return 2 + d.scale
	}
	n := int64(0)
	if d.neg {
		n = 1
	}
	switch {
	case integer || d.scale <= 0:
		return n + nd - d.scale
	case nd > d.scale:
		return n + nd + 1
	default:
		return n + 2 + d.scale
	}
}

// appendPlain appends BigDecimal.toPlainString(). With integer set, a
// positive scale is dropped (the digits it covers are zeros, see the file
// comment).
func (d decimal) appendPlain(dst []byte, integer bool) []byte {
	if d.neg && len(d.digits) > 0 {
		dst = append(dst, '-')
	}
	nd := int64(len(d.digits))
	switch {
	case nd == 0 && (integer || d.scale <= 0):
		return append(dst, '0')
	case d.scale <= 0:
		dst = append(dst, d.digits...)
		for i := int64(0); i < -d.scale; i++ {
			dst = append(dst, '0')
		}
		return dst
	case integer:
		return append(dst, d.digits[:nd-d.scale]...)
	case nd > d.scale:
		dst = append(dst, d.digits[:nd-d.scale]...)
		dst = append(dst, '.')
		return append(dst, d.digits[nd-d.scale:]...)
	default:
		dst = append(dst, '0', '.')
		for i := int64(0); i < d.scale-nd; i++ {
			dst = append(dst, '0')
		}
		return append(dst, d.digits...)
	}
}

// classifyNumber types a JSON number token; see the file comment.
func (p *parser) classifyNumber(v *ival, lit []byte) {
	d, ok := parseDecimal(lit, &p.dig)
	if !ok {
		v.bad = badExponent
		return
	}
	v.bad = p.classify(v, d, lit)
}

// classifyString types a decoded string: numeric strings become numbers
// (type cast), everything else, and any numeric string the conversion
// refuses, stays a STRING.
func (p *parser) classifyString(v *ival) {
	v.kind = KindString
	s := p.arena[v.a:v.e]
	lit, ok := p.parsable(s)
	if !ok {
		return
	}
	d, ok := parseDecimal(lit, &p.dig)
	if !ok {
		return
	}
	saved := *v
	if p.classify(v, d, lit) != badNone {
		*v = saved
	}
}

// classify sets v from d. It returns a reason when the number cannot be
// represented.
func (p *parser) classify(v *ival, d decimal, lit []byte) badNumber {
	simple := d.dot && !d.exp
	if d.strippedScale() <= 0 && !simple {
		if n, ok := d.int64(); ok {
			v.kind, v.n = KindLong, uint64(n)
			return badNone
		}
		return p.plain(v, d, lit, true)
	}
	if d.scale <= 16 {
		if len(d.digits) == 0 {
			v.kind, v.n = KindDouble, 0 // BigDecimal has no -0
			return badNone
		}
		f, ok := d.float()
		if !ok {
			var err error
			f, err = strconv.ParseFloat(string(lit), 64)
			if err != nil || math.IsInf(f, 0) {
				return badDoubleRange
			}
		}
		v.kind, v.n = KindDouble, math.Float64bits(f)
		return badNone
	}
	return p.plain(v, d, lit, false)
}

// plain stores d as a STRING in plain notation, charging the growth over
// the literal to the padding budget.
func (p *parser) plain(v *ival, d decimal, lit []byte, integer bool) badNumber {
	n := d.plainLen(integer)
	if grow := n - int64(len(lit)); grow > 0 {
		if grow > int64(p.pad) {
			return badTooLong
		}
		p.pad -= int(grow)
	}
	v.kind = KindString
	v.a = len(p.arena)
	p.arena = d.appendPlain(p.arena, integer)
	v.e = len(p.arena)
	return badNone
}

// parsable implements NumberUtils.isParsable on a decoded string and
// returns it with every decimal digit mapped to ASCII.
func (p *parser) parsable(s []byte) ([]byte, bool) {
	if len(s) == 0 || s[len(s)-1] == '.' {
		return nil, false
	}
	i := 0
	if s[0] == '-' {
		if len(s) == 1 {
			return nil, false
		}
		i = 1
	}
	dots := 0
	ascii := true
	for _, c := range s[i:] {
		switch {
		case c == '.':
			dots++
			if dots > 1 {
				return nil, false
			}
		case c >= '0' && c <= '9':
		case c >= utf8.RuneSelf:
			ascii = false
		default:
			return nil, false
		}
	}
	if ascii {
		return s, true
	}
	// Slow path: Java's Character.isDigit accepts every BMP decimal digit
	// (the string is UTF-16, so a supplementary digit is two surrogates
	// and is not a digit), and BigDecimal parses them.
	p.num = p.num[:0]
	for len(s) > 0 {
		r, size := utf8.DecodeRune(s)
		s = s[size:]
		switch {
		case r < utf8.RuneSelf:
			p.num = append(p.num, byte(r))
		default:
			dv, ok := javaDigit(r)
			if !ok {
				return nil, false
			}
			p.num = append(p.num, '0'+dv)
		}
	}
	return p.num, true
}

// javaDigit returns the value of a BMP decimal digit (Unicode category Nd).
// Nd code points come in runs of ten starting at a zero, so the value is
// the offset from the start of the table range modulo ten.
func javaDigit(r rune) (byte, bool) {
	if r > 0xFFFF || r == utf8.RuneError {
		return 0, false
	}
	for _, rg := range unicode.Nd.R16 {
		if uint16(r) < rg.Lo {
			return 0, false
		}
		if uint16(r) <= rg.Hi {
			return byte((uint16(r) - rg.Lo) % 10), true
		}
	}
	return 0, false
}

// javaLong parses a value the way JsonElement.getAsLong does, restricted
// to exact integers: a number literal whose value is an integer in the
// int64 range (Java truncates fractions and wraps overflow; we refuse), or
// a string Long.parseLong accepts (optional sign, ASCII digits).
func javaLong(raw []byte, quoted bool, decoded []byte) (int64, bool) {
	if quoted {
		// Long.parseLong: optional sign, decimal digits, int64 range;
		// strconv.ParseInt with base 10 has the same grammar.
		n, err := strconv.ParseInt(string(decoded), 10, 64)
		return n, err == nil
	}
	d, ok := parseDecimal(raw, nil)
	if !ok {
		return 0, false
	}
	return d.int64()
}
