package mqtt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// wsListener is MQTT over WebSocket on a socket bound before the broker
// starts. mochi's own WebSocket listener binds inside its Serve goroutine,
// so a busy port is only logged and the daemon starts without it; binding
// here makes that a start-up error naming mqtt.ws_listen, and lets ":0"
// report its port.
type wsListener struct {
	id      string
	ln      net.Listener
	timeout time.Duration // to upgrade and authenticate
	// readLimit bounds one WebSocket message: clients put one MQTT packet
	// (or a few) in a message, and a packet is bounded by the broker's
	// Maximum Packet Size; gorilla refuses a longer message before
	// buffering it.
	readLimit int64
	wrap      func(net.Conn) net.Conn // the broker's packet checks (packetConn)
	srv       *http.Server
	upgrader  websocket.Upgrader
	log       *slog.Logger

	mu        sync.Mutex
	establish listeners.EstablishFn // guarded by mu

	closeOnce sync.Once // the clients are closed once (Close runs twice at shutdown)
}

func newWSListener(id string, ln net.Listener, timeout time.Duration, readLimit int64, wrap func(net.Conn) net.Conn) *wsListener {
	l := &wsListener{id: id, ln: ln, timeout: timeout, readLimit: readLimit, wrap: wrap, upgrader: websocket.Upgrader{
		Subprotocols: []string{"mqtt"},
		CheckOrigin:  func(*http.Request) bool { return true }, // devices, not browsers with cookies
	}}
	mux := http.NewServeMux()
	mux.HandleFunc("/", l.handle)
	l.srv = &http.Server{Handler: mux, ReadHeaderTimeout: timeout}
	return l
}

func (l *wsListener) ID() string       { return l.id }
func (l *wsListener) Address() string  { return l.ln.Addr().String() }
func (l *wsListener) Protocol() string { return "ws" }

func (l *wsListener) Init(log *slog.Logger) error {
	l.log = log
	return nil
}

func (l *wsListener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	l.establish = establish
	l.mu.Unlock()
	if err := l.srv.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		l.log.Error("mqtt: websocket listener stopped", "addr", l.Address(), "err", err)
	}
}

// stopAccepting closes the listening socket; upgraded (hijacked)
// connections are not the HTTP server's any more and stay open.
func (l *wsListener) stopAccepting() { _ = l.srv.Close() }

func (l *wsListener) Close(closeClients listeners.CloseFn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = l.srv.Shutdown(ctx)
	l.closeOnce.Do(func() { closeClients(l.id) })
}

func (l *wsListener) handle(w http.ResponseWriter, r *http.Request) {
	c, err := l.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	defer c.Close()
	// The HTTP server lifted its deadlines with the upgrade: the CONNECT
	// must still come within the connect timeout, and one WebSocket
	// message may not hold more than the largest packet.
	_ = c.UnderlyingConn().SetDeadline(time.Now().Add(l.timeout))
	c.SetReadLimit(l.readLimit)
	l.mu.Lock()
	establish := l.establish
	l.mu.Unlock()
	if err := establish(l.id, l.wrap(&wsConn{Conn: c.UnderlyingConn(), c: c})); err != nil && !errors.Is(err, io.EOF) {
		l.log.Debug("mqtt: websocket client ended", "remote", r.RemoteAddr, "err", err)
	}
}

// wsConn presents a WebSocket as the byte stream MQTT expects: binary
// messages are read back to back, each Write is one binary message.
type wsConn struct {
	net.Conn
	c *websocket.Conn
	r io.Reader // the current message, nil between messages
}

// NetConn is the socket under the WebSocket (netguard.Authenticated looks through it).
func (ws *wsConn) NetConn() net.Conn { return ws.Conn }

func (ws *wsConn) Read(p []byte) (int, error) {
	for {
		if ws.r == nil {
			op, r, err := ws.c.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, fmt.Errorf("mqtt: websocket message of type %d, MQTT needs binary", op)
			}
			ws.r = r
		}
		n, err := ws.r.Read(p)
		if errors.Is(err, io.EOF) {
			ws.r = nil
			if n == 0 {
				continue // an empty message: read the next one
			}
			return n, nil
		}
		return n, err
	}
}

func (ws *wsConn) Write(p []byte) (int, error) {
	if err := ws.c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
