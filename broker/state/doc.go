// Package state is Ferry's small durable state: the device registry,
// attributes, consumer-group offsets and bridge checkpoints. It is a thin
// wrapper over an embedded badger database. Messages never live here; they
// go to package commitlog, which is built for sequential appends.
//
// # Keys
//
// The store is one flat, ordered key space. Each user package owns a
// prefix and documents the layout below it, so that a Scan of one prefix
// never sees another package's keys:
//
//	reg/   package registry (devices, credential index, attributes)
//	off/   consumer-group offsets
//	ckpt/  bridge checkpoints
//	cmd/   package commands (command dispatch checkpoints)
//
// # Durability and atomicity
//
// Every write is one badger transaction, committed with SyncWrites on, so
// an acknowledged Set, Delete or Update survives a power cut, not only a
// process crash (badger otherwise relies on the kernel flushing its mmap).
// Update runs fn in one read-write transaction: either all of its writes
// are committed or none. The Store serializes its writers (Set, Delete and
// Update commit one at a time), so an Update sees every earlier commit, is
// serializable without badger's conflict detection, and runs fn exactly
// once. The state is written rarely (registry changes, offset commits,
// checkpoints), so one msync at a time is cheap enough.
//
// # Memory and 32-bit ARM
//
// The badger options (see badgerOptions in options.go) follow the
// low-memory and 32-bit guidance: an 8 MiB memtable, no block cache, no
// compression, 16 MiB value-log files, and an SST size no smaller than half
// the memtable, which avoids the silent table corruption badger suffers on
// GOARCH=arm when a flushed table outgrows twice the table size. A Store
// costs roughly 20 MB of Go heap. Keys are limited to 4 KiB and values to
// 512 KiB (ErrTooLarge), and one transaction to about 15% of the memtable
// (~1.2 MiB of keys and small values); larger ones fail with an error
// wrapping badger.ErrTxnTooBig.
//
// # Goroutines
//
// Besides badger's own goroutines, which its Close stops, the Store owns
// one value-log GC loop (on disk only): started by Open, stopped and waited
// for by Close. Values below 1 KiB are kept in the LSM tree, so the value
// log only holds larger values and its GC is usually idle.
package state
