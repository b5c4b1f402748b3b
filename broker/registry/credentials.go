package registry

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
)

const (
	hashLen = sha256.Size
	saltLen = 16
)

// credID is a credential index key: a namespace byte and a SHA-256.
type credID [1 + hashLen]byte

// Credential namespaces, as ThingsBoard's credentialsId values.
const (
	// nsName holds what ThingsBoard looks up by credentialsId = user name:
	// access tokens and user-name-only MQTT basic credentials. They share
	// the namespace, so a token can never equal another device's user name.
	nsName byte = 'n'
	// nsClient is MQTT basic by client id alone (ThingsBoard: sha3(clientId)).
	nsClient byte = 'c'
	// nsClientUser is MQTT basic by client id and user name (ThingsBoard:
	// sha3("|", clientId, userName)).
	nsClientUser byte = 'u'
)

func makeID(ns byte, parts ...string) credID {
	h := sha256.New()
	for i, p := range parts {
		if i < len(parts)-1 {
			// Length-prefix all but the last part, so ("a|b", "c") and
			// ("a", "b|c") differ (ThingsBoard's "|" join does not).
			h.Write(binary.AppendUvarint(nil, uint64(len(p))))
		}
		h.Write([]byte(p))
	}
	var id credID
	id[0] = ns
	h.Sum(id[:1])
	return id
}

func idByName(username string) credID   { return makeID(nsName, username) }
func idByClient(clientID string) credID { return makeID(nsClient, clientID) }
func idByClientUser(clientID, username string) credID {
	return makeID(nsClientUser, clientID, username)
}

// describe names the credentials of id for an error message, without
// secrets: for nsName the user name may be another device's token.
func (e *entry) describe(id credID) string {
	switch id[0] {
	case nsClient:
		return fmt.Sprintf("client id %q", e.dev.ClientID)
	case nsClientUser:
		return fmt.Sprintf("client id %q with user name %q", e.dev.ClientID, e.dev.Username)
	default:
		return "the access token or user name"
	}
}

// entry is a device in the in-memory index. Entries are immutable once
// published in the index (writers replace them), so a reader may use one
// after releasing the lock.
type entry struct {
	dev       Device
	tokenHash [hashLen]byte // SHA-256(token), for access_token
	salt      []byte        // for mqtt_basic with a password
	pwHash    []byte        // SHA-256(salt || password); empty: any password
	write     *Write        // the write that stored this entry (nil when loaded by Open)
}

// newEntry hashes c into a new entry for d; kind was validated.
func newEntry(d Device, kind CredentialKind, c Credentials) (*entry, error) {
	d.Credential = kind
	d.ClientID, d.Username = "", ""
	e := &entry{dev: d}
	switch kind {
	case CredentialAccessToken:
		e.tokenHash = sha256.Sum256([]byte(c.Token))
	case CredentialMQTTBasic:
		e.dev.ClientID, e.dev.Username = c.ClientID, c.Username
		if c.Password != "" {
			e.salt = make([]byte, saltLen)
			if _, err := rand.Read(e.salt); err != nil {
				return nil, fmt.Errorf("registry: salt: %w", err)
			}
			e.pwHash = hashPassword(e.salt, []byte(c.Password))
		}
	}
	return e, nil
}

func hashPassword(salt, password []byte) []byte {
	h := sha256.New()
	h.Write(salt)
	h.Write(password)
	return h.Sum(nil)
}

// ids returns the credential index keys of e.
func (e *entry) ids() []credID {
	d := e.dev
	switch d.Credential {
	case CredentialAccessToken:
		var id credID
		id[0] = nsName
		copy(id[1:], e.tokenHash[:])
		return []credID{id}
	case CredentialMQTTBasic:
		switch {
		case d.ClientID != "" && d.Username != "":
			return []credID{idByClientUser(d.ClientID, d.Username)}
		case d.ClientID != "":
			return []credID{idByClient(d.ClientID)}
		default:
			return []credID{idByName(d.Username)}
		}
	}
	return nil
}

// checkPassword reports whether password matches, in constant time. A
// stored empty password accepts any password.
func (e *entry) checkPassword(password []byte) bool {
	if len(e.pwHash) == 0 {
		return true
	}
	return subtle.ConstantTimeCompare(hashPassword(e.salt, password), e.pwHash) == 1
}

// AuthResult is the outcome of Authenticate. The zero value is not a result.
type AuthResult uint8

// Authentication results.
const (
	// AuthOK: the credentials belong to the returned device.
	AuthOK AuthResult = iota + 1
	// AuthUnknown: no device has these credentials.
	AuthUnknown
	// AuthBadPassword: the client id and/or user name match MQTT basic
	// credentials whose password differs.
	AuthBadPassword
	// AuthUnknownClientID: no user name was given and no MQTT basic
	// credentials have this client id alone.
	AuthUnknownClientID
)

func (a AuthResult) String() string {
	switch a {
	case AuthOK:
		return "ok"
	case AuthUnknown:
		return "unknown credentials"
	case AuthBadPassword:
		return "bad password"
	case AuthUnknownClientID:
		return "unknown client id"
	}
	return fmt.Sprintf("AuthResult(%d)", uint8(a))
}

// Authenticate finds the device that CONNECTs with these values, in
// ThingsBoard's order (CONNECT without a client certificate):
//
//  1. user name empty: MQTT basic by client id alone (such credentials
//     never have a password).
//  2. user name given: MQTT basic by client id and user name; the password
//     is checked and a mismatch rejects.
//  3. not found: by user name alone: an access token accepts whatever the
//     password and client id are; user-name-only MQTT basic checks the
//     password.
//
// A stored empty password accepts any password. Only SHA-256 hashes are
// computed and compared, in constant time; Authenticate is safe for
// concurrent use and takes only a read lock.
func (r *Registry) Authenticate(clientID, username string, password []byte) (Device, AuthResult) {
	if username == "" {
		e := r.lookup(idByClient(clientID))
		switch {
		case e != nil && e.checkPassword(password):
			return e.dev, AuthOK
		case e != nil:
			return Device{}, AuthBadPassword
		case clientID == "":
			return Device{}, AuthUnknown
		}
		return Device{}, AuthUnknownClientID
	}
	if e := r.lookup(idByClientUser(clientID, username)); e != nil {
		if e.checkPassword(password) {
			return e.dev, AuthOK
		}
		return Device{}, AuthBadPassword
	}
	id := idByName(username)
	e := r.lookup(id)
	if e == nil {
		return Device{}, AuthUnknown
	}
	if e.dev.Credential == CredentialAccessToken {
		if subtle.ConstantTimeCompare(e.tokenHash[:], id[1:]) == 1 {
			return e.dev, AuthOK
		}
		return Device{}, AuthUnknown
	}
	if e.checkPassword(password) {
		return e.dev, AuthOK
	}
	return Device{}, AuthBadPassword
}

// lookup returns the entry owning id, under the read lock.
func (r *Registry) lookup(id credID) *entry {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.mu.creds[id]
}
