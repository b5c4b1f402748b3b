package thingsboard

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// manyKeys returns an object with n distinct keys, then every key again
// with a longer value, in a nested position when nested is set.
func manyKeys(n int, nested bool) []byte {
	var b strings.Builder
	b.WriteString("{")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, `"k%d":%d,`, i, i)
	}
	for i := n - 1; i >= 0; i -= 3 {
		if nested {
			fmt.Fprintf(&b, `"k%d":{"x":"%s","x":%d},`, i, strings.Repeat("v", i%7), i)
		} else {
			fmt.Fprintf(&b, `"k%d":"%s",`, i, strings.Repeat("v", i%7))
		}
	}
	b.WriteString(`"last":null}`)
	return []byte(b.String())
}

// TestCompactDuplicates drives the nested duplicate-key splice, in the
// linear and the map mode, against the encoding/json reference.
func TestCompactDuplicates(t *testing.T) {
	for _, n := range []int{1, 5, maxLinearKeys, maxLinearKeys + 1, 100} {
		for _, nested := range []bool{false, true} {
			obj := manyKeys(n, nested)
			for _, doc := range [][]byte{obj, append(append([]byte(`[1,`), obj...), ']'), append(append([]byte(`{"o":`), obj...), '}')} {
				v, ok, err := ParseValue(doc)
				if err != nil || !ok {
					t.Fatalf("n=%d: %v", n, err)
				}
				want, err := refCompact(doc)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(v.JSON, want) {
					t.Fatalf("n=%d nested=%v:\ngot  %s\nwant %s", n, nested, v.JSON, want)
				}
			}
		}
	}
}

// TestManyKeys checks duplicate handling past the linear threshold in the
// member parsers: telemetry keys, control-message fields and gateway
// devices.
func TestManyKeys(t *testing.T) {
	const n = 40
	entries, err := ParseTelemetry(manyKeys(n, false))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(entries[0].Values); got != n {
		t.Fatalf("%d values, want %d", got, n)
	}
	for i, kv := range entries[0].Values {
		if kv.Key != fmt.Sprintf("k%d", i) {
			t.Fatalf("value %d is %q", i, kv.Key)
		}
		if (n-1-i)%3 == 0 && kv.Value.Kind != KindString {
			t.Fatalf("%s kept its first value %+v", kv.Key, kv.Value)
		}
	}

	var b strings.Builder
	b.WriteString(`{`)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, `"f%d":%d,`, i, i)
	}
	b.WriteString(`"provisionDeviceKey":"a","provisionDeviceSecret":"b","provisionDeviceKey":"k"}`)
	r, err := ParseProvisionRequest([]byte(b.String()))
	if err != nil || r.Key != "k" || r.Secret != "b" {
		t.Fatalf("got %+v, %v", r, err)
	}

	b.Reset()
	b.WriteString(`{`)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, `"D%d":[{"t":%d}],`, i, i)
	}
	b.WriteString(`"D3":[{"t":"again"}],"D5":7}`)
	devs, err := ParseGatewayTelemetry([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != n-1 || devs[3].Device != "D3" || devs[3].Entries[0].Values[0].Value.Str != "again" || devs[5].Device != "D6" {
		t.Fatalf("got %d devices, D3=%+v, [5]=%s", len(devs), devs[3], devs[5].Device)
	}
}

// hostilePayloads are 64 KiB payloads (the ThingsBoard MQTT limit) built
// to hit quadratic or amplifying paths.
func hostilePayloads() map[string][]byte {
	const size = 64 << 10
	fill := func(prefix, item, sep, suffix string) []byte {
		var b bytes.Buffer
		b.WriteString(prefix)
		for i := 0; b.Len() < size-len(suffix)-len(item)-16; i++ {
			if i > 0 {
				b.WriteString(sep)
			}
			fmt.Fprintf(&b, item, i)
		}
		b.WriteString(suffix)
		return b.Bytes()
	}
	return map[string][]byte{
		"distinct_keys":    fill(`{`, `"k%d":1`, `,`, `}`),
		"same_key":         fill(`{`, `"k":%d`, `,`, `}`),
		"nested_keys":      fill(`{"o":{`, `"k%d":[1]`, `,`, `}}`),
		"nested_same_key":  fill(`{"o":{`, `"k":[%d]`, `,`, `}}`),
		"nested_late_dups": nestedLateDups(size),
		"entries":          fill(`[`, `{"ts":%d,"values":{"a":1}}`, `,`, `]`),
		"big_exponents":    fill(`{`, `"k%d":1e9999`, `,`, `}`),
		"numeric_strings":  fill(`{`, `"k%d":"-.0000000000000000000000000001"`, `,`, `}`),
		"deep_arrays":      []byte(`{"a":` + strings.Repeat("[", size-10) + `}`),
		"gateway_devices":  fill(`{`, `"D%d":[{"a":1}]`, `,`, `}`),
		"gateway_same_dev": fill(`{`, `"D":[{"a":%d}]`, `,`, `}`),
	}
}

// nestedLateDups is a nested object with many distinct keys followed by
// many repeats of the first one.
func nestedLateDups(size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"o":{`)
	for i := 0; b.Len() < size/2; i++ {
		fmt.Fprintf(&b, `"k%d":%d,`, i, i)
	}
	for i := 0; b.Len() < size-32; i++ {
		fmt.Fprintf(&b, `"k0":%d,`, i)
	}
	b.WriteString(`"end":1}}`)
	return b.Bytes()
}

// TestHostilePayloads checks that the hostile payloads are answered
// (accepted or refused) without blowing up the output.
func TestHostilePayloads(t *testing.T) {
	for name, payload := range hostilePayloads() {
		entries, err := ParseTelemetry(payload)
		if err != nil {
			checkErr(t, err)
			continue
		}
		out := 0
		for _, e := range entries {
			out += len(AppendRecordValue(nil, e.Ts, e.Values))
		}
		if out > 3*len(payload)+2048 {
			t.Errorf("%s: %d bytes of records from a %d-byte payload", name, out, len(payload))
		}
	}
}

func BenchmarkHostile(b *testing.B) {
	for name, payload := range hostilePayloads() {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			for b.Loop() {
				if strings.HasPrefix(name, "gateway") {
					_, _ = ParseGatewayTelemetry(payload)
				} else {
					_, _ = ParseTelemetry(payload)
				}
			}
		})
	}
}
