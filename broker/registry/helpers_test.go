package registry

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/configs"

	"github.com/ferry-iot/ferry/broker/state"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// openTest opens a registry over an in-memory store, with a fixed clock.
func openTest(t testing.TB) (*Registry, *state.Store) {
	t.Helper()
	st, err := state.Open("", state.WithInMemory(), state.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	r, err := Open(st)
	if err != nil {
		t.Fatal(err)
	}
	r.now = func() time.Time { return testNow }
	return r, st
}

func mustPut(t *testing.T, r *Registry, d Device, c Credentials) {
	t.Helper()
	if err := r.Put(d, c); err != nil {
		t.Fatalf("Put(%s): %v", d.Name, err)
	}
}

// fields returns the Key of every *configs.FieldError joined in err, sorted.
func fields(err error) []string {
	var out []string
	var walk func(error)
	walk = func(err error) {
		var fe *configs.FieldError
		if errors.As(err, &fe) && fe == err {
			out = append(out, fe.Key)
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
		}
	}
	walk(err)
	slices.Sort(out)
	return out
}
