package registry

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/ferry-iot/ferry/configs"

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
		return nil, &configs.FieldError{Kind: ErrInvalid, Key: "scope", Problem: fmt.Sprintf("%d is not client or shared", scope)}
	}
	return append(attrDevicePrefix(device), b), nil
}

// SetAttributes creates or updates attributes of the device in one
// transaction and returns once they are durable. All validation problems
// are reported at once; an unknown device gives ErrNotFound. When attrs
// repeats a key, the last one wins.
func (r *Registry) SetAttributes(device string, scope Scope, attrs []Attribute) error {
	w, err := r.SetAttributesAsync(device, scope, attrs)
	if err != nil {
		return err
	}
	return w.Wait()
}

// SetAttributesAsync is SetAttributes that does not wait: it validates,
// queues the write and returns it; the Write completes when the
// attributes are durable. Writes queued while a commit is in progress
// share the next transaction, so many devices reporting attributes at
// once cost few syncs. Until the Write completes, Attributes may still
// return the previous values.
func (r *Registry) SetAttributesAsync(device string, scope Scope, attrs []Attribute) (*Write, error) {
	pa, err := r.PrepareAttributes(attrs)
	if err != nil {
		return nil, err
	}
	return r.SetPreparedAsync(device, scope, pa)
}

// PreparedAttributes are attributes validated and encoded for storage
// once (PrepareAttributes), so a caller that must tell bad input from a
// storage failure before it stores anything — a gateway publish naming
// several devices — does not validate them twice.
type PreparedAttributes struct {
	names []string
	vals  [][]byte // UpdatedMs (8 bytes, big-endian), then the compact JSON
}

// PrepareAttributes reports every problem in attrs (keys, values,
// timestamps) and encodes them: a zero UpdatedMs becomes now, the value
// its compact JSON, validated in the same pass.
func (r *Registry) PrepareAttributes(attrs []Attribute) (PreparedAttributes, error) {
	p := newProblems()
	nowMs := r.now().UnixMilli()
	pa := PreparedAttributes{names: make([]string, len(attrs)), vals: make([][]byte, len(attrs))}
	for i, a := range attrs {
		if problem := nameProblem(a.Key, true); problem != "" {
			p.add(fmt.Sprintf("attributes[%d].key", i), "%s", problem)
		}
		if a.UpdatedMs < 0 {
			p.add(fmt.Sprintf("attributes[%d].updated_ms", i), "is negative")
		}
		ts := a.UpdatedMs
		if ts == 0 {
			ts = nowMs
		}
		buf := bytes.NewBuffer(binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(a.Value)), uint64(ts)))
		switch err := json.Compact(buf, a.Value); {
		case err != nil: // Compact validates: one JSON value, nothing after it
			p.add(fmt.Sprintf("attributes[%d].value", i), "is not one JSON value")
		case buf.Len()-8 > maxAttrValue:
			p.add(fmt.Sprintf("attributes[%d].value", i), "is %d bytes, more than %d", buf.Len()-8, maxAttrValue)
		}
		pa.names[i], pa.vals[i] = a.Key, buf.Bytes()
	}
	if err := p.err(); err != nil {
		return PreparedAttributes{}, err
	}
	return pa, nil
}

// keys are the attributes' store keys under prefix.
func (pa PreparedAttributes) keys(prefix []byte) [][]byte {
	keys := make([][]byte, len(pa.names))
	for i, name := range pa.names {
		keys[i] = append(slices.Clip(prefix), name...)
	}
	return keys
}

// Len is the number of attributes.
func (pa PreparedAttributes) Len() int { return len(pa.names) }

// SetPreparedAsync is SetAttributesAsync for attributes already prepared.
func (r *Registry) SetPreparedAsync(device string, scope Scope, pa PreparedAttributes) (*Write, error) {
	prefix, err := attrPrefix(device, scope)
	if err != nil {
		return nil, err
	}
	w := &Write{wrap: func(err error) error { return fmt.Errorf("registry: set attributes of %q: %w", device, err) }}
	for i, k := range pa.keys(prefix) {
		w.set(k, pa.vals[i])
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if r.mu.devices[device] == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, device)
	}
	return r.enqueue(w), nil
}

// ValidateName reports whether s is acceptable as a device name (or type,
// or attribute key): non-empty, at most MaxNameLen bytes, valid UTF-8, no
// control characters. field names it in the error, a *configs.FieldError.
func ValidateName(field, s string) error {
	p := newProblems()
	checkName(p, field, s, true)
	return p.err()
}

// DeleteAttributes deletes the keys in one transaction and returns once
// that is durable; unknown keys are ignored, an unknown device gives
// ErrNotFound.
func (r *Registry) DeleteAttributes(device string, scope Scope, keys []string) error {
	prefix, err := attrPrefix(device, scope)
	if err != nil {
		return err
	}
	w := &Write{wrap: func(err error) error { return fmt.Errorf("registry: delete attributes of %q: %w", device, err) }}
	for _, k := range keys {
		if k == "" || len(k) > MaxNameLen {
			continue // could not have been set
		}
		w.delete(append(slices.Clip(prefix), k...))
	}
	r.wmu.Lock()
	if r.mu.devices[device] == nil {
		r.wmu.Unlock()
		return fmt.Errorf("%w: %q", ErrNotFound, device)
	}
	r.enqueue(w)
	r.wmu.Unlock()
	return w.Wait()
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
