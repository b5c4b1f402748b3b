package state

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The probe's child process: this binary, asked to probe a store.
	if dir := os.Getenv("STATE_TEST_PROBE"); dir != "" {
		if err := Probe(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func openMem(t *testing.T) *Store {
	t.Helper()
	s, err := Open("", WithInMemory(), WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func TestRoundTrip(t *testing.T) {
	s := openMem(t)
	tests := []struct {
		name       string
		key, value []byte
	}{
		{"text", []byte("reg/d/dev1"), []byte(`{"name":"dev1"}`)},
		{"binary", []byte{0, 1, 2, 0xff}, []byte{0, 0, 0}},
		{"empty value", []byte("off/g/t/0"), []byte{}},
		{"large value in the value log", []byte("ckpt/big"), bytes.Repeat([]byte("x"), 64<<10)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.Get(tt.key); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get before Set: %v, want ErrNotFound", err)
			}
			if err := s.Set(tt.key, tt.value); err != nil {
				t.Fatal(err)
			}
			got, err := s.Get(tt.key)
			if err != nil || !bytes.Equal(got, tt.value) {
				t.Fatalf("Get = %q, %v; want %q", got, err, tt.value)
			}
			if err := s.Delete(tt.key); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Get(tt.key); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get after Delete: %v, want ErrNotFound", err)
			}
		})
	}
}

func TestGetReturnsCopy(t *testing.T) {
	s := openMem(t)
	if err := s.Set([]byte("k"), []byte("value")); err != nil {
		t.Fatal(err)
	}
	v, _ := s.Get([]byte("k"))
	v[0] = 'X'
	if v2, _ := s.Get([]byte("k")); string(v2) != "value" {
		t.Fatalf("stored value changed through a returned slice: %q", v2)
	}
}

func TestKeyErrors(t *testing.T) {
	s := openMem(t)
	tests := []struct {
		name string
		key  []byte
	}{
		{"empty", nil},
		{"badger internal prefix", []byte("!badger!x")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Set(tt.key, []byte("v"))
			if err == nil || !bytes.HasPrefix([]byte(err.Error()), []byte("state: ")) {
				t.Fatalf("Set(%q) = %v, want a state: error", tt.key, err)
			}
		})
	}
}

func TestTooLarge(t *testing.T) {
	s := openMem(t)
	secret := bytes.Repeat([]byte("s3cr3t"), MaxValueSize/6+1)
	tests := []struct {
		name string
		call func() error
	}{
		{"Set value", func() error { return s.Set([]byte("k"), secret) }},
		{"Set key", func() error { return s.Set(make([]byte, MaxKeySize+1), nil) }},
		{"Delete key", func() error { return s.Delete(make([]byte, MaxKeySize+1)) }},
		{"Txn.Set value", func() error {
			return s.Update(func(tx *Txn) error { return tx.Set([]byte("k"), secret) })
		}},
		{"Txn.Delete key", func() error {
			return s.Update(func(tx *Txn) error { return tx.Delete(make([]byte, MaxKeySize+1)) })
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("err = %v, want ErrTooLarge", err)
			}
			if bytes.Contains([]byte(err.Error()), []byte("s3cr3t")) {
				t.Fatal("error quotes the value")
			}
		})
	}
	// The limit itself is accepted, in memory as on disk.
	if err := s.Set(make([]byte, MaxKeySize), make([]byte, MaxValueSize)); err != nil {
		t.Fatalf("Set at the limits: %v", err)
	}
}

func TestUpdateAtomic(t *testing.T) {
	s := openMem(t)
	errBoom := errors.New("boom")
	err := s.Update(func(tx *Txn) error {
		if err := tx.Set([]byte("a"), []byte("1")); err != nil {
			return err
		}
		if err := tx.Set([]byte("b"), []byte("2")); err != nil {
			return err
		}
		// The transaction sees its own writes.
		if v, err := tx.Get([]byte("a")); err != nil || string(v) != "1" {
			t.Errorf("tx.Get(a) = %q, %v", v, err)
		}
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("Update = %v, want fn's error", err)
	}
	for _, k := range []string{"a", "b"} {
		if _, err := s.Get([]byte(k)); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s written by a failed Update: %v", k, err)
		}
	}

	key, val := []byte("a"), []byte("1")
	err = s.Update(func(tx *Txn) error {
		if err := tx.Set(key, val); err != nil {
			return err
		}
		key[0], val[0] = 'z', '9' // Set copied them
		return tx.Delete([]byte("missing"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get([]byte("a")); err != nil || string(v) != "1" {
		t.Fatalf("Get(a) = %q, %v", v, err)
	}
}

func TestTxnUsedAfterUpdate(t *testing.T) {
	s := openMem(t)
	var leaked *Txn
	if err := s.Update(func(tx *Txn) error { leaked = tx; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := leaked.Get([]byte("k")); !errors.Is(err, ErrTxnDone) {
		t.Errorf("Get = %v", err)
	}
	if err := leaked.Set([]byte("k"), nil); !errors.Is(err, ErrTxnDone) {
		t.Errorf("Set = %v", err)
	}
	if err := leaked.Delete([]byte("k")); !errors.Is(err, ErrTxnDone) {
		t.Errorf("Delete = %v", err)
	}
}

// TestUpdateSerializable runs read-modify-write increments from several
// goroutines, with blind Sets of other keys in between; no increment is lost.
func TestUpdateSerializable(t *testing.T) {
	s := openMem(t)
	const workers, perWorker = 4, 25
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range perWorker {
				err := s.Update(func(tx *Txn) error {
					n := 0
					v, err := tx.Get([]byte("counter"))
					switch {
					case errors.Is(err, ErrNotFound):
					case err != nil:
						return err
					default:
						if n, err = strconv.Atoi(string(v)); err != nil {
							return err
						}
					}
					return tx.Set([]byte("counter"), []byte(strconv.Itoa(n+1)))
				})
				if err != nil {
					t.Error(err)
					return
				}
				if err := s.Set([]byte("other"), []byte("x")); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	v, err := s.Get([]byte("counter"))
	if err != nil || string(v) != strconv.Itoa(workers*perWorker) {
		t.Fatalf("counter = %q, %v; want %d", v, err, workers*perWorker)
	}
}

func TestScanPrefixOrder(t *testing.T) {
	s := openMem(t)
	for _, k := range []string{"b/2", "a/2", "a/10", "a", "a/1", "ab", "b/1", "a/"} {
		if err := s.Set([]byte(k), []byte("v"+k)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"a/", []string{"a/", "a/1", "a/10", "a/2"}},
		{"a", []string{"a", "a/", "a/1", "a/10", "a/2", "ab"}},
		{"b/", []string{"b/1", "b/2"}},
		{"c", nil},
		{"", []string{"a", "a/", "a/1", "a/10", "a/2", "ab", "b/1", "b/2"}},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			var got []string
			var keep [][]byte
			err := s.Scan([]byte(tt.prefix), func(k, v []byte) error {
				if string(v) != "v"+string(k) {
					t.Errorf("value of %q = %q", k, v)
				}
				got = append(got, string(k))
				keep = append(keep, k)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("Scan(%q) = %q, want %q", tt.prefix, got, tt.want)
			}
			for i, k := range keep { // fn may keep the slices
				if string(k) != tt.want[i] {
					t.Fatalf("kept key %d changed to %q", i, k)
				}
			}
		})
	}

	errStop := errors.New("stop")
	n := 0
	err := s.Scan([]byte("a"), func(k, v []byte) error { n++; return errStop })
	if !errors.Is(err, errStop) || n != 1 {
		t.Fatalf("Scan with failing fn = %v after %d calls", err, n)
	}
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("v"), 4<<10) // above the value threshold: lives in the value log
	if err := s.Set([]byte("small"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("big"), big); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx *Txn) error {
		return errors.Join(tx.Set([]byte("gone"), []byte("x")), tx.Set([]byte("tx"), []byte("2")))
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete([]byte("gone")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(dir, WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for k, want := range map[string]string{"small": "1", "big": string(big), "tx": "2"} {
		if v, err := s.Get([]byte(k)); err != nil || string(v) != want {
			t.Errorf("after reopen Get(%s) = %d bytes, %v", k, len(v), err)
		}
	}
	if _, err := s.Get([]byte("gone")); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted key after reopen: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(""); err == nil {
		t.Error("Open with empty dir succeeded")
	}
	dir := t.TempDir()
	s, err := Open(dir, WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The directory is locked by the first Store.
	if s2, err := Open(dir, WithLogger(nil)); err == nil {
		s2.Close()
		t.Error("second Open of a locked directory succeeded")
	} else if !bytes.HasPrefix([]byte(err.Error()), []byte("state: open ")) {
		t.Errorf("error %q lacks the package prefix", err)
	}
}

// TestCloseStopsGC runs the GC loop often, then checks that Close leaves
// no goroutine behind.
func TestCloseStopsGC(t *testing.T) {
	s, err := Open(t.TempDir(), WithGCInterval(time.Millisecond), WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := s.Set([]byte("k"), bytes.Repeat([]byte{byte(i)}, 8<<10)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond) // let a few GC rounds run
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t)
}

func TestClosed(t *testing.T) {
	s, err := Open("", WithInMemory(), WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	calls := map[string]func() error{
		"Get":    func() error { _, err := s.Get([]byte("k")); return err },
		"Set":    func() error { return s.Set([]byte("k"), nil) },
		"Delete": func() error { return s.Delete([]byte("k")) },
		"Update": func() error { return s.Update(func(*Txn) error { return nil }) },
		"Scan":   func() error { return s.Scan(nil, func(k, v []byte) error { return nil }) },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}
