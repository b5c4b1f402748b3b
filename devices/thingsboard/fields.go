package thingsboard

import (
	"encoding/json"
	"strings"
)

// A small reader for the control messages (attribute requests, RPC, claim,
// provisioning, gateway connect...): an object whose members are looked up
// by name, with accessors that follow Gson's JsonElement.getAsString,
// getAsBoolean, getAsLong and getAsInt, which is how ThingsBoard reads
// them.

// field is one member of an object read by fields.
type field struct {
	ka, ke int  // name, in the arena
	tok    byte // first byte of the value: '"', '-'/digit, 't', 'f', 'n', '{', '['
	ra, re int  // raw value span in the input
	a, e   int  // decoded string in the arena, when tok is '"'
}

// fields reads the object at p.pos. Duplicate names keep the last value.
func (p *parser) fields(depth int) ([]field, error) {
	empty, err := p.open('{', '}', depth)
	if err != nil {
		return nil, err
	}
	var out []field
	var index map[string]int
	for !empty {
		p.ws()
		ka, ke, err := p.key()
		if err != nil {
			return nil, err
		}
		p.ws()
		f := field{ka: ka, ke: ke, tok: p.peek(), ra: p.pos}
		if f.tok == '"' {
			f.a = len(p.arena)
			if p.arena, err = p.str(p.arena, false); err != nil {
				return nil, err
			}
			f.e = len(p.arena)
		} else if err := p.skip(depth + 1); err != nil {
			return nil, err
		}
		f.re = p.pos

		name := p.arena[ka:ke]
		j := -1
		if index != nil {
			if i, ok := index[string(name)]; ok {
				j = i
			}
		} else {
			for i := range out {
				if string(p.arena[out[i].ka:out[i].ke]) == string(name) {
					j = i
					break
				}
			}
		}
		switch {
		case j >= 0:
			out[j] = f
		case index != nil:
			index[string(name)] = len(out)
			out = append(out, f)
		default:
			out = append(out, f)
			if len(out) > maxLinearKeys {
				index = make(map[string]int, 2*len(out))
				for i := range out {
					index[string(p.arena[out[i].ka:out[i].ke])] = i
				}
			}
		}
		more, err := p.next('}')
		if err != nil {
			return nil, err
		}
		empty = !more
	}
	return out, nil
}

// readObject reads a whole payload that must be one JSON object.
func (p *parser) readObject() ([]field, error) {
	p.ws()
	if p.peek() != '{' {
		return nil, p.unexpected("a JSON object")
	}
	fs, err := p.fields(1)
	if err != nil {
		return nil, err
	}
	return fs, p.end()
}

// field returns the member called name, or nil (JsonObject.get).
func (p *parser) field(fs []field, name string) *field {
	for i := range fs {
		if string(p.arena[fs[i].ka:fs[i].ke]) == name {
			return &fs[i]
		}
	}
	return nil
}

func (p *parser) fieldName(f *field) string { return string(p.arena[f.ka:f.ke]) }

// fieldStr is getAsString: a string, a number's literal text, or
// "true"/"false". null, objects and arrays throw in Gson (Gson also
// unwraps a one-element array; that quirk is not copied).
func (p *parser) fieldStr(f *field) (string, error) {
	switch {
	case f.tok == '"':
		return string(p.arena[f.a:f.e]), nil
	case f.tok == 't' || f.tok == 'f' || f.tok == '-' || (f.tok >= '0' && f.tok <= '9'):
		return string(p.in[f.ra:f.re]), nil
	}
	return "", &PayloadError{Offset: f.ra, Reason: "\"" + p.fieldName(f) + "\" is not a string"}
}

// fieldBool is getAsBoolean: a boolean, or Boolean.parseBoolean of the
// text of a string or number (true only for "true", any case).
func (p *parser) fieldBool(f *field) (bool, error) {
	switch f.tok {
	case 't':
		return true, nil
	case 'f':
		return false, nil
	}
	s, err := p.fieldStr(f)
	if err != nil {
		return false, &PayloadError{Offset: f.ra, Reason: "\"" + p.fieldName(f) + "\" is not a boolean"}
	}
	return strings.EqualFold(s, "true"), nil
}

// fieldLong is getAsLong restricted to exact integers, see javaLong.
func (p *parser) fieldLong(f *field) (int64, error) {
	var n int64
	ok := false
	switch {
	case f.tok == '"':
		n, ok = javaLong(nil, true, p.arena[f.a:f.e])
	case f.tok == '-' || (f.tok >= '0' && f.tok <= '9'):
		n, ok = javaLong(p.in[f.ra:f.re], false, nil)
	}
	if !ok {
		return 0, &PayloadError{Offset: f.ra, Reason: "\"" + p.fieldName(f) + "\" is not an integer"}
	}
	return n, nil
}

// fieldInt is getAsInt: an exact integer in the int32 range (request and
// RPC ids are Java ints).
func (p *parser) fieldInt(f *field) (int64, error) {
	n, err := p.fieldLong(f)
	if err == nil && (n < -1<<31 || n > 1<<31-1) {
		err = &PayloadError{Offset: f.ra, Reason: "\"" + p.fieldName(f) + "\" is out of the int32 range"}
	}
	return n, err
}

// fieldRaw is JsonElement.toString: the compact JSON of the value.
func (p *parser) fieldRaw(f *field) (json.RawMessage, error) {
	a, e, err := p.compactAt(f.ra, 2)
	if err != nil {
		return nil, err
	}
	raw := json.RawMessage(append([]byte(nil), p.arena[a:e]...))
	p.arena = p.arena[:a]
	return raw, nil
}

// required returns the member called name or an error naming it.
func (p *parser) required(fs []field, name string) (*field, error) {
	if f := p.field(fs, name); f != nil {
		return f, nil
	}
	return nil, invalid("missing %q", name)
}

// stringArray reads an array of primitives as strings (getAsString on each
// element), dropping duplicates as Java's HashSet does but keeping the
// first-seen order.
func (p *parser) stringArray(f *field) ([]string, error) {
	if f.tok != '[' {
		return nil, &PayloadError{Offset: f.ra, Reason: "\"" + p.fieldName(f) + "\" is not an array"}
	}
	saved := p.pos
	defer func() { p.pos = saved }()
	p.pos = f.ra
	empty, err := p.open('[', ']', 2)
	if err != nil {
		return nil, err
	}
	out := []string{}
	for !empty {
		p.ws()
		e := field{ka: f.ka, ke: f.ke, tok: p.peek(), ra: p.pos}
		if e.tok == '"' {
			e.a = len(p.arena)
			if p.arena, err = p.str(p.arena, false); err != nil {
				return nil, err
			}
			e.e = len(p.arena)
		} else if err := p.skip(3); err != nil {
			return nil, err
		}
		e.re = p.pos
		s, err := p.fieldStr(&e)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
		more, err := p.next(']')
		if err != nil {
			return nil, err
		}
		empty = !more
	}
	return dedupe(out), nil
}

// dedupe drops repeated strings, keeping the first occurrence of each, as
// the Java code does by collecting into a HashSet (whose order is
// arbitrary; first-seen order is kept here).
func dedupe(list []string) []string {
	if len(list) <= maxLinearKeys {
		out := list[:0]
	outer:
		for _, s := range list {
			for _, x := range out {
				if x == s {
					continue outer
				}
			}
			out = append(out, s)
		}
		return out
	}
	seen := make(map[string]struct{}, len(list))
	out := list[:0]
	for _, s := range list {
		if _, ok := seen[s]; !ok {
			seen[s] = struct{}{}
			out = append(out, s)
		}
	}
	return out
}
