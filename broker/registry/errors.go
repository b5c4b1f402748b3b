package registry

import (
	"errors"

	"github.com/ferry-iot/ferry/configs"
)

// Sentinel errors. Callers test with errors.Is; validation problems are
// *FieldError values that wrap ErrInvalid.
var (
	// ErrNotFound means the device does not exist.
	ErrNotFound = errors.New("registry: device not found")
	// ErrExists means a device of that name already exists. The registry's
	// own calls create or replace, so it is for callers (such as an admin
	// API's create) that refuse to replace.
	ErrExists = errors.New("registry: device already exists")
	// ErrInvalid wraps every validation problem.
	ErrInvalid = errors.New("registry: invalid")
	// ErrCredentialsTaken means another device already uses the credentials.
	ErrCredentialsTaken = errors.New("registry: credentials already used by another device")
)

// Put, Ensure and SetAttributes report every invalid field at once, each a
// *configs.FieldError (key e.g. "name", "credentials.password",
// "attributes[2].value") wrapping ErrInvalid, so an API can report them
// all.

// problems collects them.
type problems struct{ configs.Problems }

func newProblems() *problems { return &problems{configs.Problems{Kind: ErrInvalid}} }

func (p *problems) add(field, format string, args ...any) { p.Add(field, format, args...) }

func (p *problems) err() error { return p.Err() }
