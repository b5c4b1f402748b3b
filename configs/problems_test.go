package configs

import (
	"errors"
	"slices"
	"testing"
)

var errTest = errors.New("test: invalid config")

// TestPrefixQualifiesKeysInText: a problem naming a sibling setting names
// it with the same prefix as its own key, at every level of nesting.
func TestPrefixQualifiesKeysInText(t *testing.T) {
	inner := Problems{Kind: errTest}
	inner.Add("tls.cert_file", "is required with %s", Key("tls.key_file"))
	inner.Add("[2]", "plain %s", "text")
	var outer Problems
	outer.Nest("kafka", inner.Err())
	got := Lines(Prefix("bridges", outer.Err()))
	want := []string{
		"bridges.kafka.tls.cert_file: is required with bridges.kafka.tls.key_file",
		"bridges.kafka[2]: plain text",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if err := outer.Err(); !errors.Is(err, errTest) {
		t.Fatalf("%v does not wrap its kind", err)
	}
	// The inner error is untouched by prefixing.
	if got := Lines(inner.Err()); got[0] != "tls.cert_file: is required with tls.key_file" {
		t.Fatalf("inner changed: %q", got)
	}
}

func TestPrefixWrapsPlainErrors(t *testing.T) {
	var p Problems
	p.Nest("log", errors.New("disk on fire"))
	if got := Lines(p.Err()); !slices.Equal(got, []string{"log: disk on fire"}) {
		t.Fatalf("got %q", got)
	}
	if p.Nest("x", nil); len(Lines(p.Err())) != 1 {
		t.Fatal("a nil error added a problem")
	}
}

func TestSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		out  string
	}{{"0", 0, "0"}, {"", 0, "0"}, {"1000", 1000, "1000"}, {"64KiB", 64 << 10, "64KiB"}, {" 48 MiB", 48 << 20, "48MiB"}, {"2GiB", 2 << 30, "2GiB"}, {"1536KiB", 1536 << 10, "1536KiB"},
		{"1TiB", 1 << 40, "1024GiB"}, {"20TB", 20e12, "19531250000KiB"}, {"512GB", 512e9, "500000000KiB"}} {
		var s Size
		if err := s.UnmarshalText([]byte(c.in)); err != nil || int64(s) != c.want || s.String() != c.out {
			t.Errorf("%q: %d %q %v, want %d %q", c.in, s, s.String(), err, c.want, c.out)
		}
	}
	for _, bad := range []string{"fast", "-1", "1.5MiB", "1PiB", "9999999999GiB", "9999999TB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestCheckAddr(t *testing.T) {
	var p Problems
	p.CheckAddr("a", "", false)
	p.CheckAddr("b", "", true)
	p.CheckAddr("c", "nonsense", false)
	p.CheckAddr("d", "127.0.0.1:1883", true)
	got := Lines(p.Err())
	if len(got) != 2 || got[0] != "b: must not be empty" || got[1][:2] != "c:" {
		t.Fatalf("got %q", got)
	}
}
