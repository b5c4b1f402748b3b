// Package sim simulates ThingsBoard device firmware over MQTT 3.1.1 with
// eclipse/paho.mqtt.golang, to load-test and check Ferry the way real
// devices would use it. Run drives a fleet in-process; the firmware-sim
// command wraps it for the shell.
//
// # What a device does
//
// Device i is a small sensor board named fmt.Sprintf(DeviceNameFormat, i)
// (also its MQTT client id). It logs in with access token
// fmt.Sprintf(TokenFormat, i) as MQTT user name, or first self-provisions:
//
//	connect user "provision" → SUBSCRIBE /provision/response
//	PUBLISH /provision/request {"deviceName":..,"provisionDeviceKey":..,"provisionDeviceSecret":..}
//	← {"credentialsType":"ACCESS_TOKEN","credentialsValue":"<token>","status":"SUCCESS"}
//	disconnect, log in with <token>
//
// Then it publishes telemetry to v1/devices/me/telemetry in the shapes of
// Config.Shapes (see Telemetry), client attributes to
// v1/devices/me/attributes every Config.AttributesEvery messages (see
// Attributes), and, with Config.AnswerRPC, answers server-side RPC
// requests from v1/devices/me/rpc/request/{id} on
// v1/devices/me/rpc/response/{id}. Sensor values are a pure function of
// device index and sequence number (see Sample), and every telemetry
// message carries its "seq", so a test can tell exactly which messages
// reached storage.
//
// # Counting what was delivered
//
// paho reports success it has not seen: on reconnect, resume() re-sends
// stored messages and completes their old tokens with nil before the new
// copy is acknowledged (eclipse/paho.mqtt.golang#563). So each device
// keeps a connection epoch, changed before every reconnect attempt (the
// OnReconnecting handler, which paho calls synchronously) and when paho
// lists its store to resume (a wrapped OrderedMemoryStore). A message is
// Acked only when its token completed without error in the epoch it was
// published in; a completion across an epoch change, a "connection lost"
// error or a token paho never completed is Unconfirmed (it may or may not
// have been stored); a message paho refused outright is Failed. Each
// message gets exactly one outcome (Config.OnMessage sees it), and once
// Run returns Sent == Acked + Unconfirmed + Failed. A device publishes
// only while its connection is open, so QoS 0 messages are not silently
// dropped by paho while it reconnects.
//
// # paho settings and why
//
//   - CleanSession, as ThingsBoard keeps no sessions: subscriptions are
//     re-made after every reconnect. The OnConnect handler (which paho
//     runs in a goroutine of its own) only signals the device goroutine,
//     which re-subscribes; handlers never block or call into paho.
//   - AutoReconnect with backoff capped at MaxReconnectInterval (10 s).
//     The first connect is retried by the device itself, with the same
//     cap and jitter, not by paho's ConnectRetry: that one cannot be
//     interrupted, and with CleanSession its persist.Reset drops what was
//     published before the connection came up.
//   - OrderedMemoryStore, so messages are re-sent in publish order (the
//     default MemoryStore resumes in map order).
//   - At most Config.Inflight unacknowledged publishes per device.
//
// # Goroutines
//
// Run owns one goroutine per device and waits for all of them. A device
// goroutine owns its paho client and one waiter goroutine per publish in
// flight; at the end it lets acknowledgements arrive, disconnects, waits
// until paho reports the client stopped (paho's Disconnect may return
// while a reconnect attempt still runs), and waits for every waiter.
package sim
