package registry

import (
	"errors"
	"fmt"
	"testing"

	"github.com/ferry-iot/ferry/broker/state"
)

// holdStore starts a store transaction that does not commit until release
// is called: every other store writer (the registry's commit goroutine
// included) waits behind it. It returns once the transaction is open.
func holdStore(t *testing.T, st *state.Store) (release func()) {
	t.Helper()
	opened, unblock, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		done <- st.Update(func(*state.Txn) error {
			close(opened)
			<-unblock
			return nil
		})
	}()
	<-opened
	released := false
	release = func() {
		if !released {
			released = true
			close(unblock)
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(release)
	return release
}

// TestWritesCoalesce: attribute writes queued while a commit waits for the
// store share one transaction, complete in order, and are all durable.
func TestWritesCoalesce(t *testing.T) {
	r, st := openTest(t)
	const n = 50
	for i := range n {
		mustPut(t, r, Device{Name: fmt.Sprintf("d%d", i)}, Credentials{Token: fmt.Sprintf("t%d", i)})
	}
	before := r.Stats()
	release := holdStore(t, st)
	var writes []*Write
	for i := range n {
		w, err := r.SetAttributesAsync(fmt.Sprintf("d%d", i), ScopeClient, []Attribute{{Key: "v", Value: []byte(fmt.Sprint(i))}})
		if err != nil {
			t.Fatal(err)
		}
		writes = append(writes, w)
	}
	for _, w := range writes {
		select {
		case <-w.Done():
			t.Fatal("a write completed while the store was held")
		default:
		}
	}
	release()
	if err := writes[n-1].Wait(); err != nil {
		t.Fatal(err)
	}
	for i, w := range writes {
		select {
		case <-w.Done():
		default:
			t.Fatalf("write %d not complete after the last one", i)
		}
		if err := w.Wait(); err != nil { // complete: returns at once
			t.Fatal(err)
		}
		got, err := r.Attributes(fmt.Sprintf("d%d", i), ScopeClient, nil)
		if err != nil || len(got) != 1 || string(got[0].Value) != fmt.Sprint(i) {
			t.Fatalf("d%d attributes %+v %v", i, got, err)
		}
	}
	st2 := r.Stats()
	if st2.Writes-before.Writes != n {
		t.Fatalf("%d writes counted, want %d", st2.Writes-before.Writes, n)
	}
	// The first write may have been taken alone before the store was
	// held; everything else queued behind it.
	if c := st2.Commits - before.Commits; c > 2 {
		t.Fatalf("%d writes took %d commits: not coalesced", n, c)
	}
}

// TestEnsureAsyncVisibleAtOnce: a device created without waiting is
// visible at once, so a second creator sees it (and a Create is refused)
// before it is durable.
func TestEnsureAsyncVisibleAtOnce(t *testing.T) {
	r, st := openTest(t)
	release := holdStore(t, st)
	d, created, w, err := r.EnsureAsync(Device{Name: "child", Parent: "gw-1"})
	if err != nil || !created || w == nil {
		t.Fatalf("EnsureAsync = %+v %v %v %v", d, created, w, err)
	}
	// A second caller gets the existing device and, while it is being
	// written, its pending write.
	if got, created, w2, err := r.EnsureAsync(Device{Name: "child", Parent: "gw-2"}); err != nil || created || w2 != w || got.Parent != "gw-1" {
		t.Fatalf("second EnsureAsync = %+v %v %v %v", got, created, w2, err)
	}
	createErr := make(chan error, 1)
	go func() { createErr <- r.Create(Device{Name: "child"}, Credentials{Token: "x"}) }()
	if err := <-createErr; !errors.Is(err, ErrExists) {
		t.Fatalf("Create of a pending device: %v", err)
	}
	if _, err := r.SetAttributesAsync("child", ScopeClient, []Attribute{{Key: "k", Value: []byte("1")}}); err != nil {
		t.Fatalf("attributes of a pending device: %v", err)
	}
	aw, err := r.SetAttributesAsync("child", ScopeClient, []Attribute{{Key: "k2", Value: []byte("2")}})
	if err != nil {
		t.Fatal(err)
	}
	if Latest(w, aw) != aw || Latest(aw, w) != aw || Latest(nil, w) != w || Latest(w, nil) != w {
		t.Fatal("Latest does not pick the write made last")
	}
	release()
	if err := aw.Wait(); err != nil {
		t.Fatal(err)
	}
	if got, _, w3, _ := r.EnsureAsync(Device{Name: "child"}); w3 != nil || got.Parent != "gw-1" {
		t.Fatalf("EnsureAsync after the write completed: %+v %v", got, w3)
	}
}

// TestFailedWriteIsUndone: when the store refuses a write, its in-memory
// effect is undone and the caller gets the error, for every kind of write.
func TestFailedWriteIsUndone(t *testing.T) {
	r, st := openTest(t)
	mustPut(t, r, Device{Name: "kept"}, Credentials{Token: "kept-token"})
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Put(Device{Name: "new"}, Credentials{Token: "new-token"}); !errors.Is(err, state.ErrClosed) {
		t.Fatalf("Put on a closed store: %v", err)
	}
	if _, ok := r.Get("new"); ok {
		t.Fatal("failed Put left the device in memory")
	}
	if _, res := r.Authenticate("", "new-token", nil); res == AuthOK {
		t.Fatal("failed Put left its credentials in memory")
	}
	if err := r.Put(Device{Name: "kept", Type: "changed"}, Credentials{Token: "other-token"}); err == nil {
		t.Fatal("replacing Put succeeded on a closed store")
	}
	if d, res := r.Authenticate("", "kept-token", nil); res != AuthOK || d.Type != "" {
		t.Fatalf("failed replace not undone: %+v %v", d, res)
	}
	if _, res := r.Authenticate("", "other-token", nil); res == AuthOK {
		t.Fatal("failed replace left its new credentials")
	}
	if err := r.Delete("kept"); err == nil {
		t.Fatal("Delete succeeded on a closed store")
	}
	if _, ok := r.Get("kept"); !ok {
		t.Fatal("failed Delete not undone")
	}
	_, created, w, err := r.EnsureAsync(Device{Name: "child"})
	if err != nil || !created {
		t.Fatalf("EnsureAsync: %v %v", created, err)
	}
	// The create's commit runs on its own goroutine and may already have
	// failed and been undone: then the device is gone and the attribute
	// write is refused at once. Otherwise it queues behind the create and
	// fails with it. Either way nothing is written.
	aw, err := r.SetAttributesAsync("child", ScopeClient, []Attribute{{Key: "k", Value: []byte("1")}})
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		t.Fatalf("attribute write after a failed create: %v", err)
	default:
		if err := aw.Wait(); err == nil {
			t.Fatal("attribute write after a failed create succeeded")
		}
	}
	if err := w.Wait(); !errors.Is(err, state.ErrClosed) {
		t.Fatalf("EnsureAsync write: %v", err)
	}
	if _, ok := r.Get("child"); ok {
		t.Fatal("failed create not undone")
	}
	if s := r.Stats(); s.Writes == 0 || s.Commits == 0 {
		t.Fatalf("stats %+v", s)
	}
}
