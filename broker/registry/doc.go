// Package registry is Ferry's device registry: devices, their
// credentials (stored hashed) and their client and shared attributes,
// persisted in package state under the "reg/" prefix.
//
// # Keys
//
//	reg/d/<name>                          device record, JSON (Device plus secret hashes)
//	reg/c/<ns:1><sha256:32>               credential index entry -> device name
//	reg/a/<name> 0x00 <scope:1> <key>     attribute: UpdatedMs (8 bytes, big-endian), JSON value
//
// <scope> is 'c' (client) or 's' (shared). Names have no control
// characters, so the 0x00 after <name> ends it: the attributes of one
// device, or of one device and scope, are one prefix, in key order.
//
// The credential index mirrors ThingsBoard's credentialsId, hashed, in
// three namespaces <ns>:
//
//	'n'  SHA-256(token) for access tokens, SHA-256(user name) for
//	     user-name-only MQTT basic: ThingsBoard's "credentialsId = user
//	     name" lookup, so a token never equals another device's user name
//	'c'  SHA-256(client id) for MQTT basic by client id alone
//	'u'  SHA-256(uvarint len(client id) || client id || user name) for MQTT
//	     basic by client id and user name
//
// Every change (Put, Delete, SetAttributes, DeleteAttributes) is one
// state transaction, so a crash never leaves a device without its index
// entries or an index entry without its device; Delete removes the
// device's attributes in the same transaction. The device records are the
// source of truth: Open rebuilds the index from them and rewrites stored
// index entries that disagree.
//
// # Credentials
//
// Plaintext credentials never reach the store or a log (Credentials'
// String redacts them). Access tokens are stored as SHA-256(token), which
// is also their lookup key: tokens are high-entropy machine secrets, so an
// unsalted fast hash cannot be reversed by guessing, and hashing lets a
// CONNECT find its device with one map lookup. MQTT basic passwords are
// stored as SHA-256(salt || password) with a random 16-byte salt, so equal
// passwords look different and precomputed tables do not help. Hashes are
// compared in constant time.
//
// A slow password KDF (bcrypt, scrypt, Argon2 at a sensible cost) is
// deliberately not used: it costs about 100 ms of Raspberry Pi CPU per
// CONNECT, so the reconnect storm of a few hundred devices after a power
// cut or network outage would keep the CPU busy for tens of seconds while
// telemetry waits. Device passwords are machine-provisioned secrets; who
// needs protection against offline guessing of weak human passwords
// should use access tokens or long generated passwords.
//
// # Authentication
//
// Authenticate follows ThingsBoard's order for CONNECT without a client
// certificate (docs/thingsboard.md#authentication): user name empty → MQTT
// basic by client id alone; user name given → MQTT basic by client id and
// user name, password checked; not found → by user name: an access token
// (password and client id ignored) or user-name-only MQTT basic (password
// checked). A stored empty password accepts any password. The
// "provision" user name or client id and X.509 are the caller's business.
//
// # Concurrency
//
// Devices and the credential index live in memory under an RWMutex;
// Authenticate, Get and List take only its read lock. Writers are
// serialized by a second mutex (wmu): under it a writer validates against
// the index, applies its change in memory and queues the store
// transaction on the writer, then releases it and (for the synchronous
// calls) waits. No lock is held across store I/O, so a slow sync never
// blocks a CONNECT or another writer's validation. Lock order: wmu, then
// mu, then the writer's queue lock.
//
// # Writes
//
//	caller (under wmu)                     commit goroutine (while work is queued)
//	──────────────────                     ───────────────────────────────────────
//	validate, apply in memory
//	queue Write ─────────────────────────▶ take consecutive queued Writes (bounded)
//	return Write (…Async) or wait            one state transaction, one sync
//	                                         success: complete them
//	                                         failure: undo them and every later
//	                                                  queued Write, newest first,
//	                                                  and fail them all
//
// Writes reach the store in the order they were made, and writes queued
// while a commit is in progress share the next one: many devices
// reporting attributes at once (EnsureAsync, SetAttributesAsync from the
// MQTT read loops) cost a few syncs, not one each. A Write's success
// implies the success of every earlier one. The in-memory state runs ahead
// of the store by the queued writes: a device being created is visible
// (and its name taken) at once; if its write fails it disappears again.
// Attributes are read from the store, not cached, so they show a queued
// value once its Write has completed.
package registry
