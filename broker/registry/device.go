package registry

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// CredentialKind is how a device authenticates.
type CredentialKind string

// Credential kinds.
const (
	// CredentialNone: the device has no credentials of its own (a device
	// behind a gateway); it cannot connect directly.
	CredentialNone CredentialKind = ""
	// CredentialAccessToken: the MQTT user name is the access token.
	CredentialAccessToken CredentialKind = "access_token"
	// CredentialMQTTBasic: client id and/or user name, optional password.
	CredentialMQTTBasic CredentialKind = "mqtt_basic"
)

// Sources say who created a device; Device.Source is free text, these are
// the usual values.
const (
	SourceConfig    = "config"
	SourceAPI       = "api"
	SourceProvision = "provision"
	SourceGateway   = "gateway"
)

// Device is a registered device. It holds no secrets.
type Device struct {
	Name    string
	Type    string
	Gateway bool // may use the v1/gateway/* API
	// Credential is the kind of the device's own credentials.
	Credential CredentialKind
	// ClientID and Username are the mqtt_basic identifiers (not secret),
	// for listings. Put takes them from its Credentials.
	ClientID, Username string
	// Parent is the gateway that announced the device, if any.
	Parent string
	// Source says who created the device, usually SourceConfig,
	// SourceAPI, SourceProvision or SourceGateway.
	Source    string
	CreatedAt time.Time
}

// Credentials are plaintext credentials given to Put. They are hashed
// before they are stored and never kept or logged in plaintext.
type Credentials struct {
	// Token is an access token (Credential access_token).
	Token string
	// ClientID, Username and Password are MQTT basic credentials: a client
	// id and/or a user name, and an optional password (not with a client
	// id alone, as ThingsBoard).
	ClientID, Username, Password string
}

// String redacts the secrets, so Credentials are safe in logs.
func (c Credentials) String() string {
	return fmt.Sprintf("{Token:%s ClientID:%q Username:%q Password:%s}",
		redact(c.Token), c.ClientID, c.Username, redact(c.Password))
}

// GoString redacts the secrets under %#v too.
func (c Credentials) GoString() string { return "registry.Credentials" + c.String() }

func redact(s string) string {
	if s == "" {
		return `""`
	}
	return "<redacted>"
}

// Limits.
const (
	// MaxNameLen is the longest device name, type or attribute key, in bytes.
	MaxNameLen = 255
	// maxMQTTString is the longest MQTT UTF-8 string (client id, user name,
	// password).
	maxMQTTString = 65535
)

// validateDevice checks d's own fields (not its credentials).
func validateDevice(d *Device, p *problems) {
	checkName(p, "name", d.Name, true)
	checkName(p, "type", d.Type, false)
	checkName(p, "parent", d.Parent, false)
	if d.Parent != "" && d.Parent == d.Name {
		p.add("parent", "a device cannot be its own parent")
	}
	checkName(p, "source", d.Source, false)
}

// checkName applies the rules for names, types and attribute keys:
// non-empty when required, at most MaxNameLen bytes, valid UTF-8 and no
// control characters (which also keeps "\x00" free as a key separator).
func checkName(p *problems, field, s string, required bool) {
	if problem := nameProblem(s, required); problem != "" {
		p.add(field, "%s", problem)
	}
}

// nameProblem is what checkName reports about s, or "".
func nameProblem(s string, required bool) string {
	switch {
	case s == "":
		if required {
			return "is empty"
		}
	case len(s) > MaxNameLen:
		return fmt.Sprintf("is %d bytes, more than %d", len(s), MaxNameLen)
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return "contains a control character"
	}
	return ""
}

// checkMQTTString applies MQTT's rules for UTF-8 strings in CONNECT.
func checkMQTTString(p *problems, field, s string) {
	switch {
	case len(s) > maxMQTTString:
		p.add(field, "is %d bytes, more than %d", len(s), maxMQTTString)
	case !utf8.ValidString(s):
		p.add(field, "is not valid UTF-8")
	case strings.IndexByte(s, 0) >= 0:
		p.add(field, "contains U+0000")
	}
}

// credentialKind validates c against the declared kind and returns the
// effective kind: declared, or inferred from c when declared is empty.
func credentialKind(declared CredentialKind, c Credentials, p *problems) CredentialKind {
	basic := c.ClientID != "" || c.Username != "" || c.Password != ""
	kind := declared
	switch declared {
	case CredentialNone:
		switch {
		case c.Token != "" && !basic:
			kind = CredentialAccessToken
		case basic && c.Token == "":
			kind = CredentialMQTTBasic
		}
	case CredentialAccessToken, CredentialMQTTBasic:
	default:
		p.add("credential", "%q is not access_token, mqtt_basic or empty", declared)
		return declared
	}
	if c.Token != "" && basic {
		p.add("credentials", "give either a token or MQTT basic credentials, not both")
		return kind
	}
	switch kind {
	case CredentialAccessToken:
		if basic {
			p.add("credentials", "access_token takes a token, not MQTT basic credentials")
		} else if c.Token == "" {
			p.add("credentials.token", "is required for access_token")
		}
		checkMQTTString(p, "credentials.token", c.Token)
	case CredentialMQTTBasic:
		if c.Token != "" {
			p.add("credentials.token", "is not used by mqtt_basic")
		}
		if c.ClientID == "" && c.Username == "" {
			p.add("credentials", "mqtt_basic needs a client id and/or a user name")
		}
		if c.ClientID != "" && c.Username == "" && c.Password != "" {
			p.add("credentials.password", "password cannot be specified along with client id")
		}
		checkMQTTString(p, "credentials.client_id", c.ClientID)
		checkMQTTString(p, "credentials.username", c.Username)
		if len(c.Password) > maxMQTTString {
			p.add("credentials.password", "is %d bytes, more than %d", len(c.Password), maxMQTTString)
		}
	}
	return kind
}

// record is a device as stored under reg/d/<name>: the Device plus the
// hashes of its secrets.
type record struct {
	Name       string         `json:"name"`
	Type       string         `json:"type,omitempty"`
	Gateway    bool           `json:"gateway,omitempty"`
	Credential CredentialKind `json:"credential,omitempty"`
	ClientID   string         `json:"client_id,omitempty"`
	Username   string         `json:"username,omitempty"`
	Parent     string         `json:"parent,omitempty"`
	Source     string         `json:"source,omitempty"`
	CreatedAt  time.Time      `json:"created_at"`
	// TokenHash is SHA-256(token), for access_token.
	TokenHash []byte `json:"token_sha256,omitempty"`
	// Salt and PasswordHash = SHA-256(salt || password), for mqtt_basic
	// with a password; both empty when any password is accepted.
	Salt         []byte `json:"salt,omitempty"`
	PasswordHash []byte `json:"password_sha256,omitempty"`
}

func (e *entry) record() record {
	d := e.dev
	r := record{
		Name: d.Name, Type: d.Type, Gateway: d.Gateway, Credential: d.Credential,
		ClientID: d.ClientID, Username: d.Username, Parent: d.Parent, Source: d.Source,
		CreatedAt: d.CreatedAt, Salt: e.salt, PasswordHash: e.pwHash,
	}
	if d.Credential == CredentialAccessToken {
		r.TokenHash = e.tokenHash[:]
	}
	return r
}

func (e *entry) marshal() []byte {
	b, err := json.Marshal(e.record())
	if err != nil {
		panic("registry: marshal record: " + err.Error()) // plain strings, bytes and a time
	}
	return b
}

// unmarshalEntry decodes a stored record and checks that it is usable.
func unmarshalEntry(b []byte) (*entry, error) {
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	e := &entry{
		dev: Device{
			Name: r.Name, Type: r.Type, Gateway: r.Gateway, Credential: r.Credential,
			ClientID: r.ClientID, Username: r.Username, Parent: r.Parent, Source: r.Source,
			CreatedAt: r.CreatedAt,
		},
		salt:   r.Salt,
		pwHash: r.PasswordHash,
	}
	switch r.Credential {
	case CredentialNone:
	case CredentialAccessToken:
		if len(r.TokenHash) != len(e.tokenHash) {
			return nil, fmt.Errorf("token hash of %d bytes", len(r.TokenHash))
		}
		copy(e.tokenHash[:], r.TokenHash)
	case CredentialMQTTBasic:
		if r.ClientID == "" && r.Username == "" {
			return nil, fmt.Errorf("mqtt_basic without client id or user name")
		}
		if (len(r.Salt) == 0) != (len(r.PasswordHash) == 0) || (len(r.PasswordHash) != 0 && len(r.PasswordHash) != hashLen) {
			return nil, fmt.Errorf("malformed password hash")
		}
	default:
		return nil, fmt.Errorf("unknown credential kind %q", r.Credential)
	}
	return e, nil
}
