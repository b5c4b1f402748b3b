// Package mqtt is Ferry's device-facing MQTT broker: mochi-mqtt (MQTT 3.1,
// 3.1.1 and 5 over TCP, optionally WebSocket and TLS) with hooks that make it
// behave like a ThingsBoard server's MQTT transport, and that write every
// accepted data point to the durable log before acknowledging it.
//
// # Connect
//
// OnConnect authenticates in ThingsBoard's order (access token as user name,
// MQTT basic credentials, provisioning sessions; registry.Authenticate) and
// on failure writes ThingsBoard's CONNACK code itself (MQTT 5: 0x86, 0x85 or
// 0x87; MQTT 3.x: 0x05 or 0x02), because mochi's own refusal always says
// "bad user name or password".
//
// # The acknowledgement path
//
//	client read loop (mochi)            per-connection acker (ours)
//	────────────────────────            ───────────────────────────
//	PUBLISH → OnPublish
//	  parse + validate payload
//	  log.Append → Future ─────────┐
//	  enqueue {packet id, future}  │    for each item, in arrival order:
//	  return ErrRejectPacket       └──▶   wait for the future (commit cycle's fsync)
//	    (mochi sends nothing,              success → PUBACK
//	     fans out nothing)                 failure → MQTT 5: PUBACK 0x80/0x97
//	PUBLISH → ...  (next one, at once)               MQTT 3.1.1: DISCONNECT (device resends)
//
// OnPublish never blocks on the disk (only on the log's bounded pending
// bytes, which is backpressure), so one connection's pipelined publishes
// share commit cycles, and PUBACKs leave in the order the publishes arrived
// [MQTT-4.6.0-2]. Every QoS 1 publish of a device session goes through its
// acker, including those that store nothing (attribute requests, RPC
// replies, unknown topics), so ordering holds across kinds. mochi's own
// PUBACK path is never used: for MQTT 3.1.1 it acknowledges even when a hook
// reports an error (libs.md §1.3).
//
// Bad input is answered as ThingsBoard does: invalid JSON → MQTT 5 PUBACK
// 0x99, MQTT 3.1.1 DISCONNECT (after the acknowledgements already queued);
// oversize payload → 0x95 / DISCONNECT; unknown topic → PUBACK (0x90 on
// MQTT 5) and dropped. Each is counted per reason and logged at most once per
// device and reason per minute.
//
// # Downlinks
//
// Server-to-device messages (attribute responses, shared attribute pushes,
// RPC requests, provisioning responses) are written to the one client they
// are for, never through mochi's topic fan-out: every device uses the same
// topic names ("v1/devices/me/..."), so fan-out would leak them. Devices may
// subscribe only to ThingsBoard's device API filters.
package mqtt
