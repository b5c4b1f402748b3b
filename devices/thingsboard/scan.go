package thingsboard

import (
	"bytes"
	"fmt"
	"sync"
	"unicode/utf8"
)

// This file holds the JSON scanner shared by every parser in the package:
// a strict RFC 8259 reader (see doc.go for the few places where it follows
// Gson's lenient mode instead). Strings are decoded, and nested values
// compacted (compact.go), into one arena, so a typical payload costs a
// handful of allocations whatever its number of keys.

// maxDepth bounds the nesting of arrays and objects, counting the root.
// ThingsBoard has no limit (Gson recurses until the stack overflows); a
// bound keeps depth bombs cheap.
const maxDepth = 64

// maxLinearKeys is the object size up to which duplicate keys are found by
// a linear scan; larger objects get a map so hostile payloads with
// thousands of keys stay linear.
const maxLinearKeys = 16

// parser is the scanning state. It is pooled: the arena and the scratch
// stacks are reused across calls, and everything returned to callers is
// copied out by the materialize helpers.
type parser struct {
	in  []byte
	pos int

	// arena receives decoded keys and strings, compacted nested JSON and
	// the plain text of numbers turned into strings.
	arena []byte
	// pad is the remaining budget of bytes by which numbers written out
	// in plain notation (1e400 → "1000…") may exceed their literal.
	pad int

	mems []member  // members of the objects being parsed (a stack)
	cms  []cmember // members of the objects being compacted (a stack)
	kvs  []ikv     // parsed key/values, in output order
	ents []ientry  // parsed entries, each a range of kvs
	devs []idevice // gateway devices, each a range of ents or kvs
	num  []byte    // scratch for normalising numeric strings
	dig  []byte    // scratch for the digits of a number
}

var parsers = sync.Pool{New: func() any { return new(parser) }}

// maxPooledArena is the largest arena put back in the pool, so one huge
// payload does not pin memory for ever.
const maxPooledArena = 256 << 10

// maxPooledItems bounds the scratch stacks kept in the pool.
const maxPooledItems = 8192

func getParser(in []byte) *parser {
	p := parsers.Get().(*parser)
	p.in = in
	p.pos = 0
	p.pad = 1024 + len(in)
	return p
}

func putParser(p *parser) {
	if cap(p.arena) > maxPooledArena || cap(p.kvs) > maxPooledItems || cap(p.mems) > maxPooledItems || cap(p.ents) > maxPooledItems {
		return
	}
	p.in = nil
	p.arena = p.arena[:0]
	p.mems = p.mems[:0]
	p.cms = p.cms[:0]
	p.kvs = p.kvs[:0]
	p.ents = p.ents[:0]
	p.devs = p.devs[:0]
	p.num = p.num[:0]
	p.dig = p.dig[:0]
	parsers.Put(p)
}

func (p *parser) fail(format string, args ...any) error {
	return &PayloadError{Offset: p.pos, Reason: fmt.Sprintf(format, args...)}
}

// ws skips JSON whitespace.
func (p *parser) ws() {
	for p.pos < len(p.in) {
		switch p.in[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

// peek returns the next byte, or 0 at the end of the input.
func (p *parser) peek() byte {
	if p.pos < len(p.in) {
		return p.in[p.pos]
	}
	return 0
}

// expect consumes c after optional whitespace.
func (p *parser) expect(c byte) error {
	p.ws()
	if p.peek() != c {
		return p.unexpected(fmt.Sprintf("%q", c))
	}
	p.pos++
	return nil
}

func (p *parser) unexpected(want string) error {
	if p.pos >= len(p.in) {
		return p.fail("unexpected end of input, want %s", want)
	}
	return p.fail("unexpected %q, want %s", p.in[p.pos], want)
}

// end checks that only whitespace follows the value.
func (p *parser) end() error {
	p.ws()
	if p.pos != len(p.in) {
		return p.fail("trailing data after the JSON value")
	}
	return nil
}

// next moves past the separator after a member or element: it returns
// true when another one follows and false at the closing byte.
func (p *parser) next(closing byte) (bool, error) {
	p.ws()
	switch p.peek() {
	case ',':
		p.pos++
		p.ws()
		return true, nil
	case closing:
		p.pos++
		return false, nil
	}
	return false, p.unexpected(fmt.Sprintf("',' or %q", closing))
}

// open consumes c ('{' or '[') and reports whether the container is
// empty (the closing byte was consumed too).
func (p *parser) open(c, closing byte, depth int) (empty bool, err error) {
	if depth > maxDepth {
		return false, p.fail("nesting deeper than %d levels", maxDepth)
	}
	p.ws()
	if p.peek() != c {
		return false, p.unexpected(fmt.Sprintf("%q", c))
	}
	p.pos++
	p.ws()
	if p.peek() == closing {
		p.pos++
		return true, nil
	}
	return false, nil
}

// key reads a member name and the colon after it; the decoded name is
// appended to the arena.
func (p *parser) key() (a, e int, err error) {
	if p.peek() != '"' {
		return 0, 0, p.unexpected("a member name")
	}
	a = len(p.arena)
	if p.arena, err = p.str(p.arena, false); err != nil {
		return 0, 0, err
	}
	e = len(p.arena)
	return a, e, p.expect(':')
}

// str reads the string literal at p.pos and appends it to dst, either
// decoded (quote=false) or re-escaped in canonical form between quotes
// (quote=true). Invalid UTF-8 becomes U+FFFD, as when the Java transport
// decodes the payload. Raw control characters are accepted, as Gson's
// lenient reader does, and escaped on output.
func (p *parser) str(dst []byte, quote bool) ([]byte, error) {
	p.pos++ // opening quote
	if quote {
		dst = append(dst, '"')
	}
	for {
		// Fast path: plain ASCII that needs no escaping.
		start := p.pos
		for p.pos < len(p.in) {
			c := p.in[p.pos]
			if c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
				break
			}
			p.pos++
		}
		dst = append(dst, p.in[start:p.pos]...)
		if p.pos >= len(p.in) {
			return dst, p.fail("unterminated string")
		}
		c := p.in[p.pos]
		switch {
		case c == '"':
			p.pos++
			if quote {
				dst = append(dst, '"')
			}
			return dst, nil
		case c == '\\':
			r, err := p.escape()
			if err != nil {
				return dst, err
			}
			dst = appendRune(dst, r, quote)
		case c < 0x20:
			p.pos++
			dst = appendRune(dst, rune(c), quote)
		default:
			r, size := utf8.DecodeRune(p.in[p.pos:])
			if r == utf8.RuneError && size == 1 {
				dst = append(dst, "\uFFFD"...)
			} else if quote && (r == '\u2028' || r == '\u2029') {
				dst = appendRune(dst, r, true)
			} else {
				dst = append(dst, p.in[p.pos:p.pos+size]...)
			}
			p.pos += size
		}
	}
}

// escape decodes the escape sequence at p.pos.
func (p *parser) escape() (rune, error) {
	if p.pos+1 >= len(p.in) {
		return 0, p.fail("unterminated string")
	}
	c := p.in[p.pos+1]
	p.pos += 2
	switch c {
	case '"', '\\', '/':
		return rune(c), nil
	case 'b':
		return '\b', nil
	case 'f':
		return '\f', nil
	case 'n':
		return '\n', nil
	case 'r':
		return '\r', nil
	case 't':
		return '\t', nil
	case 'u':
		r, ok := hex4(p.in[p.pos:])
		if !ok {
			return 0, p.fail("invalid \\u escape")
		}
		p.pos += 4
		if r < 0xD800 || r > 0xDFFF {
			return r, nil
		}
		// A surrogate: combine a high one with a following low one; a
		// lone half becomes U+FFFD, as Java's UTF-8 encoder does.
		if r <= 0xDBFF && p.pos+6 <= len(p.in) && p.in[p.pos] == '\\' && p.in[p.pos+1] == 'u' {
			if lo, ok := hex4(p.in[p.pos+2:]); ok && lo >= 0xDC00 && lo <= 0xDFFF {
				p.pos += 6
				return 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00), nil
			}
		}
		return utf8.RuneError, nil
	}
	p.pos -= 2
	return 0, p.fail("invalid escape \\%c", c)
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// appendRune appends r, escaped when quote is set.
func appendRune(dst []byte, r rune, quote bool) []byte {
	if !quote {
		return utf8.AppendRune(dst, r)
	}
	switch r {
	case '"':
		return append(dst, '\\', '"')
	case '\\':
		return append(dst, '\\', '\\')
	case '\n':
		return append(dst, '\\', 'n')
	case '\r':
		return append(dst, '\\', 'r')
	case '\t':
		return append(dst, '\\', 't')
	case '\b':
		return append(dst, '\\', 'b')
	case '\f':
		return append(dst, '\\', 'f')
	}
	if r < 0x20 || r == '\u2028' || r == '\u2029' {
		const hex = "0123456789abcdef"
		return append(dst, '\\', 'u', hex[r>>12&0xF], hex[r>>8&0xF], hex[r>>4&0xF], hex[r&0xF])
	}
	return utf8.AppendRune(dst, r)
}

// number validates the JSON number at p.pos and returns its span.
func (p *parser) number() (a, e int, err error) {
	a = p.pos
	i := p.pos
	in := p.in
	if i < len(in) && in[i] == '-' {
		i++
	}
	switch {
	case i < len(in) && in[i] == '0':
		i++
	case i < len(in) && in[i] >= '1' && in[i] <= '9':
		for i < len(in) && in[i] >= '0' && in[i] <= '9' {
			i++
		}
	default:
		p.pos = i
		return 0, 0, p.fail("invalid number")
	}
	if i < len(in) && in[i] == '.' {
		i++
		d := i
		for i < len(in) && in[i] >= '0' && in[i] <= '9' {
			i++
		}
		if i == d {
			p.pos = i
			return 0, 0, p.fail("invalid number: no digit after '.'")
		}
	}
	if i < len(in) && (in[i] == 'e' || in[i] == 'E') {
		i++
		if i < len(in) && (in[i] == '+' || in[i] == '-') {
			i++
		}
		d := i
		for i < len(in) && in[i] >= '0' && in[i] <= '9' {
			i++
		}
		if i == d {
			p.pos = i
			return 0, 0, p.fail("invalid number: no digit in exponent")
		}
	}
	p.pos = i
	return a, i, nil
}

// literal consumes true, false or null.
func (p *parser) literal() (byte, error) {
	for _, lit := range [...]string{"true", "false", "null"} {
		if bytes.HasPrefix(p.in[p.pos:], []byte(lit)) {
			p.pos += len(lit)
			return lit[0], nil
		}
	}
	return 0, p.unexpected("a JSON value")
}

// skip validates the value at p.pos without producing anything.
func (p *parser) skip(depth int) error {
	p.ws()
	switch c := p.peek(); {
	case c == '{':
		empty, err := p.open('{', '}', depth)
		if err != nil || empty {
			return err
		}
		for {
			p.ws()
			if p.peek() != '"' {
				return p.unexpected("a member name")
			}
			if err := p.skipString(); err != nil {
				return err
			}
			if err := p.expect(':'); err != nil {
				return err
			}
			if err := p.skip(depth + 1); err != nil {
				return err
			}
			more, err := p.next('}')
			if err != nil || !more {
				return err
			}
		}
	case c == '[':
		empty, err := p.open('[', ']', depth)
		if err != nil || empty {
			return err
		}
		for {
			if err := p.skip(depth + 1); err != nil {
				return err
			}
			more, err := p.next(']')
			if err != nil || !more {
				return err
			}
		}
	case c == '"':
		return p.skipString()
	case c == '-' || (c >= '0' && c <= '9'):
		_, _, err := p.number()
		return err
	default:
		_, err := p.literal()
		return err
	}
}

// skipString validates a string literal.
func (p *parser) skipString() error {
	p.pos++
	for p.pos < len(p.in) {
		switch p.in[p.pos] {
		case '"':
			p.pos++
			return nil
		case '\\':
			if _, err := p.escape(); err != nil {
				return err
			}
		default:
			p.pos++
		}
	}
	return p.fail("unterminated string")
}
