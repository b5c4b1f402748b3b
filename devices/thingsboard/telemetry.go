package thingsboard

// Telemetry and client attributes published by a device
// (v1/devices/me/telemetry, v2/t, v2/t/j; v1/devices/me/attributes, v2/a,
// v2/a/j). Follows JsonConverter.convertToTelemetryProto, parseObject and
// convertToAttributesProto.

// ParseTelemetry parses a telemetry payload. It accepts the four shapes
// ThingsBoard accepts:
//
//	{"k":v,...}
//	[{"k":v},...]
//	{"ts":1451649600512,"values":{"k":v,...}}
//	[{"ts":...,"values":{...}},{"k":v},...]   (arrays may mix both forms)
//
// An object is "with ts" only when it has both "ts" and "values"; then ts
// must be an integer (a number, or a string of digits) and values an
// object, and any other member is ignored. Otherwise every member is a
// value with the arrival time (Entry.Ts 0), including a lone "ts" or
// "values". null values are skipped; keys keep their order; a duplicate
// key keeps its first position and its last value. The root must be an
// object or an array of objects; an empty array yields no entries.
//
// The returned keys and strings share one backing allocation.
func ParseTelemetry(payload []byte) ([]Entry, error) {
	p := getParser(payload)
	defer putParser(p)
	if err := p.telemetry(1, false); err != nil {
		return nil, err
	}
	if err := p.end(); err != nil {
		return nil, err
	}
	return p.materializeEntries(0, len(p.ents), p.materialize()), nil
}

// ParseAttributes parses client attributes: a JSON object only, with the
// same value rules as telemetry.
func ParseAttributes(payload []byte) ([]KV, error) {
	p := getParser(payload)
	defer putParser(p)
	p.ws()
	if p.peek() != '{' {
		return nil, p.unexpected("a JSON object")
	}
	if err := p.kvObject(1); err != nil {
		return nil, err
	}
	if err := p.end(); err != nil {
		return nil, err
	}
	return p.materialize(), nil
}

// telemetry parses an object or an array of objects into p.ents. gateway
// selects the gateway rules: only an array, and per-item "metadata" is
// stripped.
func (p *parser) telemetry(depth int, gateway bool) error {
	p.ws()
	switch p.peek() {
	case '{':
		if gateway {
			return p.unexpected("an array of entries")
		}
		return p.entry(depth, false)
	case '[':
		empty, err := p.open('[', ']', depth)
		if err != nil || empty {
			return err
		}
		for {
			p.ws()
			if p.peek() != '{' {
				return p.unexpected("an object")
			}
			if err := p.entry(depth+1, gateway); err != nil {
				return err
			}
			more, err := p.next(']')
			if err != nil || !more {
				return err
			}
		}
	}
	return p.unexpected("a JSON object or array")
}

// entry parses one telemetry object (parseObject) and appends one entry.
func (p *parser) entry(depth int, gateway bool) error {
	empty, err := p.open('{', '}', depth)
	if err != nil {
		return err
	}
	base := len(p.mems)
	defer func() { p.mems = p.mems[:base] }()
	var index map[string]int
	meta := -1
	for !empty {
		p.ws()
		ka, ke, err := p.key()
		if err != nil {
			return err
		}
		name := p.arena[ka:ke]
		p.ws()
		if gateway && string(name) == "metadata" {
			// JsonConverter.convertToGatewayTelemetry removes it before
			// parsing the item; the last one is validated.
			meta = p.pos
			if err := p.skip(depth + 1); err != nil {
				return err
			}
		} else {
			var v ival
			if string(name) == "values" && p.peek() == '{' {
				// Maybe the values of a {ts, values} object: keep it
				// raw until the whole object has been seen.
				v = ival{kind: KindJSON, tok: '{', ra: p.pos, deferred: true}
				if err := p.skip(depth + 1); err != nil {
					return err
				}
				v.re = p.pos
			} else if v, err = p.value(depth + 1); err != nil {
				return err
			}
			p.addMember(base, &member{ka: ka, ke: ke, v: v}, &index)
		}
		more, err := p.next('}')
		if err != nil {
			return err
		}
		empty = !more
	}
	if meta >= 0 {
		if err := p.checkMetadata(meta, depth+1); err != nil {
			return err
		}
	}

	ts, values := -1, -1
	for i := base; i < len(p.mems); i++ {
		switch string(p.arena[p.mems[i].ka:p.mems[i].ke]) {
		case "ts":
			ts = i
		case "values":
			values = i
		}
	}
	k0 := len(p.kvs)
	if ts < 0 || values < 0 {
		if err := p.emitMembers(base, depth+1); err != nil {
			return err
		}
		p.ents = append(p.ents, ientry{k0: k0, k1: len(p.kvs)})
		return nil
	}

	// parseWithTs: jo.get("ts").getAsLong(), jo.get("values").getAsJsonObject().
	tv, vv := p.mems[ts].v, p.mems[values].v
	n, err := p.timestamp(tv)
	if err != nil {
		return err
	}
	if !vv.deferred {
		return &PayloadError{Offset: vv.ra, Reason: "\"values\" is not an object"}
	}
	p.mems = p.mems[:base]
	saved := p.pos
	p.pos = vv.ra
	err = p.kvObject(depth + 1)
	p.pos = saved
	if err != nil {
		return err
	}
	p.ents = append(p.ents, ientry{ts: n, k0: k0, k1: len(p.kvs)})
	return nil
}

// timestamp reads the "ts" of a {ts, values} object.
func (p *parser) timestamp(v ival) (int64, error) {
	var n int64
	ok := false
	switch {
	case v.tok == '"':
		// The arena holds the decoded string, or for a numeric string
		// that became a STRING its plain form; Long.parseLong refuses
		// both alike (they overflow or have a '.').
		n, ok = javaLong(nil, true, p.arena[v.a:v.e])
	case v.tok == '-' || (v.tok >= '0' && v.tok <= '9'):
		n, ok = javaLong(p.in[v.ra:v.re], false, nil)
	}
	if !ok {
		return 0, &PayloadError{Offset: v.ra, Reason: "\"ts\" is not an integer"}
	}
	return n, nil
}

// checkMetadata validates gateway item metadata at offset at: an object
// with non-null "connector", "receivedTs" and "publishedTs", the latter two
// integers (JsonConverter.getAndValidateMetadataElement).
func (p *parser) checkMetadata(at, depth int) error {
	saved := p.pos
	defer func() { p.pos = saved }()
	p.pos = at
	fields, err := p.fields(depth)
	if err != nil {
		return err
	}
	for _, name := range [...]string{"connector", "receivedTs", "publishedTs"} {
		f := p.field(fields, name)
		if f == nil || f.tok == 'n' {
			return &PayloadError{Offset: at, Reason: "gateway metadata without " + name}
		}
		if name == "connector" {
			if _, err := p.fieldStr(f); err != nil {
				return err
			}
		} else if _, err := p.fieldLong(f); err != nil {
			return err
		}
	}
	return nil
}

// kvObject parses an object of values into p.kvs.
func (p *parser) kvObject(depth int) error {
	empty, err := p.open('{', '}', depth)
	if err != nil {
		return err
	}
	base := len(p.mems)
	defer func() { p.mems = p.mems[:base] }()
	var index map[string]int
	for !empty {
		p.ws()
		ka, ke, err := p.key()
		if err != nil {
			return err
		}
		v, err := p.value(depth + 1)
		if err != nil {
			return err
		}
		p.addMember(base, &member{ka: ka, ke: ke, v: v}, &index)
		more, err := p.next('}')
		if err != nil {
			return err
		}
		empty = !more
	}
	return p.emitMembers(base, depth+1)
}

// materializeEntries builds entries e0..e1 over kvs from materialize.
func (p *parser) materializeEntries(e0, e1 int, kvs []KV) []Entry {
	if e1 == e0 {
		return nil
	}
	out := make([]Entry, e1-e0)
	for i, e := range p.ents[e0:e1] {
		out[i] = Entry{Ts: e.ts, Values: kvs[e.k0:e.k1:e.k1]}
	}
	return out
}
