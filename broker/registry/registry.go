package registry

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ferry-iot/ferry/broker/state"
)

// Key prefixes in the state store (layout in the package doc).
const (
	prefixDevice = "reg/d/"
	prefixCred   = "reg/c/"
	prefixAttr   = "reg/a/"
)

func deviceKey(name string) []byte { return []byte(prefixDevice + name) }

func credKey(id credID) []byte { return append([]byte(prefixCred), id[:]...) }

// attrDevicePrefix is the prefix of all attributes of a device; names have
// no control characters, so "\x00" ends the name unambiguously.
func attrDevicePrefix(name string) []byte { return []byte(prefixAttr + name + "\x00") }

// Registry is the device registry. It is safe for concurrent use.
//
// Lock order: wmu, then mu. Neither is held by readers across state I/O;
// writers hold wmu (never mu) across it.
type Registry struct {
	st  *state.Store
	now func() time.Time

	// wmu serializes writers. A writer validates against the index while
	// holding wmu alone (only wmu holders change the index), writes the
	// store, and then publishes the change under mu, so Authenticate is
	// never blocked by a disk write.
	wmu sync.Mutex

	mu struct {
		sync.RWMutex
		devices map[string]*entry // by name
		creds   map[credID]*entry // credential index
	}
}

// Open loads the devices and the credential index from st into memory.
// Attributes stay in st. If the stored credential index disagrees with the
// device records (which one transaction per change should make
// impossible), the records win and the index is rewritten.
func Open(st *state.Store) (*Registry, error) {
	r := &Registry{st: st, now: time.Now}
	devices := make(map[string]*entry)
	err := st.Scan([]byte(prefixDevice), func(k, v []byte) error {
		name := string(k[len(prefixDevice):])
		e, err := unmarshalEntry(v)
		if err != nil {
			return fmt.Errorf("device %q: %w", name, err)
		}
		if e.dev.Name != name {
			return fmt.Errorf("record under %q names %q", name, e.dev.Name)
		}
		devices[name] = e
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("registry: open: %w", err)
	}
	creds := make(map[credID]*entry)
	for _, e := range devices {
		for _, id := range e.ids() {
			if other := creds[id]; other != nil {
				return nil, fmt.Errorf("registry: open: devices %q and %q share credentials", other.dev.Name, e.dev.Name)
			}
			creds[id] = e
		}
	}
	if err := repairIndex(st, creds); err != nil {
		return nil, err
	}
	r.mu.devices, r.mu.creds = devices, creds
	return r, nil
}

// repairIndex makes the stored credential index equal to creds.
func repairIndex(st *state.Store, creds map[credID]*entry) error {
	stored := make(map[credID]string)
	var drop [][]byte // stale or malformed keys
	err := st.Scan([]byte(prefixCred), func(k, v []byte) error {
		var id credID
		if len(k) != len(prefixCred)+len(id) {
			drop = append(drop, k)
			return nil
		}
		copy(id[:], k[len(prefixCred):])
		if creds[id] == nil {
			drop = append(drop, k)
		}
		stored[id] = string(v)
		return nil
	})
	if err != nil {
		return fmt.Errorf("registry: open: %w", err)
	}
	var set []credID
	for id, e := range creds {
		if name, ok := stored[id]; !ok || name != e.dev.Name {
			set = append(set, id)
		}
	}
	if len(set) == 0 && len(drop) == 0 {
		return nil
	}
	err = st.Update(func(tx *state.Txn) error {
		for _, id := range set {
			if err := tx.Set(credKey(id), []byte(creds[id].dev.Name)); err != nil {
				return err
			}
		}
		for _, k := range drop {
			if err := tx.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("registry: open: repair credential index: %w", err)
	}
	return nil
}

// Put creates or replaces the device d.Name with credentials c. The kind
// is d.Credential or, when that is empty, inferred from c; empty c with an
// empty d.Credential is a device without credentials of its own.
// d.ClientID and d.Username are taken from c. A zero d.CreatedAt keeps the
// replaced device's, or is now. Attributes are kept. All validation
// problems are reported at once (*FieldError, wrapping ErrInvalid);
// credentials another device uses give ErrCredentialsTaken.
func (r *Registry) Put(d Device, c Credentials) error {
	e, err := prepare(d, c)
	if err != nil {
		return err
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	return r.putLocked(e)
}

// Create is Put that refuses to replace: ErrExists if the device exists.
func (r *Registry) Create(d Device, c Credentials) error {
	e, err := prepare(d, c)
	if err != nil {
		return err
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if r.mu.devices[d.Name] != nil {
		return fmt.Errorf("%w: %q", ErrExists, d.Name)
	}
	return r.putLocked(e)
}

// prepare validates d and c and hashes c into a new entry.
func prepare(d Device, c Credentials) (*entry, error) {
	var p problems
	validateDevice(&d, &p)
	kind := credentialKind(d.Credential, c, &p)
	if err := p.err(); err != nil {
		return nil, err
	}
	return newEntry(d, kind, c)
}

// Ensure creates d without credentials if no device of that name exists,
// as for a device a gateway announces, and returns it with true; an
// existing device is returned unchanged with false.
func (r *Registry) Ensure(d Device) (Device, bool, error) {
	if cur, ok := r.Get(d.Name); ok {
		return cur, false, nil
	}
	var p problems
	validateDevice(&d, &p)
	if d.Credential != CredentialNone || d.ClientID != "" || d.Username != "" {
		p.add("credential", "Ensure creates devices without credentials; use Put")
	}
	if err := p.err(); err != nil {
		return Device{}, false, err
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if cur := r.mu.devices[d.Name]; cur != nil {
		return cur.dev, false, nil
	}
	e := &entry{dev: d}
	if err := r.putLocked(e); err != nil {
		return Device{}, false, err
	}
	return e.dev, true, nil
}

// putLocked stores e, replacing the device of the same name, in one
// transaction with its credential index entries. Caller holds wmu.
func (r *Registry) putLocked(e *entry) error {
	name := e.dev.Name
	old := r.mu.devices[name]
	switch {
	case !e.dev.CreatedAt.IsZero():
	case old != nil:
		e.dev.CreatedAt = old.dev.CreatedAt
	default:
		e.dev.CreatedAt = r.now()
	}
	e.dev.CreatedAt = e.dev.CreatedAt.UTC().Round(0) // as it round-trips through JSON

	newIDs := e.ids()
	for _, id := range newIDs {
		if owner := r.mu.creds[id]; owner != nil && owner.dev.Name != name {
			if id[0] == nsName {
				return fmt.Errorf("%w: %s", ErrCredentialsTaken, owner.describe(id))
			}
			return fmt.Errorf("%w: %s (device %q)", ErrCredentialsTaken, owner.describe(id), owner.dev.Name)
		}
	}
	var oldIDs []credID
	if old != nil {
		oldIDs = old.ids()
	}
	err := r.st.Update(func(tx *state.Txn) error {
		for _, id := range oldIDs {
			if !slices.Contains(newIDs, id) {
				if err := tx.Delete(credKey(id)); err != nil {
					return err
				}
			}
		}
		for _, id := range newIDs {
			if err := tx.Set(credKey(id), []byte(name)); err != nil {
				return err
			}
		}
		return tx.Set(deviceKey(name), e.marshal())
	})
	if err != nil {
		return fmt.Errorf("registry: put %q: %w", name, err)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range oldIDs {
		delete(r.mu.creds, id)
	}
	for _, id := range newIDs {
		r.mu.creds[id] = e
	}
	r.mu.devices[name] = e
	return nil
}

// Delete removes the device, its credentials and its attributes, in one
// transaction.
func (r *Registry) Delete(name string) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	old := r.mu.devices[name]
	if old == nil {
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	// Attributes change only under wmu, so the list stays exact.
	var attrKeys [][]byte
	err := r.st.Scan(attrDevicePrefix(name), func(k, _ []byte) error {
		attrKeys = append(attrKeys, k)
		return nil
	})
	if err != nil {
		return fmt.Errorf("registry: delete %q: %w", name, err)
	}
	ids := old.ids()
	err = r.st.Update(func(tx *state.Txn) error {
		for _, k := range attrKeys {
			if err := tx.Delete(k); err != nil {
				return err
			}
		}
		for _, id := range ids {
			if err := tx.Delete(credKey(id)); err != nil {
				return err
			}
		}
		return tx.Delete(deviceKey(name))
	})
	if err != nil {
		return fmt.Errorf("registry: delete %q: %w", name, err)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		delete(r.mu.creds, id)
	}
	delete(r.mu.devices, name)
	return nil
}

// Get returns the device of that name.
func (r *Registry) Get(name string) (Device, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if e := r.mu.devices[name]; e != nil {
		return e.dev, true
	}
	return Device{}, false
}

// List returns all devices, sorted by name.
func (r *Registry) List() []Device {
	r.mu.RLock()
	out := make([]Device, 0, len(r.mu.devices))
	for _, e := range r.mu.devices {
		out = append(out, e.dev)
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b Device) int { return strings.Compare(a.Name, b.Name) })
	return out
}
