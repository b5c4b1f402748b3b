package registry

import (
	"errors"
	"fmt"
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

// FieldError is one invalid field; it wraps ErrInvalid. Put, Ensure and
// SetAttributes join one per problem, so an API can report them all.
type FieldError struct {
	Field   string // e.g. "name", "credentials.password", "attributes[2].value"
	Problem string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%v: %s: %s", ErrInvalid, e.Field, e.Problem)
}

func (e *FieldError) Unwrap() error { return ErrInvalid }

// problems collects FieldErrors.
type problems []error

func (p *problems) add(field, format string, args ...any) {
	*p = append(*p, &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)})
}

func (p problems) err() error { return errors.Join(p...) }
