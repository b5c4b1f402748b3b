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
// Lock order: wmu, then mu, then the writer's queue lock. None is held
// across state I/O: writers validate and apply their change in memory
// under wmu and queue its store transaction on the writer (see Write).
type Registry struct {
	st  *state.Store
	now func() time.Time

	// wmu serializes writers. A writer validates against the index while
	// holding wmu alone (only wmu holders change the index), publishes its
	// change under mu and queues the store write, all before releasing
	// wmu, so changes reach the store in the order they were made and
	// Authenticate is never blocked by a disk write.
	wmu sync.Mutex

	mu struct {
		sync.RWMutex
		devices map[string]*entry // by name
		creds   map[credID]*entry // credential index
	}

	w writer // ordered, coalescing store writes
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
// problems are reported at once (*configs.FieldError, wrapping ErrInvalid);
// credentials another device uses give ErrCredentialsTaken. Put returns
// once the change is durable.
func (r *Registry) Put(d Device, c Credentials) error {
	e, err := prepare(d, c)
	if err != nil {
		return err
	}
	r.wmu.Lock()
	w, err := r.putLocked(e)
	r.wmu.Unlock()
	if err != nil {
		return err
	}
	return w.Wait()
}

// Create is Put that refuses to replace: ErrExists if the device exists.
func (r *Registry) Create(d Device, c Credentials) error {
	e, err := prepare(d, c)
	if err != nil {
		return err
	}
	r.wmu.Lock()
	if r.mu.devices[d.Name] != nil {
		r.wmu.Unlock()
		return fmt.Errorf("%w: %q", ErrExists, d.Name)
	}
	w, err := r.putLocked(e)
	r.wmu.Unlock()
	if err != nil {
		return err
	}
	return w.Wait()
}

// prepare validates d and c and hashes c into a new entry.
func prepare(d Device, c Credentials) (*entry, error) {
	p := newProblems()
	validateDevice(&d, p)
	kind := credentialKind(d.Credential, c, p)
	if err := p.err(); err != nil {
		return nil, err
	}
	return newEntry(d, kind, c)
}

// Ensure creates d without credentials if no device of that name exists,
// as for a device a gateway announces, and returns it with true once it is
// durable; an existing device is returned unchanged with false.
func (r *Registry) Ensure(d Device) (Device, bool, error) {
	dev, created, w, err := r.EnsureAsync(d)
	if err == nil && w != nil {
		err = w.Wait()
	}
	if err != nil {
		return Device{}, false, err
	}
	return dev, created, nil
}

// EnsureAsync is Ensure that does not wait for the store: a created device
// is visible (Get, Ensure, Create) at once, and the returned Write
// completes when it is durable. If that write fails the device is removed
// again. An existing device comes back with a nil Write, or, while it is
// still being written, with that pending Write.
func (r *Registry) EnsureAsync(d Device) (Device, bool, *Write, error) {
	r.mu.RLock()
	cur := r.mu.devices[d.Name]
	r.mu.RUnlock()
	if cur != nil {
		return cur.dev, false, cur.write.pending(), nil
	}
	p := newProblems()
	validateDevice(&d, p)
	if d.Credential != CredentialNone || d.ClientID != "" || d.Username != "" {
		p.add("credential", "Ensure creates devices without credentials; use Put")
	}
	if err := p.err(); err != nil {
		return Device{}, false, nil, err
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if cur := r.mu.devices[d.Name]; cur != nil {
		return cur.dev, false, cur.write.pending(), nil
	}
	e := &entry{dev: d}
	w, err := r.putLocked(e)
	if err != nil {
		return Device{}, false, nil, err
	}
	return e.dev, true, w, nil
}

// putLocked makes e the device of its name, replacing the one there, in
// memory at once and in the store (one transaction with its credential
// index entries) through the returned Write. Caller holds wmu.
func (r *Registry) putLocked(e *entry) (*Write, error) {
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
				return nil, fmt.Errorf("%w: %s", ErrCredentialsTaken, owner.describe(id))
			}
			return nil, fmt.Errorf("%w: %s (device %q)", ErrCredentialsTaken, owner.describe(id), owner.dev.Name)
		}
	}
	var oldIDs []credID
	if old != nil {
		oldIDs = old.ids()
	}
	w := &Write{wrap: func(err error) error { return fmt.Errorf("registry: put %q: %w", name, err) }}
	e.write = w // before e is published: entries do not change once in the index
	for _, id := range oldIDs {
		if !slices.Contains(newIDs, id) {
			w.delete(credKey(id))
		}
	}
	for _, id := range newIDs {
		w.set(credKey(id), []byte(name))
	}
	w.set(deviceKey(name), e.marshal())

	r.mu.Lock()
	for _, id := range oldIDs {
		delete(r.mu.creds, id)
	}
	for _, id := range newIDs {
		r.mu.creds[id] = e
	}
	r.mu.devices[name] = e
	r.mu.Unlock()
	w.undo = func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, id := range newIDs {
			delete(r.mu.creds, id)
		}
		for _, id := range oldIDs {
			r.mu.creds[id] = old
		}
		if old != nil {
			r.mu.devices[name] = old
		} else {
			delete(r.mu.devices, name)
		}
	}
	return r.enqueue(w), nil
}

// Delete removes the device, its credentials and its attributes, in one
// transaction, and returns once that is durable.
func (r *Registry) Delete(name string) error {
	r.wmu.Lock()
	old := r.mu.devices[name]
	if old == nil {
		r.wmu.Unlock()
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	ids := old.ids()
	// Attribute writes are queued under wmu after checking that the
	// device exists, so after this point none can be queued for it, and
	// the prefix delete (committed after every earlier write) finds them all.
	w := &Write{
		prefixDelete: attrDevicePrefix(name),
		wrap:         func(err error) error { return fmt.Errorf("registry: delete %q: %w", name, err) },
	}
	for _, id := range ids {
		w.delete(credKey(id))
	}
	w.delete(deviceKey(name))
	r.mu.Lock()
	for _, id := range ids {
		delete(r.mu.creds, id)
	}
	delete(r.mu.devices, name)
	r.mu.Unlock()
	w.undo = func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, id := range ids {
			r.mu.creds[id] = old
		}
		r.mu.devices[name] = old
	}
	r.enqueue(w)
	r.wmu.Unlock()
	return w.Wait()
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
