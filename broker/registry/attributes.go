package registry

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/ferry-iot/ferry/broker/state"
)

// Scope is an attribute scope, as in ThingsBoard. The zero value is not a
// scope.
type Scope uint8

// Scopes.
const (
	// ScopeClient attributes are reported by the device.
	ScopeClient Scope = iota + 1
	// ScopeShared attributes are set by the server and pushed to the device.
	ScopeShared
)

func (s Scope) String() string {
	switch s {
	case ScopeClient:
		return "client"
	case ScopeShared:
		return "shared"
	}
	return fmt.Sprintf("Scope(%d)", uint8(s))
}

// keyByte is the scope's byte in attribute keys.
func (s Scope) keyByte() (byte, bool) {
	switch s {
	case ScopeClient:
		return 'c', true
	case ScopeShared:
		return 's', true
	}
	return 0, false
}

// Attribute is one attribute of a device.
type Attribute struct {
	Key string
	// Value is one JSON value (stored compacted).
	Value json.RawMessage
	// UpdatedMs is the update time in Unix milliseconds; SetAttributes
	// fills zero with the current time.
	UpdatedMs int64
}

// maxAttrValue keeps a stored attribute (timestamp + value) within the
// state store's value limit.
const maxAttrValue = state.MaxValueSize - 8

// attrPrefix is the prefix of a device's attributes in one scope.
func attrPrefix(device string, scope Scope) ([]byte, error) {
	b, ok := scope.keyByte()
	if !ok {
		return nil, &FieldError{Field: "scope", Problem: fmt.Sprintf("%d is not client or shared", scope)}
	}
	return append(attrDevicePrefix(device), b), nil
}

// SetAttributes creates or updates attributes of the device in one
// transaction. All validation problems are reported at once; an unknown
// device gives ErrNotFound. When attrs repeats a key, the last one wins.
func (r *Registry) SetAttributes(device string, scope Scope, attrs []Attribute) error {
	var p problems
	prefix, err := attrPrefix(device, scope)
	if err != nil {
		p = append(p, err)
	}
	now := r.now().UnixMilli()
	keys := make([][]byte, len(attrs))
	vals := make([][]byte, len(attrs))
	for i, a := range attrs {
		field := fmt.Sprintf("attributes[%d]", i)
		checkName(&p, field+".key", a.Key, true)
		var buf bytes.Buffer
		switch {
		case !json.Valid(a.Value):
			p.add(field+".value", "is not one JSON value")
		case json.Compact(&buf, a.Value) != nil:
			p.add(field+".value", "is not one JSON value")
		case buf.Len() > maxAttrValue:
			p.add(field+".value", "is %d bytes, more than %d", buf.Len(), maxAttrValue)
		}
		if a.UpdatedMs < 0 {
			p.add(field+".updated_ms", "is negative")
		}
		ts := a.UpdatedMs
		if ts == 0 {
			ts = now
		}
		keys[i] = append(slices.Clip(prefix), a.Key...)
		vals[i] = append(binary.BigEndian.AppendUint64(nil, uint64(ts)), buf.Bytes()...)
	}
	if err := p.err(); err != nil {
		return err
	}

	r.wmu.Lock()
	defer r.wmu.Unlock()
	if r.mu.devices[device] == nil {
		return fmt.Errorf("%w: %q", ErrNotFound, device)
	}
	err = r.st.Update(func(tx *state.Txn) error {
		for i := range keys {
			if err := tx.Set(keys[i], vals[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("registry: set attributes of %q: %w", device, err)
	}
	return nil
}

// DeleteAttributes deletes the keys in one transaction; unknown keys are
// ignored, an unknown device gives ErrNotFound.
func (r *Registry) DeleteAttributes(device string, scope Scope, keys []string) error {
	prefix, err := attrPrefix(device, scope)
	if err != nil {
		return err
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if r.mu.devices[device] == nil {
		return fmt.Errorf("%w: %q", ErrNotFound, device)
	}
	err = r.st.Update(func(tx *state.Txn) error {
		for _, k := range keys {
			if k == "" || len(k) > MaxNameLen {
				continue // could not have been set
			}
			if err := tx.Delete(append(slices.Clip(prefix), k...)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("registry: delete attributes of %q: %w", device, err)
	}
	return nil
}

// Attributes returns the requested keys (all when keys is nil), sorted by
// key; unknown keys are skipped. An unknown device gives ErrNotFound.
func (r *Registry) Attributes(device string, scope Scope, keys []string) ([]Attribute, error) {
	prefix, err := attrPrefix(device, scope)
	if err != nil {
		return nil, err
	}
	if _, ok := r.Get(device); !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, device)
	}
	var out []Attribute
	if keys == nil {
		err := r.st.Scan(prefix, func(k, v []byte) error {
			a, err := decodeAttribute(string(k[len(prefix):]), v)
			if err != nil {
				return err
			}
			out = append(out, a)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("registry: attributes of %q: %w", device, err)
		}
		return out, nil
	}
	keys = slices.Clone(keys)
	slices.Sort(keys)
	for _, k := range slices.Compact(keys) {
		if k == "" || len(k) > MaxNameLen {
			continue
		}
		v, err := r.st.Get(append(slices.Clip(prefix), k...))
		if errors.Is(err, state.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("registry: attributes of %q: %w", device, err)
		}
		a, err := decodeAttribute(k, v)
		if err != nil {
			return nil, fmt.Errorf("registry: attributes of %q: %w", device, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// decodeAttribute decodes a stored attribute: 8-byte big-endian UpdatedMs,
// then the compact JSON value.
func decodeAttribute(key string, v []byte) (Attribute, error) {
	if len(v) < 8 {
		return Attribute{}, fmt.Errorf("attribute %q: stored value of %d bytes", key, len(v))
	}
	return Attribute{
		Key:       key,
		Value:     json.RawMessage(v[8:]),
		UpdatedMs: int64(binary.BigEndian.Uint64(v)),
	}, nil
}
