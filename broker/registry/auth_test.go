package registry

import (
	"testing"
)

// authFixture registers one device per credential form.
func authFixture(t *testing.T) *Registry {
	t.Helper()
	r, _ := openTest(t)
	for _, f := range []struct {
		name string
		c    Credentials
	}{
		{"token", Credentials{Token: "A1b2C3d4E5f6G7h8"}},
		{"cid-only", Credentials{ClientID: "cid-1"}},
		{"user-pw", Credentials{Username: "user1", Password: "pw1"}},
		{"user-nopw", Credentials{Username: "user2"}},
		{"cid-user-pw", Credentials{ClientID: "cid-2", Username: "user3", Password: "pw3"}},
		{"cid-user-nopw", Credentials{ClientID: "cid-3", Username: "user4"}},
		// Step 2 wins over step 3: "shared" is both this device's user
		// name (with cid-9) and another device's token.
		{"cid9-shared", Credentials{ClientID: "cid-9", Username: "shared", Password: "pw9"}},
		{"token-shared", Credentials{Token: "shared"}},
	} {
		mustPut(t, r, Device{Name: f.name, Source: SourceConfig}, f.c)
	}
	if _, _, err := r.Ensure(Device{Name: "child", Parent: "token", Source: SourceGateway}); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestAuthenticate(t *testing.T) {
	r := authFixture(t)
	tests := []struct {
		name               string
		clientID, username string
		password           []byte
		want               AuthResult
		device             string
	}{
		// Access token: the user name; password and client id ignored.
		{"token", "any-client", "A1b2C3d4E5f6G7h8", nil, AuthOK, "token"},
		{"token with random client id and password", "x7Hq0", "A1b2C3d4E5f6G7h8", []byte("whatever"), AuthOK, "token"},
		{"token with empty client id", "", "A1b2C3d4E5f6G7h8", []byte{}, AuthOK, "token"},
		{"token as client id is not a token", "A1b2C3d4E5f6G7h8", "", nil, AuthUnknownClientID, ""},
		{"token prefix", "c", "A1b2C3d4", nil, AuthUnknown, ""},

		// Step 1: user name empty → MQTT basic by client id alone.
		{"basic client id only", "cid-1", "", nil, AuthOK, "cid-only"},
		{"basic client id only, password ignored", "cid-1", "", []byte("pw"), AuthOK, "cid-only"},
		{"unknown client id", "cid-unknown", "", nil, AuthUnknownClientID, ""},
		{"client id of a client id+user name device", "cid-2", "", []byte("pw3"), AuthUnknownClientID, ""},
		{"nothing at all", "", "", nil, AuthUnknown, ""},

		// Step 2: client id and user name, password checked.
		{"basic client id+user name", "cid-2", "user3", []byte("pw3"), AuthOK, "cid-user-pw"},
		{"basic client id+user name, wrong password", "cid-2", "user3", []byte("pw"), AuthBadPassword, ""},
		{"basic client id+user name, no password", "cid-2", "user3", nil, AuthBadPassword, ""},
		{"basic client id+user name, stored empty password", "cid-3", "user4", []byte("anything"), AuthOK, "cid-user-nopw"},
		{"basic client id+user name, other client id", "cid-x", "user3", []byte("pw3"), AuthUnknown, ""},
		{"step 2 before token", "cid-9", "shared", []byte("pw9"), AuthOK, "cid9-shared"},
		{"step 2 bad password does not fall back", "cid-9", "shared", []byte("nope"), AuthBadPassword, ""},
		{"other client id falls back to token", "cid-8", "shared", []byte("nope"), AuthOK, "token-shared"},

		// Step 3: user name only MQTT basic, password checked.
		{"basic user name only", "", "user1", []byte("pw1"), AuthOK, "user-pw"},
		{"basic user name only, any client id", "random-cid", "user1", []byte("pw1"), AuthOK, "user-pw"},
		{"basic user name only, wrong password", "c", "user1", []byte("pw2"), AuthBadPassword, ""},
		{"basic user name only, missing password", "c", "user1", nil, AuthBadPassword, ""},
		{"basic user name only, stored empty password", "c", "user2", []byte("x"), AuthOK, "user-nopw"},
		{"basic user name only, stored empty password, no password", "", "user2", nil, AuthOK, "user-nopw"},

		{"unknown user name", "c", "nobody", []byte("pw"), AuthUnknown, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, got := r.Authenticate(tt.clientID, tt.username, tt.password)
			if got != tt.want || d.Name != tt.device {
				t.Fatalf("Authenticate(%q, %q, %q) = %q, %v; want %q, %v",
					tt.clientID, tt.username, tt.password, d.Name, got, tt.device, tt.want)
			}
		})
	}
}

func TestAuthResultString(t *testing.T) {
	for r, want := range map[AuthResult]string{
		AuthOK: "ok", AuthUnknown: "unknown credentials", AuthBadPassword: "bad password",
		AuthUnknownClientID: "unknown client id", 0: "AuthResult(0)",
	} {
		if r.String() != want {
			t.Errorf("%d.String() = %q, want %q", r, r.String(), want)
		}
	}
}

func TestMakeIDUnambiguous(t *testing.T) {
	if idByClientUser("a|b", "c") == idByClientUser("a", "b|c") {
		t.Error("client id and user name are not separated")
	}
	if idByName("x") == idByClient("x") {
		t.Error("namespaces collide")
	}
}

func BenchmarkAuthenticate(b *testing.B) {
	r, _ := openTest(b)
	if err := r.Put(Device{Name: "d"}, Credentials{ClientID: "c", Username: "u", Password: "p"}); err != nil {
		b.Fatal(err)
	}
	if err := r.Put(Device{Name: "t"}, Credentials{Token: "tok"}); err != nil {
		b.Fatal(err)
	}
	b.Run("basic", func(b *testing.B) {
		for b.Loop() {
			if _, res := r.Authenticate("c", "u", []byte("p")); res != AuthOK {
				b.Fatal(res)
			}
		}
	})
	b.Run("token", func(b *testing.B) {
		for b.Loop() {
			if _, res := r.Authenticate("c", "tok", nil); res != AuthOK {
				b.Fatal(res)
			}
		}
	})
}
