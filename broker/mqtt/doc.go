// Package mqtt is Ferry's device-facing MQTT broker: mochi-mqtt (MQTT 3.1,
// 3.1.1 and 5 over TCP, optionally WebSocket and TLS) with hooks that make it
// behave like a ThingsBoard server's MQTT transport, and that write every
// accepted data point to the durable log before acknowledging it.
//
// # Connect
//
// Every listener is guarded (broker/netguard): accept errors are retried,
// sockets count against the caps from accept, a socket must send a valid
// CONNECT within ConnectTimeout, and the oldest of more than MaxPending
// sockets that have not is closed. The first packet must be a CONNECT of at
// most 16 KiB (listen.go), checked before mochi allocates it.
//
// OnConnect authenticates in ThingsBoard's order (access token as user name,
// MQTT basic credentials, provisioning sessions; registry.Authenticate) and
// on failure writes ThingsBoard's CONNACK code itself (MQTT 5: 0x86, 0x85 or
// 0x87; MQTT 3.x: 0x05 or 0x02), because mochi's own refusal always says
// "bad user name or password". Provisioning clients are refused while
// provisioning is off. mochi keys sessions by client id and lets a new
// connection with a known id take the old one's place; OnConnect rewrites
// the id to the device and its client id (sessionKey), so only the same
// device's credentials can take a session over (logged and counted), and a
// provisioning client gets an id of its own.
//
// # The acknowledgement path
//
//	client read loop (mochi)            per-connection acker (ours)
//	────────────────────────            ───────────────────────────
//	PUBLISH → OnPublish
//	  parse + validate payload
//	  registry write queued → Write ┐   (client attributes, new gateway devices)
//	  log.Append → Future ──────────┤
//	  enqueue {packet id, futures}  │   for each item, in arrival order:
//	  return ErrRejectPacket        └─▶   wait for its log future and registry write
//	    (mochi sends nothing,              (their commit cycles' syncs)
//	     fans out nothing)                 run its reply, if any (attribute responses)
//	PUBLISH → ...  (next one, at once)     success → PUBACK
//	                                       failure → MQTT 5: PUBACK 0x80/0x97
//	                                                 MQTT 3.1.1: DISCONNECT (device resends)
//
// OnPublish never blocks on the disk (only on the log's bounded pending
// bytes, which is backpressure): the registry's attribute and device writes
// are queued on its writer, which coalesces the writes that pile up during
// a commit into one transaction, as the log coalesces appends. So one
// connection's pipelined publishes share commit cycles, and PUBACKs leave
// in the order the publishes arrived [MQTT-4.6.0-2], each only once its
// records are durable in the log and its attributes in the registry.
// Every QoS 1 publish of a device session goes through its acker,
// including those that store nothing (attribute requests, RPC replies,
// unknown topics), so ordering holds across kinds; attribute requests are
// answered there too, so they see the session's earlier attribute
// publishes. mochi's own PUBACK path is never used: for MQTT 3.1.1 it
// acknowledges even when a hook reports an error (docs/libraries.md#mochi-puback).
//
// Bad input is answered as ThingsBoard does: invalid JSON → MQTT 5 PUBACK
// 0x99, MQTT 3.1.1 DISCONNECT (after the acknowledgements already queued);
// names and attribute keys the registry cannot hold (over 255 bytes,
// control characters) likewise; oversize payload → 0x95 / DISCONNECT;
// unknown topic → PUBACK (0x90 on MQTT 5) and dropped. Each is counted per
// reason and logged at most once per device and reason per minute (and at
// most 100 lines a minute in all; the limiter remembers a bounded number
// of keys). Refused connections are limited per presented identity (a
// fingerprint of the user name or client id), not per remote address.
//
// # Gateways
//
// A gateway device acts only for the devices it owns: those created
// through it (registry Parent). Naming any other existing device is
// refused (foreign_device: MQTT 5 PUBACK 0x87, MQTT 3.1.1 acknowledged and
// dropped), so a gateway can neither write under another device's name,
// nor receive its RPCs and attribute pushes, nor read its attributes. See
// handleGateway.
//
// # Downlinks
//
// Server-to-device messages (attribute responses, shared attribute pushes,
// RPC requests, provisioning responses) are written to the clients they are
// for — RPC requests and pushes to every connection of the device
// subscribed to them (routes.go) — never through mochi's topic fan-out: every device uses the same
// topic names ("v1/devices/me/..."), so fan-out would leak them. Devices may
// subscribe only to ThingsBoard's device API filters. A server RPC waits
// for an answer from the device it was written to (the device, or the
// gateway it is behind), for that device; an answer from any other device
// resolves nothing (see rpcTable).
//
// # Shutdown
//
// Close stops accepting connections and publishes, waits until every
// publish already received has its acknowledgement written (the log and
// the registry complete their queued work), and only then disconnects the
// clients.
package mqtt
