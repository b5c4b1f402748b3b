package registry

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/broker/state"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPutValidation(t *testing.T) {
	r, _ := openTest(t)
	tests := []struct {
		name   string
		d      Device
		c      Credentials
		fields []string // nil: valid
		text   string   // in the error, if set
	}{
		{"no credentials", Device{Name: "d"}, Credentials{}, nil, ""},
		{"inferred token", Device{Name: "d"}, Credentials{Token: "t"}, nil, ""},
		{"inferred basic", Device{Name: "d"}, Credentials{Username: "u", Password: "p"}, nil, ""},
		{"declared basic", Device{Name: "d", Credential: CredentialMQTTBasic}, Credentials{ClientID: "c"}, nil, ""},
		{"unicode name", Device{Name: "Kühlschrank 3 — Küche"}, Credentials{}, nil, ""},
		{"max name", Device{Name: strings.Repeat("n", MaxNameLen)}, Credentials{}, nil, ""},

		{"empty name", Device{}, Credentials{}, []string{"name"}, "name: is empty"},
		{"long name", Device{Name: strings.Repeat("n", MaxNameLen+1)}, Credentials{}, []string{"name"}, ""},
		{"control character", Device{Name: "a\nb"}, Credentials{}, []string{"name"}, "control character"},
		{"NUL in name", Device{Name: "a\x00b"}, Credentials{}, []string{"name"}, ""},
		{"invalid UTF-8", Device{Name: "a\xffb"}, Credentials{}, []string{"name"}, "UTF-8"},
		{"bad type", Device{Name: "d", Type: "t\t"}, Credentials{}, []string{"type"}, ""},
		{"own parent", Device{Name: "d", Parent: "d"}, Credentials{}, []string{"parent"}, ""},
		{"other source", Device{Name: "d", Source: "anonymous"}, Credentials{}, nil, ""},
		{"bad source", Device{Name: "d", Source: "ld\x7fap"}, Credentials{}, []string{"source"}, ""},
		{"unknown kind", Device{Name: "d", Credential: "x509"}, Credentials{}, []string{"credential"}, ""},
		{"token and basic", Device{Name: "d"}, Credentials{Token: "t", Username: "u"}, []string{"credentials"}, "not both"},
		{"access_token without token", Device{Name: "d", Credential: CredentialAccessToken}, Credentials{}, []string{"credentials.token"}, ""},
		{"access_token with basic", Device{Name: "d", Credential: CredentialAccessToken}, Credentials{Username: "u"}, []string{"credentials"}, ""},
		{"mqtt_basic without ids", Device{Name: "d", Credential: CredentialMQTTBasic}, Credentials{}, []string{"credentials"}, "client id and/or a user name"},
		{"password alone", Device{Name: "d"}, Credentials{Password: "p"}, []string{"credentials"}, ""},
		{"password with client id only", Device{Name: "d"}, Credentials{ClientID: "c", Password: "p"},
			[]string{"credentials.password"}, "password cannot be specified along with client id"},
		{"NUL in user name", Device{Name: "d"}, Credentials{Username: "u\x00"}, []string{"credentials.username"}, ""},
		{"all at once", Device{Source: "x\n", Parent: "p\x01"}, Credentials{Token: "t", ClientID: "c"},
			[]string{"credentials", "name", "parent", "source"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := r.Put(tt.d, tt.c)
			if tt.fields == nil {
				if err != nil {
					t.Fatalf("Put = %v", err)
				}
				if err := r.Delete(tt.d.Name); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Put = %v, want ErrInvalid", err)
			}
			if got := fields(err); fmt.Sprint(got) != fmt.Sprint(tt.fields) {
				t.Errorf("fields %q, want %q (%v)", got, tt.fields, err)
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Errorf("error %q lacks %q", err, tt.text)
			}
			if !strings.HasPrefix(err.Error(), "registry: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
			if _, ok := r.Get(tt.d.Name); ok {
				t.Error("invalid device was stored")
			}
		})
	}
}

func TestUniqueness(t *testing.T) {
	r, _ := openTest(t)
	mustPut(t, r, Device{Name: "a"}, Credentials{Token: "tok-a"})
	mustPut(t, r, Device{Name: "b"}, Credentials{ClientID: "cid"})
	mustPut(t, r, Device{Name: "c"}, Credentials{ClientID: "cid", Username: "user"})
	mustPut(t, r, Device{Name: "u"}, Credentials{Username: "uname", Password: "p"})

	tests := []struct {
		name string
		d    Device
		c    Credentials
		want error
	}{
		{"same token", Device{Name: "x"}, Credentials{Token: "tok-a"}, ErrCredentialsTaken},
		{"user name equal to a token", Device{Name: "x"}, Credentials{Username: "tok-a"}, ErrCredentialsTaken},
		{"token equal to a user name", Device{Name: "x"}, Credentials{Token: "uname"}, ErrCredentialsTaken},
		{"same client id", Device{Name: "x"}, Credentials{ClientID: "cid"}, ErrCredentialsTaken},
		{"same client id and user name", Device{Name: "x"}, Credentials{ClientID: "cid", Username: "user", Password: "p"}, ErrCredentialsTaken},
		{"same user name, other namespace", Device{Name: "x"}, Credentials{Username: "user"}, nil},
		{"client id with other user name", Device{Name: "y"}, Credentials{ClientID: "cid", Username: "other"}, nil},
		{"token equal to a client id", Device{Name: "z"}, Credentials{Token: "cid"}, nil},
		{"same device, same token", Device{Name: "a", Type: "new"}, Credentials{Token: "tok-a"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := r.Put(tt.d, tt.c)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Put = %v, want %v", err, tt.want)
			}
			if err != nil && (strings.Contains(err.Error(), "tok-a") || strings.Contains(err.Error(), `"a"`)) {
				t.Errorf("error %q reveals a token or its device", err)
			}
		})
	}
	if err := r.Create(Device{Name: "a"}, Credentials{}); !errors.Is(err, ErrExists) {
		t.Errorf("Create of an existing device = %v, want ErrExists", err)
	}
	if err := r.Create(Device{Name: "new"}, Credentials{Token: "tok-new"}); err != nil {
		t.Errorf("Create = %v", err)
	}
}

func TestReplaceFreesCredentials(t *testing.T) {
	r, _ := openTest(t)
	mustPut(t, r, Device{Name: "a", Type: "t1"}, Credentials{Token: "t1"})
	created, _ := r.Get("a")
	r.now = func() time.Time { return testNow.Add(time.Hour) }
	mustPut(t, r, Device{Name: "a", Type: "t2"}, Credentials{ClientID: "c", Username: "u", Password: "p"})
	mustPut(t, r, Device{Name: "b"}, Credentials{Token: "t1"})

	if d, res := r.Authenticate("x", "t1", nil); res != AuthOK || d.Name != "b" {
		t.Errorf("old token authenticates %q, %v; want b", d.Name, res)
	}
	d, res := r.Authenticate("c", "u", []byte("p"))
	if res != AuthOK || d.Name != "a" {
		t.Fatalf("new credentials: %q, %v", d.Name, res)
	}
	want := Device{Name: "a", Type: "t2", Credential: CredentialMQTTBasic, ClientID: "c", Username: "u", CreatedAt: created.CreatedAt}
	if d != want {
		t.Errorf("device %+v, want %+v (CreatedAt kept)", d, want)
	}
}

func TestEnsure(t *testing.T) {
	r, _ := openTest(t)
	d, created, err := r.Ensure(Device{Name: "child", Type: "sensor", Parent: "gw", Source: SourceGateway})
	want := Device{Name: "child", Type: "sensor", Parent: "gw", Source: SourceGateway, CreatedAt: testNow}
	if err != nil || !created || d != want {
		t.Fatalf("Ensure = %+v, %v, %v; want %+v, true", d, created, err, want)
	}
	d, created, err = r.Ensure(Device{Name: "child", Type: "other"})
	if err != nil || created || d != want {
		t.Fatalf("second Ensure = %+v, %v, %v; want the existing device unchanged", d, created, err)
	}
	mustPut(t, r, Device{Name: "gw", Gateway: true}, Credentials{Token: "gw-token"})
	d, created, err = r.Ensure(Device{Name: "gw"})
	if err != nil || created || !d.Gateway || d.Credential != CredentialAccessToken {
		t.Fatalf("Ensure of a device with credentials = %+v, %v, %v", d, created, err)
	}
	if _, _, err := r.Ensure(Device{Name: "x", Credential: CredentialAccessToken}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Ensure with a credential kind = %v, want ErrInvalid", err)
	}
	if _, _, err := r.Ensure(Device{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Ensure without a name = %v, want ErrInvalid", err)
	}
}

func TestDeleteAndList(t *testing.T) {
	r, _ := openTest(t)
	for _, n := range []string{"c", "a", "b"} {
		mustPut(t, r, Device{Name: n}, Credentials{Token: "tok-" + n})
	}
	if err := r.SetAttributes("b", ScopeShared, []Attribute{{Key: "k", Value: []byte("1")}}); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range r.List() {
		names = append(names, d.Name)
	}
	if fmt.Sprint(names) != "[a b c]" {
		t.Fatalf("List = %v", names)
	}
	if err := r.Delete("b"); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Get("b"); ok {
		t.Error("deleted device still there")
	}
	if _, res := r.Authenticate("", "tok-b", nil); res != AuthUnknown {
		t.Errorf("deleted device's token: %v", res)
	}
	if len(r.List()) != 2 {
		t.Errorf("List after Delete = %v", r.List())
	}
	if err := r.Delete("b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
	// A device of the same name starts without the old attributes.
	mustPut(t, r, Device{Name: "b"}, Credentials{})
	if attrs, err := r.Attributes("b", ScopeShared, nil); err != nil || len(attrs) != 0 {
		t.Errorf("attributes survived Delete: %v, %v", attrs, err)
	}
}

// TestReopen checks persistence on disk and that no plaintext secret
// reaches the files.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	const token, password = "TOKEN-9f8e7d6c5b4a", "PASSWORD-0a1b2c3d"
	st, err := state.Open(dir, state.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(st)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, r, Device{Name: "tok", Type: "thermo", Source: SourceAPI}, Credentials{Token: token})
	mustPut(t, r, Device{Name: "gw", Gateway: true, Source: SourceConfig}, Credentials{ClientID: "gw-cid", Username: "gw-user", Password: password})
	if _, _, err := r.Ensure(Device{Name: "child", Parent: "gw", Source: SourceGateway}); err != nil {
		t.Fatal(err)
	}
	mustPut(t, r, Device{Name: "gone"}, Credentials{Username: "gone-user"})
	if err := r.Delete("gone"); err != nil {
		t.Fatal(err)
	}
	attrs := []Attribute{{Key: "fw", Value: []byte(`{"v": 1}`), UpdatedMs: 42}}
	if err := r.SetAttributes("child", ScopeClient, attrs); err != nil {
		t.Fatal(err)
	}
	before := r.List()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	sawIdentifier := false // the check means something only if records are readable
	err = filepath.WalkDir(dir, func(path string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		sawIdentifier = sawIdentifier || bytes.Contains(b, []byte("gw-user"))
		for _, secret := range []string{token, password} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s contains a plaintext secret", path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !sawIdentifier {
		t.Error("no file holds the plain user name: the secret check proves nothing")
	}

	st, err = state.Open(dir, state.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r, err = Open(st)
	if err != nil {
		t.Fatal(err)
	}
	if after := r.List(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("List after reopen\n%+v\nwant\n%+v", after, before)
	}
	if d, res := r.Authenticate("x", token, []byte("y")); res != AuthOK || d.Name != "tok" {
		t.Errorf("token after reopen: %q, %v", d.Name, res)
	}
	if d, res := r.Authenticate("gw-cid", "gw-user", []byte(password)); res != AuthOK || !d.Gateway {
		t.Errorf("basic after reopen: %+v, %v", d, res)
	}
	if _, res := r.Authenticate("gw-cid", "gw-user", []byte("wrong")); res != AuthBadPassword {
		t.Errorf("wrong password after reopen: %v", res)
	}
	if _, res := r.Authenticate("", "gone-user", nil); res != AuthUnknown {
		t.Errorf("deleted device after reopen: %v", res)
	}
	got, err := r.Attributes("child", ScopeClient, nil)
	if err != nil || len(got) != 1 || string(got[0].Value) != `{"v":1}` || got[0].UpdatedMs != 42 {
		t.Errorf("attributes after reopen: %+v, %v", got, err)
	}
}

// TestOpenRepairsIndex damages the stored credential index and checks
// that Open rebuilds it from the device records.
func TestOpenRepairsIndex(t *testing.T) {
	r, st := openTest(t)
	mustPut(t, r, Device{Name: "a"}, Credentials{Token: "tok-a"})
	mustPut(t, r, Device{Name: "b"}, Credentials{ClientID: "cid-b"})
	if err := st.Delete(credKey(idByName("tok-a"))); err != nil { // lost entry
		t.Fatal(err)
	}
	if err := st.Set(credKey(idByName("stale")), []byte("b")); err != nil { // stale entry
		t.Fatal(err)
	}
	if err := st.Set([]byte(prefixCred+"short"), []byte("b")); err != nil { // malformed key
		t.Fatal(err)
	}
	if err := st.Set(credKey(idByClient("cid-b")), []byte("a")); err != nil { // wrong owner
		t.Fatal(err)
	}
	r, err := Open(st)
	if err != nil {
		t.Fatal(err)
	}
	if d, res := r.Authenticate("", "tok-a", nil); res != AuthOK || d.Name != "a" {
		t.Errorf("token: %q %v", d.Name, res)
	}
	if d, res := r.Authenticate("cid-b", "", nil); res != AuthOK || d.Name != "b" {
		t.Errorf("client id: %q %v", d.Name, res)
	}
	stored := map[string]string{}
	if err := st.Scan([]byte(prefixCred), func(k, v []byte) error { stored[string(k)] = string(v); return nil }); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		string(credKey(idByName("tok-a"))):   "a",
		string(credKey(idByClient("cid-b"))): "b",
	}
	if fmt.Sprint(stored) != fmt.Sprint(want) {
		t.Errorf("stored index after repair: %q, want %q", stored, want)
	}
}

func TestOpenRejectsCorruptRecord(t *testing.T) {
	_, st := openTest(t)
	if err := st.Set(deviceKey("bad"), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(st); err == nil || !strings.HasPrefix(err.Error(), "registry: open: ") {
		t.Fatalf("Open = %v, want a registry: open: error", err)
	}
}

func TestCredentialsRedacted(t *testing.T) {
	c := Credentials{Token: "s3cret", ClientID: "cid", Username: "user", Password: "pa55"}
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s", c, c, c, c)} {
		if strings.Contains(s, "s3cret") || strings.Contains(s, "pa55") {
			t.Errorf("secret in %q", s)
		}
		if !strings.Contains(s, "cid") || !strings.Contains(s, "user") {
			t.Errorf("identifiers missing in %q", s)
		}
	}
}

// TestConcurrent authenticates on the hot path while writers change other
// devices and attributes; run with -race.
func TestConcurrent(t *testing.T) {
	r, _ := openTest(t)
	mustPut(t, r, Device{Name: "stable"}, Credentials{ClientID: "c", Username: "u", Password: "p"})
	mustPut(t, r, Device{Name: "stable-token"}, Credentials{Token: "tok"})
	const writers, readers, rounds = 3, 4, 40
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range rounds {
				name := fmt.Sprintf("dev-%d-%d", w, i%5)
				if err := r.Put(Device{Name: name}, Credentials{Token: name}); err != nil {
					t.Error(err)
					return
				}
				if err := r.SetAttributes(name, ScopeClient, []Attribute{{Key: "i", Value: []byte(fmt.Sprint(i))}}); err != nil {
					t.Error(err)
					return
				}
				if _, _, err := r.Ensure(Device{Name: name + "-child", Parent: name}); err != nil {
					t.Error(err)
					return
				}
				if i%3 == 0 {
					if err := r.Delete(name); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	for range readers {
		wg.Go(func() {
			for i := range rounds * 5 {
				if d, res := r.Authenticate("c", "u", []byte("p")); res != AuthOK || d.Name != "stable" {
					t.Errorf("basic: %q %v", d.Name, res)
					return
				}
				if d, res := r.Authenticate("", "tok", nil); res != AuthOK || d.Name != "stable-token" {
					t.Errorf("token: %q %v", d.Name, res)
					return
				}
				r.Authenticate("", fmt.Sprintf("dev-0-%d", i%5), nil)
				r.List()
				if _, err := r.Attributes(fmt.Sprintf("dev-1-%d", i%5), ScopeClient, nil); err != nil && !errors.Is(err, ErrNotFound) {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, d := range r.List() {
		if d.Credential == CredentialAccessToken && strings.HasPrefix(d.Name, "dev-") {
			if got, res := r.Authenticate("", d.Name, nil); res != AuthOK || got.Name != d.Name {
				t.Errorf("%s: %q %v", d.Name, got.Name, res)
			}
		}
	}
}
