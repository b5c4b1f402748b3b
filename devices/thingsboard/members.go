package thingsboard

import "bytes"

// Parsed values and object members, before they are copied out of the
// parser (value.go materialize), and the duplicate-key rule shared by the
// member parsers.

// ival is a parsed value before it is copied out of the arena. It is kept
// small: hostile payloads may hold thousands of members.
type ival struct {
	n      uint64 // KindLong: the value; KindDouble: math.Float64bits
	a, e   int    // arena range of a string or compact JSON
	ra, re int    // raw span in the input

	kind     ValueKind
	tok      byte // first byte of the raw value: '"', '-'/digit, 't', 'f', 'n', '{', '['
	null     bool
	b        bool
	deferred bool      // object kept raw ("values" of an entry), compacted on demand
	bad      badNumber // why a number cannot be represented, or 0
}

// badNumber says why a number was refused; see number.go.
type badNumber uint8

const (
	badNone badNumber = iota
	badExponent
	badDoubleRange
	badTooLong
)

var badReasons = [...]string{
	badExponent:    "number exponent out of range",
	badDoubleRange: "number out of the double range",
	badTooLong:     "number too large to write in plain notation",
}

// err returns the PayloadError for a bad number, or nil.
func (v *ival) err() error {
	if v.bad == badNone {
		return nil
	}
	return &PayloadError{Offset: v.ra, Reason: badReasons[v.bad]}
}

// member is one object member: the key's arena range and its value.
type member struct {
	ka, ke int
	v      ival
}

// ikv is an output key/value before materialization.
type ikv struct {
	ka, ke int
	v      ival
}

// ientry is an output entry: a timestamp and a range of kvs.
type ientry struct {
	ts     int64
	k0, k1 int
}

// idevice is a gateway device: its name and a range of ents (telemetry)
// or kvs (attributes).
type idevice struct {
	ka, ke int
	r0, r1 int
	skip   bool
}

// findMember returns the index in p.mems[base:] of the member named like
// the arena range [ka,ke), or -1. index is the per-object map, built once
// the object grows past maxLinearKeys.
func (p *parser) findMember(base, ka, ke int, index *map[string]int) int {
	key := p.arena[ka:ke]
	if *index != nil {
		if i, ok := (*index)[string(key)]; ok {
			return i
		}
		return -1
	}
	for i := base; i < len(p.mems); i++ {
		if bytes.Equal(p.arena[p.mems[i].ka:p.mems[i].ke], key) {
			return i - base
		}
	}
	return -1
}

// addMember appends a member to the object starting at base, or replaces
// the value of an earlier member with the same key (last wins, first
// position), as Gson's JsonObject does.
func (p *parser) addMember(base int, m *member, index *map[string]int) {
	if j := p.findMember(base, m.ka, m.ke, index); j >= 0 {
		p.mems[base+j].v = m.v
		return
	}
	p.mems = append(p.mems, *m)
	n := len(p.mems) - base
	switch {
	case *index != nil:
		(*index)[string(p.arena[m.ka:m.ke])] = n - 1
	case n > maxLinearKeys:
		*index = make(map[string]int, 2*n)
		for i := base; i < len(p.mems); i++ {
			(*index)[string(p.arena[p.mems[i].ka:p.mems[i].ke])] = i - base
		}
	}
}

// value parses the value at p.pos with ThingsBoard's typing rules:
// scalars are classified (see number.go), objects and arrays compacted
// into the arena as KindJSON. A number that cannot be represented is not
// an error yet: it is marked bad, and only reported if its member survives
// duplicate-key resolution.
func (p *parser) value(depth int) (ival, error) {
	p.ws()
	v := ival{tok: p.peek(), ra: p.pos}
	switch c := v.tok; {
	case c == '{' || c == '[':
		v.kind = KindJSON
		v.a = len(p.arena)
		if err := p.compact(depth); err != nil {
			return v, err
		}
		v.e = len(p.arena)
	case c == '"':
		v.a = len(p.arena)
		var err error
		if p.arena, err = p.str(p.arena, false); err != nil {
			return v, err
		}
		v.e = len(p.arena)
		p.classifyString(&v)
	case c == '-' || (c >= '0' && c <= '9'):
		a, e, err := p.number()
		if err != nil {
			return v, err
		}
		p.classifyNumber(&v, p.in[a:e])
	default:
		lit, err := p.literal()
		if err != nil {
			return v, err
		}
		switch lit {
		case 't', 'f':
			v.kind, v.b = KindBool, lit == 't'
		default:
			v.null = true
		}
	}
	v.re = p.pos
	return v, nil
}
