package thingsboard

import "bytes"

// Compaction of nested objects and arrays into canonical compact JSON:
// what ThingsBoard stores for a JSON-typed value (JsonElement.toString of
// Gson's tree).

// cmember is a member of an object being compacted: arena ranges of the
// quoted key and of the value; win is the index of the later member whose
// value replaces this one (-1: none), dead marks such later members.
type cmember struct {
	ks, ke, vs, ve int
	win            int
	dead           bool
}

// compact appends the canonical compact form of the value at p.pos to the
// arena: no whitespace, strings re-escaped, numbers as written, duplicate
// keys resolved as Gson's tree model does (the last value wins, at the
// position of the first occurrence).
func (p *parser) compact(depth int) error {
	p.ws()
	switch c := p.peek(); {
	case c == '{':
		return p.compactObject(depth)
	case c == '[':
		empty, err := p.open('[', ']', depth)
		if err != nil {
			return err
		}
		p.arena = append(p.arena, '[')
		for !empty {
			if err := p.compact(depth + 1); err != nil {
				return err
			}
			more, err := p.next(']')
			if err != nil {
				return err
			}
			if !more {
				break
			}
			p.arena = append(p.arena, ',')
		}
		p.arena = append(p.arena, ']')
		return nil
	case c == '"':
		var err error
		p.arena, err = p.str(p.arena, true)
		return err
	case c == '-' || (c >= '0' && c <= '9'):
		a, e, err := p.number()
		p.arena = append(p.arena, p.in[a:e]...)
		return err
	default:
		start := p.pos
		_, err := p.literal()
		p.arena = append(p.arena, p.in[start:p.pos]...)
		return err
	}
}

func (p *parser) compactObject(depth int) error {
	empty, err := p.open('{', '}', depth)
	if err != nil {
		return err
	}
	obj := len(p.arena)
	p.arena = append(p.arena, '{')
	if empty {
		p.arena = append(p.arena, '}')
		return nil
	}
	// Members are written as they come; a repeated key marks the new
	// member dead and makes it the winner of the first one. If that
	// happened, the object is rebuilt once at the end, so duplicates cost
	// O(size) whatever their number.
	base := len(p.cms)
	defer func() { p.cms = p.cms[:base] }()
	var index map[string]int
	dups := false
	for {
		p.ws()
		if p.peek() != '"' {
			return p.unexpected("a member name")
		}
		if len(p.cms) > base {
			p.arena = append(p.arena, ',')
		}
		ks := len(p.arena)
		if p.arena, err = p.str(p.arena, true); err != nil {
			return err
		}
		ke := len(p.arena)
		if err := p.expect(':'); err != nil {
			return err
		}
		p.arena = append(p.arena, ':')
		vs := len(p.arena)
		if err := p.compact(depth + 1); err != nil {
			return err
		}
		m := cmember{ks: ks, ke: ke, vs: vs, ve: len(p.arena), win: -1}

		key := p.arena[ks:ke]
		j := -1
		if index != nil {
			if i, ok := index[string(key)]; ok {
				j = i
			}
		} else {
			for i := base; i < len(p.cms); i++ {
				if !p.cms[i].dead && bytes.Equal(p.arena[p.cms[i].ks:p.cms[i].ke], key) {
					j = i - base
					break
				}
			}
		}
		if j >= 0 {
			m.dead = true
			p.cms[base+j].win = len(p.cms) - base
			dups = true
		}
		p.cms = append(p.cms, m)
		switch {
		case j >= 0:
		case index != nil:
			index[string(key)] = len(p.cms) - base - 1
		case len(p.cms)-base > maxLinearKeys:
			index = make(map[string]int, 2*(len(p.cms)-base))
			for i := base; i < len(p.cms); i++ {
				if !p.cms[i].dead {
					index[string(p.arena[p.cms[i].ks:p.cms[i].ke])] = i - base
				}
			}
		}
		more, err := p.next('}')
		if err != nil {
			return err
		}
		if !more {
			break
		}
	}
	p.arena = append(p.arena, '}')
	if dups {
		p.rebuild(obj, p.cms[base:])
	}
	return nil
}

// rebuild rewrites the object written at p.arena[obj:] keeping each
// key's first position and its last value.
func (p *parser) rebuild(obj int, members []cmember) {
	out := make([]byte, 0, len(p.arena)-obj)
	out = append(out, '{')
	n := 0
	for _, m := range members {
		if m.dead {
			continue
		}
		if n > 0 {
			out = append(out, ',')
		}
		n++
		out = append(out, p.arena[m.ks:m.ke]...)
		out = append(out, ':')
		w := m
		if m.win >= 0 {
			w = members[m.win]
		}
		out = append(out, p.arena[w.vs:w.ve]...)
	}
	out = append(out, '}')
	p.arena = append(p.arena[:obj], out...)
}

// compactAt compacts the raw value starting at offset ra into the arena,
// leaving p.pos unchanged.
func (p *parser) compactAt(ra, depth int) (a, e int, err error) {
	saved := p.pos
	p.pos = ra
	a = len(p.arena)
	err = p.compact(depth)
	e = len(p.arena)
	p.pos = saved
	return a, e, err
}
