// Package netguard wraps a listening socket so that no client can stop it
// or exhaust the process through it. Every listener Ferry opens to the
// network (MQTT over TCP, TLS and WebSocket, Kafka, HTTP) goes through one.
//
//   - Accept never gives up on a transient error. When the process is out
//     of file descriptors (EMFILE), the system is (ENFILE), or a client
//     reset the connection before it was accepted, Accept backs off
//     (doubling from 5 ms to 1 s, as net/http does), retries, counts the
//     failure and logs it (rate-limited), and the listener reports itself
//     as not accepting until an accept succeeds again. Only closing the
//     listener ends Accept. (mochi's own accept loop returns on the first
//     error, which would leave the MQTT port dead while the process lives.)
//   - Every open socket counts against MaxConns, whether it has
//     authenticated or not. A socket accepted beyond the cap is closed at
//     once and counted.
//   - A socket is pending until its owner calls Authenticated (MQTT: a
//     CONNECT with valid credentials; Kafka: SASL done; HTTP: a whole
//     request read). Pending sockets have a deadline (AuthTimeout) and a
//     cap of their own (MaxPending). When a new socket would pass either
//     cap, the oldest pending socket is closed to make room: a client that
//     opens sockets and never speaks (slowloris) only ever evicts its own
//     sockets and cannot lock a legitimate client out, and an
//     authenticated client is never closed to make room.
//
// Status reports, for health checks, whether the listener is accepting and
// how many sockets it holds. Lock order: Listener.mu is a leaf.
package netguard
