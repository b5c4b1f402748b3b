package configs

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
)

// FieldError is one invalid setting. Every package that validates
// settings reports each problem as one, under the key relative to what it
// validated ("flush"); each enclosing layer prefixes its own key (Prefix),
// so the daemon names "log.topics.telemetry.flush". Kind is the owning
// package's sentinel (its ErrInvalidConfig), so errors.Is still tells
// whose it is.
//
// A problem that names another setting ("is required with
// tls.key_file") passes that name as a Key argument; Prefix qualifies it
// with the same prefix as the problem's own key, so the daemon prints
// "bridges.kafka.tls.cert_file: is required with
// bridges.kafka.tls.key_file" while the package says "tls.key_file".
type FieldError struct {
	Key     string
	Problem string // the text, for problems that name no other key
	Kind    error  // nil: none

	format string // with args: Problem's format and arguments, Keys among them
	args   []any
}

// Key is the name of another setting inside a problem's text, relative
// to the same section as the problem's own key.
type Key string

// Text is the problem without the key it is about.
func (e *FieldError) Text() string {
	if e.format == "" {
		return e.Problem
	}
	return fmt.Sprintf(e.format, e.args...)
}

func (e *FieldError) Error() string {
	if e.Kind != nil {
		return fmt.Sprintf("%v: %s: %s", e.Kind, e.Key, e.Text())
	}
	return e.Key + ": " + e.Text()
}

func (e *FieldError) Unwrap() error { return e.Kind }

// Problems collects FieldErrors: a Validate method adds one per problem
// and returns Err, so every problem is reported at once.
type Problems struct {
	Kind error // the Kind of the FieldErrors Add makes
	errs []error
}

// Add records a problem with key. Arguments of type Key name other
// settings of the same section.
func (p *Problems) Add(key, format string, args ...any) {
	fe := &FieldError{Key: key, Kind: p.Kind}
	if slices.ContainsFunc(args, func(a any) bool { _, ok := a.(Key); return ok }) {
		fe.format, fe.args = format, args
	} else {
		fe.Problem = fmt.Sprintf(format, args...)
	}
	p.errs = append(p.errs, fe)
}

// Nest records the problems of err (a nested Validate's, or any error)
// under prefix.
func (p *Problems) Nest(prefix string, err error) {
	if err := Prefix(prefix, err); err != nil {
		p.errs = append(p.errs, err)
	}
}

// Err is every problem recorded, joined, or nil.
func (p *Problems) Err() error { return errors.Join(p.errs...) }

// Prefix returns err with prefix in front of the key of every FieldError
// in it (joined errors included). An error that is no FieldError becomes
// one with key prefix.
func Prefix(prefix string, err error) error {
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range flatten(err) {
		var fe *FieldError
		if errors.As(e, &fe) {
			q := *fe
			q.Key = qualify(prefix, fe.Key)
			if fe.args != nil {
				q.args = slices.Clone(fe.args)
				for i, a := range q.args {
					if k, ok := a.(Key); ok {
						q.args[i] = Key(qualify(prefix, string(k)))
					}
				}
			}
			out = append(out, &q)
			continue
		}
		out = append(out, &FieldError{Key: prefix, Problem: e.Error()})
	}
	return errors.Join(out...)
}

// qualify puts prefix in front of key: "a" and "b" make "a.b", "a" and
// "[0]" make "a[0]".
func qualify(prefix, key string) string {
	switch {
	case prefix == "":
		return key
	case key == "":
		return prefix
	case strings.HasPrefix(key, "["):
		return prefix + key
	default:
		return prefix + "." + key
	}
}

// Lines lists err's problems as "key: problem", one per FieldError.
func Lines(err error) []string {
	var out []string
	for _, e := range flatten(err) {
		var fe *FieldError
		if errors.As(e, &fe) {
			out = append(out, fe.Key+": "+fe.Text())
			continue
		}
		out = append(out, e.Error())
	}
	return out
}

// flatten returns the leaves of a tree of joined errors.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// Size is a number of bytes in a configuration: a plain integer or one
// with a KiB, MiB or GiB suffix ("48MiB"). It decodes from text (YAML,
// FERRY_* variables) and prints the same way.
type Size int64

// UnmarshalText reads a size.
func (s *Size) UnmarshalText(b []byte) error {
	n, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = Size(n)
	return nil
}

// MarshalText writes the size in the largest unit that divides it.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s Size) String() string {
	n := int64(s)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.m && n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// ParseSize reads a byte count: a plain integer or one with a KiB, MiB,
// GiB or TiB suffix, or KB, MB, GB or TB (powers of 1000, as storage
// makers rate endurance). "0" or "" is zero.
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size (bytes, or a number with KiB, MiB, GiB, TiB, KB, MB, GB or TB)", s)
	}
	return n * mult, nil
}

// CheckAddr records a problem when addr is not host:port (or, with
// required, is empty).
func (p *Problems) CheckAddr(key, addr string, required bool) {
	if addr == "" {
		if required {
			p.Add(key, "must not be empty")
		}
		return
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		p.Add(key, "%q is not host:port (%v)", addr, err)
	}
}
