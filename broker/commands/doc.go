// Package commands makes device control a Kafka-native workflow: records
// that backend services produce into the commands topic are delivered to
// devices as ThingsBoard server-side RPC, and each outcome is appended to
// the responses topic.
//
// # Records
//
// A command record has key = device name and value = a JSON object:
//
//	{"method":"setGpio","params":{"pin":7,"value":1},   required: method (non-empty string); params: any JSON
//	 "timeout":5000,                                     optional: ms to wait for the answer (default Config.Timeout)
//	 "expirationTime":1767225600000,                     optional: epoch ms; default record timestamp + Config.Expiry
//	 "oneway":false}                                     optional: do not wait for an answer
//
// Other fields (ThingsBoard's "persistent", "retries", "additionalInfo")
// are ignored. Every record gets exactly one response record (at least
// once, see Delivery), appended to the responses topic with key = the
// request's key, timestamp = the time of the response, and value:
//
//	{"device":"d1","method":"setGpio","request_topic":"commands","request_partition":0,"request_offset":17,
//	 "status":"ok","response":{...the device's answer...}}
//	{"device":"d1",...,"status":"timeout","error":"..."}        delivered, no answer within the timeout
//	{"device":"d1",...,"status":"expired","error":"..."}        device not reachable before the command expired
//	{"device":"d1",...,"status":"error","reason":"invalid","error":"commands: invalid command: ..."}
//	{"device":"d1",...,"status":"error","reason":"unknown_device","error":"..."}
//	{"device":"d1",...,"status":"error","reason":"failed","error":"..."}   any other Sender error
//
// A one-way command's ok response has no "response". A device answer that
// is not JSON is passed on as a JSON string. Headers: ferry.device,
// ferry.status, ferry.request.topic, ferry.request.partition and
// ferry.request.offset (decimal strings), then every header of the request
// copied unchanged (a correlation id comes back under its own name), except
// request headers that reuse those five keys.
//
// Records that are not commands — no key, key not UTF-8, value larger
// than Config.MaxCommandBytes, not a JSON object, no string "method", a
// bad optional field — are answered at once with reason "invalid" and
// never sent; so is a command whose expiry already passed when it is read
// ("expired"), which is how commands that expired while the gateway was
// down are answered. A command for a device the Sender does not know is
// answered "unknown_device" when its turn comes.
//
// # Data path
//
//	commands topic                    Dispatcher                                  responses topic
//	partition 0 ──▶ reader 0 ─┐  admit: take a slot (MaxInFlight),
//	partition 1 ──▶ reader 1 ─┼─▶ pending offset, parse ──▶ device queue ──▶ worker per device ──▶ Append ──▶ Future
//	      (long poll: Wait)   │       invalid / expired ──▶ reader's answers ─────────────────────▶ Append ──▶ Future
//	                          └── on durable response: slot back, offset finished, checkpoint kicked
//
// One reader goroutine per partition of the commands topic (partitions
// added later are picked up within 10 s) reads from the checkpoint and
// long-polls the partition at its end. Admitting a record takes one of
// MaxInFlight slots; with none free the reader stops reading until a
// command finishes, so memory stays at most MaxInFlight commands of at
// most MaxCommandBytes, plus one read buffer (64 KiB, or one larger
// batch) per partition. Valid commands go to their device's queue; a
// device with queued commands has exactly one worker goroutine, which
// delivers them one at a time in admission order (offset order within a
// partition) — the next only after the previous one's response is
// durable — and exits when the queue is empty. Different devices proceed
// concurrently, at most MaxInFlight of them. With the default partitioner
// all of a device's commands are in one partition; if a producer spreads
// one device over several partitions, their relative order is not kept.
//
// The slots are shared by all devices, so commands waiting for devices
// that stay unreachable hold slots until they expire; a backlog of more
// than MaxInFlight such commands stalls the rest for up to Expiry
// (ferry_commands_waiting_offline shows it).
//
// # Unreachable devices
//
// A Sender error wrapping ErrOffline keeps the command queued. The worker
// retries when DeviceOnline reports the device (wire it to
// (*mqtt.Server).OnRPCReady, which fires when a device subscribes to RPC
// requests or a subscribed gateway starts speaking for it), and otherwise
// on a doubling backoff from 1 s to 30 s, never later than the command's
// expiry; at expiry it is answered "expired". Expiry is checked before
// each attempt; once a command is delivered its timeout alone applies. A
// timeout is not retried (the device may have acted), nor is any other
// error.
//
// # Progress and delivery
//
// A command is finished when its response record is durable (its append
// Future completed). Each commands partition has a checkpoint in the state
// store:
//
//	key    cmd/<commands topic>/<partition>
//	value  {"v":1,"next":N,"pending":[o1,o2,...]}   ascending, all < N, at most MaxInFlight
//
// meaning: every offset below next that is not listed is finished. Commands
// finish out of order across devices, so the unfinished ones are listed
// rather than summarised by a low watermark. The checkpoint is stored (one
// transaction for all partitions that progressed, coalescing bursts) after
// commands finish, and on Close. Start re-reads the listed offsets first,
// then reads on from next: after a clean Close exactly the unfinished
// commands are delivered again. A crash, or a Close, between a device
// answering and its response being durable delivers that command again:
// delivery is at least once, and a consumer may see two responses for one
// request_offset. Close cancels RPCs in flight; they are not answered and
// are delivered again after the restart.
//
// A Start without a checkpoint begins at the partition's oldest offset:
// whatever the topic holds is answered, delivered or expired, never
// skipped.
//
// # Retention
//
// Each commands partition carries a retention hold (owner
// "ferry.commands") at the first offset its stored checkpoint still needs,
// moved up after each store and set again by Start (holds live in memory
// only). Close leaves the holds in place: the next Start needs the same
// records. Size and free-disk limits delete held records anyway; commands
// lost that way are counted (ferry_commands_lost_total) and skipped.
//
// # Topics
//
// New creates a missing commands or responses topic with one partition,
// flush=always and zstd; an existing topic is used as it is. Kafka
// clients produce into the commands topic and consume the responses topic
// through the Kafka listener like any other topic.
//
// # Locking
//
// Dispatcher.mu guards the partition states (read position, pending set,
// dirty flag) and the device queues. It is held only to update them,
// never across I/O: RPCs, appends and checkpoint writes run without it.
package commands
