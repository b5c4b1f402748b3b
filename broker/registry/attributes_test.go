package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
)

func attrString(attrs []Attribute) string {
	s := ""
	for _, a := range attrs {
		s += fmt.Sprintf("%s=%s@%d ", a.Key, a.Value, a.UpdatedMs)
	}
	return s
}

func TestAttributes(t *testing.T) {
	r, _ := openTest(t)
	mustPut(t, r, Device{Name: "dev"}, Credentials{Token: "t1"})
	mustPut(t, r, Device{Name: "dev2"}, Credentials{Token: "t2"}) // "dev" is a prefix of "dev2"
	now := testNow.UnixMilli()

	set := func(device string, scope Scope, attrs ...Attribute) {
		t.Helper()
		if err := r.SetAttributes(device, scope, attrs); err != nil {
			t.Fatal(err)
		}
	}
	set("dev", ScopeClient,
		Attribute{Key: "b", Value: json.RawMessage(`"x"`), UpdatedMs: 5},
		Attribute{Key: "a", Value: json.RawMessage(` 1 `)},
		Attribute{Key: "c", Value: json.RawMessage(`{"nested": [1, 2]}`)},
		Attribute{Key: "b", Value: json.RawMessage(`"y"`), UpdatedMs: 6}, // last wins
	)
	set("dev", ScopeShared, Attribute{Key: "a", Value: json.RawMessage(`true`), UpdatedMs: 7})
	set("dev2", ScopeClient, Attribute{Key: "a", Value: json.RawMessage(`2`), UpdatedMs: 8})

	tests := []struct {
		name   string
		device string
		scope  Scope
		keys   []string
		want   string
	}{
		{"all client", "dev", ScopeClient, nil,
			fmt.Sprintf(`a=1@%d b="y"@6 c={"nested":[1,2]}@%d `, now, now)},
		{"all shared", "dev", ScopeShared, nil, "a=true@7 "},
		{"other device", "dev2", ScopeClient, nil, "a=2@8 "},
		{"some keys, sorted, unknown skipped", "dev", ScopeClient, []string{"c", "zz", "b", "c", ""},
			fmt.Sprintf(`b="y"@6 c={"nested":[1,2]}@%d `, now)},
		{"empty key list", "dev", ScopeClient, []string{}, ""},
		{"no shared on dev2", "dev2", ScopeShared, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.Attributes(tt.device, tt.scope, tt.keys)
			if err != nil {
				t.Fatal(err)
			}
			if attrString(got) != tt.want {
				t.Fatalf("Attributes = %s, want %s", attrString(got), tt.want)
			}
		})
	}

	// Update and delete.
	set("dev", ScopeClient, Attribute{Key: "a", Value: json.RawMessage(`null`), UpdatedMs: 9})
	if err := r.DeleteAttributes("dev", ScopeClient, []string{"b", "missing", ""}); err != nil {
		t.Fatal(err)
	}
	got, err := r.Attributes("dev", ScopeClient, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf(`a=null@9 c={"nested":[1,2]}@%d `, now); attrString(got) != want {
		t.Fatalf("after update and delete: %s, want %s", attrString(got), want)
	}
	if got, _ := r.Attributes("dev", ScopeShared, nil); attrString(got) != "a=true@7 " {
		t.Fatalf("delete in client scope touched shared: %s", attrString(got))
	}
}

func TestAttributeErrors(t *testing.T) {
	r, _ := openTest(t)
	mustPut(t, r, Device{Name: "dev"}, Credentials{})
	tests := []struct {
		name   string
		device string
		scope  Scope
		attrs  []Attribute
		want   error
		fields []string
	}{
		{"unknown device", "nope", ScopeClient, []Attribute{{Key: "a", Value: []byte("1")}}, ErrNotFound, nil},
		{"bad scope", "dev", 0, []Attribute{{Key: "a", Value: []byte("1")}}, ErrInvalid, []string{"scope"}},
		{"all problems", "dev", ScopeShared, []Attribute{
			{Key: "", Value: []byte("1")},
			{Key: "ok", Value: []byte("{")},
			{Key: "two", Value: []byte("1 2")},
			{Key: "empty", Value: nil},
			{Key: "neg", Value: []byte("1"), UpdatedMs: -1},
		}, ErrInvalid, []string{"attributes[0].key", "attributes[1].value", "attributes[2].value", "attributes[3].value", "attributes[4].updated_ms"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := r.SetAttributes(tt.device, tt.scope, tt.attrs)
			if !errors.Is(err, tt.want) {
				t.Fatalf("SetAttributes = %v, want %v", err, tt.want)
			}
			if got := fields(err); fmt.Sprint(got) != fmt.Sprint(tt.fields) {
				t.Errorf("fields %q, want %q", got, tt.fields)
			}
		})
	}
	if got, _ := r.Attributes("dev", ScopeShared, nil); len(got) != 0 {
		t.Errorf("a failed SetAttributes wrote %s", attrString(got))
	}
	if _, err := r.Attributes("nope", ScopeClient, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("Attributes of unknown device = %v", err)
	}
	if _, err := r.Attributes("dev", 9, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("Attributes with bad scope = %v", err)
	}
	if err := r.DeleteAttributes("nope", ScopeClient, []string{"a"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteAttributes of unknown device = %v", err)
	}
	if err := r.DeleteAttributes("dev", 0, []string{"a"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("DeleteAttributes with bad scope = %v", err)
	}
	if ScopeClient.String() != "client" || ScopeShared.String() != "shared" || Scope(0).String() != "Scope(0)" {
		t.Error("Scope.String")
	}
}
