package thingsboard

import (
	"encoding/json"
	"errors"
	"math"
	"testing"
	"unicode"
)

func TestParseValue(t *testing.T) {
	tests := []struct {
		raw  string
		kind ValueKind
		json string // AppendJSON of the value; "" for null, "error" for an error
	}{
		{`true`, KindBool, `true`},
		{`false`, KindBool, `false`},
		{`null`, 0, ``},
		{` 42 `, KindLong, `42`},
		{`-9223372036854775808`, KindLong, `-9223372036854775808`},
		{`9223372036854775808`, KindString, `"9223372036854775808"`},
		{`42.0`, KindDouble, `42.0`},
		{`21.50`, KindDouble, `21.5`},
		{`-0.0`, KindDouble, `0.0`},
		{`4.2e1`, KindLong, `42`},
		{`4.25e1`, KindDouble, `42.5`},
		{`1e-3`, KindDouble, `0.001`},
		{`1e-17`, KindString, `"0.00000000000000001"`},
		{`0.1e-15`, KindDouble, `0.0000000000000001`},
		{`1e20`, KindString, `"100000000000000000000"`},
		{`1E+2`, KindLong, `100`},
		{`100e-2`, KindLong, `1`},
		{`0.0000000000000000`, KindDouble, `0.0`},
		{`0.00000000000000000`, KindString, `"0.00000000000000000"`},
		{`"0.00000000000000000"`, KindString, `"0.00000000000000000"`},
		{`-0.00000000000000000`, KindString, `"0.00000000000000000"`},
		{`"42"`, KindLong, `42`},
		{`"-42"`, KindLong, `-42`},
		{`"42.5"`, KindDouble, `42.5`},
		{`"-.5"`, KindDouble, `-0.5`},
		{`".5"`, KindDouble, `0.5`},
		{`"007"`, KindLong, `7`},
		{`"4.2e1"`, KindString, `"4.2e1"`},
		{`"1.2.3"`, KindString, `"1.2.3"`},
		{`"5."`, KindString, `"5."`},
		{`"-"`, KindString, `"-"`},
		{`"--5"`, KindString, `"--5"`},
		{`"12345678901234567890123"`, KindString, `"12345678901234567890123"`},
		{`"\u0661\u0662\u0663"`, KindLong, `123`},
		{`"\u0967.\u0969"`, KindDouble, `1.3`},
		{`"true"`, KindString, `"true"`},
		{`"a\"b"`, KindString, `"a\"b"`},
		{`{"b":1,"a":[true,null]}`, KindJSON, `{"b":1,"a":[true,null]}`},
		{`[ ]`, KindJSON, `[]`},
		{`{"a":1e400}`, KindJSON, `{"a":1e400}`},
		{``, 0, `error`},
		{`1 2`, 0, `error`},
		{`{`, 0, `error`},
		{`1e99999999999`, 0, `error`},
		{`nul`, 0, `error`},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			v, ok, err := ParseValue([]byte(tt.raw))
			switch {
			case tt.json == "error":
				if !errors.Is(err, ErrInvalidPayload) {
					t.Fatalf("got %+v, %v, %v; want an error", v, ok, err)
				}
				return
			case err != nil:
				t.Fatal(err)
			case tt.json == "":
				if ok {
					t.Fatalf("got %+v, want null", v)
				}
				return
			case !ok:
				t.Fatal("got null")
			}
			if v.Kind != tt.kind {
				t.Errorf("kind %v, want %v", v.Kind, tt.kind)
			}
			out := v.AppendJSON(nil)
			if string(out) != tt.json {
				t.Errorf("AppendJSON = %s, want %s", out, tt.json)
			}
			again, ok, err := ParseValue(out)
			if err != nil || !ok || !again.Equal(v) {
				t.Errorf("%s parses back to %+v, %v, %v; want %+v", out, again, ok, err, v)
			}
		})
	}
}

func TestAppendJSON(t *testing.T) {
	tests := []struct {
		v    Value
		want string
	}{
		{Value{Kind: KindDouble, Double: 1e21}, `1000000000000000000000.0`},
		{Value{Kind: KindDouble, Double: 0.1}, `0.1`},
		{Value{Kind: KindDouble, Double: -3}, `-3.0`},
		{Value{Kind: KindDouble, Double: math.Inf(1)}, `null`},
		{Value{Kind: KindDouble, Double: math.NaN()}, `null`},
		{Value{Kind: KindJSON}, `null`},
		{Value{Kind: KindString, Str: "a\x00\x1f\"\\\u2028\u2029<>&é\xff"}, `"a\u0000\u001f\"\\\u2028\u2029<>&é` + "\uFFFD" + `"`},
		{Value{Kind: ValueKind(9)}, `null`},
	}
	for _, tt := range tests {
		got := string(tt.v.AppendJSON(nil))
		if got != tt.want {
			t.Errorf("AppendJSON(%+v) = %s, want %s", tt.v, got, tt.want)
		}
		if !json.Valid([]byte(got)) {
			t.Errorf("AppendJSON(%+v) = %s is not valid JSON", tt.v, got)
		}
	}
	if KindJSON.String() != "JSON" || ValueKind(9).String() != "ValueKind(9)" {
		t.Error("ValueKind.String")
	}
}

func TestAppendObjectAndRecord(t *testing.T) {
	kvs := []KV{
		{"b", Value{Kind: KindBool, Bool: true}},
		{"l", Value{Kind: KindLong, Long: -5}},
		{"d", Value{Kind: KindDouble, Double: 2}},
		{"s", Value{Kind: KindString, Str: "x"}},
		{"j", Value{Kind: KindJSON, JSON: []byte(`{"a":[1]}`)}},
		{"k\"ey", Value{Kind: KindLong, Long: 1}},
	}
	const obj = `{"b":true,"l":-5,"d":2.0,"s":"x","j":{"a":[1]},"k\"ey":1}`
	if got := string(AppendObject([]byte("x"), kvs)); got != "x"+obj {
		t.Errorf("AppendObject = %s", got)
	}
	if got := string(AppendObject(nil, nil)); got != `{}` {
		t.Errorf("AppendObject(nil) = %s", got)
	}
	if got := string(AppendRecordValue(nil, 1451649600512, kvs)); got != `{"ts":1451649600512,"values":`+obj+`}` {
		t.Errorf("AppendRecordValue = %s", got)
	}
	if got := string(AppendRecordValue(nil, 0, nil)); got != `{"ts":0,"values":{}}` {
		t.Errorf("AppendRecordValue empty = %s", got)
	}
}

// TestJavaDigit checks that every BMP decimal digit maps to its value,
// which relies on the Nd table ranges starting at a zero.
func TestJavaDigit(t *testing.T) {
	n := 0
	for r := rune(0); r <= 0xFFFF; r++ {
		d, ok := javaDigit(r)
		if ok != unicode.Is(unicode.Nd, r) {
			t.Fatalf("javaDigit(%U) ok = %v", r, ok)
		}
		if !ok {
			continue
		}
		n++
		// Digits come in runs of ten: the zero of r's run is r-d.
		zero := r - rune(d)
		for i := rune(0); i < 10; i++ {
			if dd, ok := javaDigit(zero + i); !ok || rune(dd) != i {
				t.Fatalf("digit run at %U broken at %U", zero, zero+i)
			}
		}
	}
	if n == 0 || n%10 != 0 {
		t.Fatalf("%d BMP digits", n)
	}
	if _, ok := javaDigit(0x1D7CE); ok {
		t.Error("a supplementary digit is not a Java char digit")
	}
}
