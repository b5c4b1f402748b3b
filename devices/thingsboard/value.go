package thingsboard

import (
	"math"
	"strconv"
	"unicode/utf8"
)

// ValueKind is the ThingsBoard data type of a value (DataType / KeyValueType).
type ValueKind uint8

const (
	KindBool   ValueKind = iota // BOOLEAN
	KindLong                    // LONG
	KindDouble                  // DOUBLE
	KindString                  // STRING
	KindJSON                    // JSON: a nested object or array, kept as compact text
)

var kindNames = [...]string{"BOOLEAN", "LONG", "DOUBLE", "STRING", "JSON"}

// String returns ThingsBoard's name of the type.
func (k ValueKind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "ValueKind(" + strconv.Itoa(int(k)) + ")"
}

// Value is one typed telemetry or attribute value.
//
// Doubles carry no literal: AppendJSON writes the shortest decimal that
// reads back as the same float64, in plain notation with at least one
// fractional digit (42.0 stays 42.0; 21.50 becomes 21.5), which is the only
// form that ThingsBoard's rules type as DOUBLE again. A double whose plain
// form needs more than 16 fractional digits cannot be produced by parsing
// and would read back as a STRING.
type Value struct {
	Kind   ValueKind
	Bool   bool    // KindBool
	Long   int64   // KindLong
	Double float64 // KindDouble
	Str    string  // KindString
	JSON   []byte  // KindJSON: compact JSON of the nested object or array
}

// KV is a key and its value. Keys are never empty in parsed output.
type KV struct {
	Key   string
	Value Value
}

// Entry is one set of values sharing a timestamp.
type Entry struct {
	// Ts is the timestamp in milliseconds given by the device, or 0 when
	// none was given (the caller uses the arrival time). An explicit
	// "ts":0 is indistinguishable and treated the same way.
	Ts     int64
	Values []KV
}

// Number returns v as a float64 when it is a number (LONG or DOUBLE).
func (v Value) Number() (float64, bool) {
	switch v.Kind {
	case KindLong:
		return float64(v.Long), true
	case KindDouble:
		return v.Double, true
	}
	return 0, false
}

// Equal reports whether v and w hold the same type and value. Doubles
// compare by value (so 0.0 equals -0.0); JSON compares byte-wise, which is
// exact for compact output of this package.
func (v Value) Equal(w Value) bool {
	if v.Kind != w.Kind {
		return false
	}
	switch v.Kind {
	case KindBool:
		return v.Bool == w.Bool
	case KindLong:
		return v.Long == w.Long
	case KindDouble:
		return v.Double == w.Double
	case KindString:
		return v.Str == w.Str
	default:
		return string(v.JSON) == string(w.JSON)
	}
}

// AppendJSON appends v as JSON: a bool, long or double literal, a string,
// or the nested JSON as stored. A non-finite double (which parsing never
// produces) and an empty KindJSON are written as null so the output stays
// valid JSON.
func (v Value) AppendJSON(dst []byte) []byte {
	switch v.Kind {
	case KindBool:
		return strconv.AppendBool(dst, v.Bool)
	case KindLong:
		return strconv.AppendInt(dst, v.Long, 10)
	case KindDouble:
		return appendDouble(dst, v.Double)
	case KindString:
		return appendString(dst, v.Str)
	case KindJSON:
		if len(v.JSON) == 0 {
			return append(dst, "null"...)
		}
		return append(dst, v.JSON...)
	}
	return append(dst, "null"...)
}

// appendDouble writes f in plain notation with a '.', see Value.
func appendDouble(dst []byte, f float64) []byte {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return append(dst, "null"...)
	}
	start := len(dst)
	dst = strconv.AppendFloat(dst, f, 'f', -1, 64)
	for _, c := range dst[start:] {
		if c == '.' {
			return dst
		}
	}
	return append(dst, '.', '0')
}

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD;
// '"', '\\', control characters, U+2028 and U+2029 are escaped, as Gson
// does (without its HTML escaping).
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		dst = append(dst, s[start:i]...)
		if c < utf8.RuneSelf {
			dst = appendRune(dst, rune(c), true)
			i++
		} else {
			r, size := utf8.DecodeRuneInString(s[i:])
			switch {
			case r == utf8.RuneError && size == 1:
				dst = append(dst, "\uFFFD"...)
			case r == '\u2028' || r == '\u2029':
				dst = appendRune(dst, r, true)
			default:
				dst = append(dst, s[i:i+size]...)
			}
			i += size
		}
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// AppendObject appends {"k":v,...} with the keys in the given order.
func AppendObject(dst []byte, kvs []KV) []byte {
	dst = append(dst, '{')
	for i, kv := range kvs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, kv.Key)
		dst = append(dst, ':')
		dst = kv.Value.AppendJSON(dst)
	}
	return append(dst, '}')
}

// AppendRecordValue appends {"ts":<ts>,"values":{...}}, the value of the
// log record the broker appends for one entry.
func AppendRecordValue(dst []byte, ts int64, values []KV) []byte {
	dst = append(dst, `{"ts":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	dst = append(dst, `,"values":`...)
	dst = AppendObject(dst, values)
	return append(dst, '}')
}

// ParseValue parses one JSON value, as stored by the registry, with the
// same typing rules as telemetry. ok is false for null.
func ParseValue(raw []byte) (v Value, ok bool, err error) {
	p := getParser(raw)
	defer putParser(p)
	iv, err := p.value(1)
	if err == nil {
		err = p.end()
	}
	if err == nil {
		err = iv.err()
	}
	if err != nil || iv.null {
		return Value{}, false, err
	}
	switch iv.kind {
	case KindString:
		return Value{Kind: KindString, Str: string(p.arena[iv.a:iv.e])}, true, nil
	case KindJSON:
		return Value{Kind: KindJSON, JSON: append([]byte(nil), p.arena[iv.a:iv.e]...)}, true, nil
	}
	return iv.value("", nil), true, nil
}

// value converts a parsed value; s is the arena copied to a string and
// js holds the JSON values at the same offsets.
func (v *ival) value(s string, js []byte) Value {
	switch v.kind {
	case KindBool:
		return Value{Kind: KindBool, Bool: v.b}
	case KindLong:
		return Value{Kind: KindLong, Long: int64(v.n)}
	case KindDouble:
		return Value{Kind: KindDouble, Double: math.Float64frombits(v.n)}
	case KindString:
		return Value{Kind: KindString, Str: s[v.a:v.e]}
	default:
		return Value{Kind: KindJSON, JSON: js[v.a:v.e:v.e]}
	}
}

// materialize copies the parsed key/values out of the parser: all keys
// and strings share one string allocation, all JSON values one byte
// slice, so the parser's buffers can be reused.
func (p *parser) materialize() []KV {
	if len(p.kvs) == 0 {
		return nil
	}
	s := string(p.arena)
	var js []byte
	for i := range p.kvs {
		if p.kvs[i].v.kind == KindJSON {
			if js == nil {
				js = make([]byte, len(p.arena))
			}
			v := &p.kvs[i].v
			copy(js[v.a:v.e], p.arena[v.a:v.e])
		}
	}
	out := make([]KV, len(p.kvs))
	for i := range p.kvs {
		k := &p.kvs[i]
		out[i] = KV{Key: s[k.ka:k.ke], Value: k.v.value(s, js)}
	}
	return out
}

// emitMembers turns the members p.mems[base:] into output key/values:
// nulls are skipped, keys must not be empty, deferred objects are
// compacted now, and a bad number that survived is an error.
func (p *parser) emitMembers(base, depth int) error {
	for i := base; i < len(p.mems); i++ {
		m := &p.mems[i]
		if m.v.null {
			continue
		}
		if err := m.v.err(); err != nil {
			return err
		}
		if m.ka == m.ke {
			return &PayloadError{Offset: m.v.ra, Reason: "empty key"}
		}
		if m.v.deferred {
			a, e, err := p.compactAt(m.v.ra, depth)
			if err != nil {
				return err
			}
			m.v.kind, m.v.a, m.v.e, m.v.deferred = KindJSON, a, e, false
		}
		p.kvs = append(p.kvs, ikv{ka: m.ka, ke: m.ke, v: m.v})
	}
	return nil
}
