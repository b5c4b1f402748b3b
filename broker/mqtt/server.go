package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/netguard"
	"github.com/ferry-iot/ferry/broker/ratelog"
	"github.com/ferry-iot/ferry/broker/registry"
	"github.com/ferry-iot/ferry/configs"
)

// Config configures the broker. The daemon decodes the mqtt section of
// its configuration into it (mapstructure tags; the fields tagged "-" are
// wired by the daemon) and asks it to Validate itself.
type Config struct {
	Listen    string `mapstructure:"listen"`     // TCP address, e.g. ":1883"
	WSListen  string `mapstructure:"ws_listen"`  // WebSocket address; "" is off
	TLSListen string `mapstructure:"tls_listen"` // TLS address; "" is off
	// TLSCert and TLSKey are the PEM files of the TLS listener, loaded by
	// New unless TLS is set.
	TLSCert string `mapstructure:"tls_cert"`
	TLSKey  string `mapstructure:"tls_key"`

	MaxPayload     int  `mapstructure:"max_payload"`     // largest PUBLISH payload accepted (default 65536)
	MaxConnections int  `mapstructure:"max_connections"` // authenticated clients over all listeners (and MaxPending more sockets per listener); 0: unlimited
	AllowAnonymous bool `mapstructure:"allow_anonymous"` // accept clients without credentials

	// MaxPending caps the sockets per listener that have not sent a valid
	// CONNECT yet (default 128); past it the oldest is closed (netguard).
	MaxPending int `mapstructure:"max_pending"`
	// ConnectTimeout is how long a socket may take to connect (TLS and
	// WebSocket handshakes included) and authenticate (default 10s).
	ConnectTimeout time.Duration `mapstructure:"connect_timeout"`

	TLS          *tls.Config  `mapstructure:"-"` // nil: loaded from TLSCert and TLSKey
	Provisioning Provisioning `mapstructure:"-"` // the provisioning section

	TelemetryTopic, AttributesTopic string `mapstructure:"-"` // log topics (default "telemetry", "attributes")

	Listeners *netguard.Metrics `mapstructure:"-"` // the guarded listeners' metrics (nil: not registered)
	Logger    *slog.Logger      `mapstructure:"-"`
	Metrics   *Metrics          `mapstructure:"-"` // nil: metrics are kept but not registered anywhere
}

// Validate reports every problem, each a *configs.FieldError keyed
// relative to the section.
func (c *Config) Validate() error {
	var p configs.Problems
	p.CheckAddr("listen", c.Listen, true)
	p.CheckAddr("ws_listen", c.WSListen, false)
	p.CheckAddr("tls_listen", c.TLSListen, false)
	if c.TLSListen != "" && c.TLS == nil && (c.TLSCert == "" || c.TLSKey == "") {
		p.Add("tls_listen", "needs tls_cert and tls_key")
	}
	if c.MaxPayload < 64 || c.MaxPayload > 256<<20 {
		p.Add("max_payload", "%d is outside 64..268435456", c.MaxPayload)
	}
	if c.MaxConnections < 0 {
		p.Add("max_connections", "%d is negative", c.MaxConnections)
	}
	if c.MaxPending < 1 {
		p.Add("max_pending", "%d must be at least 1", c.MaxPending)
	}
	if c.ConnectTimeout <= 0 {
		p.Add("connect_timeout", "%v must be positive", c.ConnectTimeout)
	}
	return p.Err()
}

// Provisioning is ThingsBoard device provisioning (the provisioning
// section): both empty is off, and provisioning clients are refused.
type Provisioning struct {
	Key    string `mapstructure:"key"`
	Secret string `mapstructure:"secret"`
}

// Validate reports a key without a secret and the reverse.
func (pv *Provisioning) Validate() error {
	var p configs.Problems
	switch {
	case pv.Key != "" && pv.Secret == "":
		p.Add("secret", "is required with %s (both empty: provisioning off)", configs.Key("key"))
	case pv.Key == "" && pv.Secret != "":
		p.Add("key", "is required with %s (both empty: provisioning off)", configs.Key("secret"))
	}
	return p.Err()
}

func (c *Config) ensureDefaults() {
	if c.MaxPayload == 0 {
		c.MaxPayload = 65536
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 128
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.Listeners == nil {
		c.Listeners = netguard.NewMetrics(nil)
	}
	if c.TelemetryTopic == "" {
		c.TelemetryTopic = "telemetry"
	}
	if c.AttributesTopic == "" {
		c.AttributesTopic = "attributes"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
}

// Server is the device-facing broker.
type Server struct {
	cfg        Config
	reg        *registry.Registry
	log        *commitlog.Log
	telemetry  *commitlog.Topic
	attributes *commitlog.Topic
	mochi      *mochi.Server
	metrics    *Metrics
	logger     *slog.Logger
	limiter    *ratelog.Limiter

	ctx    context.Context // cancelled by Close: unblocks appends waiting for space
	cancel context.CancelFunc

	sessions sync.Map // *mochi.Client → *session
	probes   sync.Map // *mochi.Client → struct{}: Probe's connections
	// probeSecret is Probe's password: 24 random bytes in hex.
	probeSecret []byte
	nsessions   atomic.Int64 // entries in sessions (and clients being admitted): MaxConnections

	mu      sync.Mutex
	devices map[string][]*session // device name → its connections (routes.go)
	gwChild map[string]string     // device behind a gateway (owned by it) → the gateway device routing it

	rpc        rpcTable
	onRPCReady atomic.Pointer[func(device string)] // see OnRPCReady
	crpc       atomic.Pointer[clientRPC]           // client-side RPC forwarding (clientrpc.go); nil: off

	// Shutdown: Close sets closing (OnConnect refuses, OnPublish drops),
	// then takes pubMu for writing, which waits for the publishes being
	// handled (each holds it for reading); after that nothing new is
	// queued on an acker, so ackWG can be waited for.
	closing atomic.Bool
	pubMu   sync.RWMutex
	ackWG   sync.WaitGroup // per-connection ackers
	closed  atomic.Bool    // Close ran

	tcpLn, tlsLn    net.Listener // closed first by Close, to stop accepting
	guards          []*netguard.Listener
	ws              *wsListener
	wsAddr, tlsAddr net.Addr     // bound optional listeners (set by Start)
	addr            atomic.Value // net.Addr of the TCP listener
	started         atomic.Bool
}

// New builds a broker over the registry and the log's telemetry and
// attributes topics (which must exist).
func New(cfg Config, reg *registry.Registry, l *commitlog.Log) (*Server, error) {
	cfg.ensureDefaults()
	if cfg.TLSListen != "" && cfg.TLS == nil {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("mqtt: tls_cert/tls_key: %w", err)
		}
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	tel, err := l.Topic(cfg.TelemetryTopic)
	if err != nil {
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	attrs, err := l.Topic(cfg.AttributesTopic)
	if err != nil {
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	s := &Server{
		cfg: cfg, reg: reg, log: l, telemetry: tel, attributes: attrs,
		metrics: cfg.Metrics, logger: cfg.Logger,
		devices: map[string][]*session{}, gwChild: map[string]string{},
	}
	s.limiter = ratelog.New()
	s.probeSecret = []byte(randomHex(24))
	s.rpc.init()
	s.ctx, s.cancel = context.WithCancel(context.Background())

	caps := mochi.NewDefaultServerCapabilities()
	// ThingsBoard's maximum QoS is 1 (CONNACK says so: OnPacketEncode).
	// mochi is left at 2 so that OnPublish sees a publish's real QoS: a
	// QoS 2 publish from MQTT 3.x is stored like QoS 1 and acknowledged
	// with PUBREC, as 3.1.1 clients expect; MQTT 5 clients, told the
	// maximum, are disconnected with 0x9B. SUBACK grants at most 1
	// (OnSubscribe).
	caps.MaximumQos = 2
	// Inbound topic aliases per connection: devices use a handful of
	// topics, and each alias costs the broker memory.
	caps.TopicAliasMaximum = 16
	caps.MaximumPacketSize = uint32(cfg.MaxPayload + 64<<10)
	// Each connection has a channel of this many pending writes: mochi's
	// default (8192) costs ~64 KiB per device; downlinks here are few.
	caps.MaximumClientWritesPending = 128
	mlog := cfg.Logger.With("component", "mochi")
	s.mochi = mochi.New(&mochi.Options{
		Capabilities:             caps,
		Logger:                   slog.New(levelFilter{Handler: mlog.Handler(), min: slog.LevelError}),
		ClientNetWriteBufferSize: 2048,
		ClientNetReadBufferSize:  2048,
		SysTopicResendInterval:   3600,
	})
	if err := s.mochi.AddHook(&hook{srv: s}, nil); err != nil {
		return nil, fmt.Errorf("mqtt: add hook: %w", err)
	}
	return s, nil
}

// Start opens the listeners and serves. Listener errors are returned here,
// not discovered later. Every listener is guarded (netguard): accept
// errors are retried, sockets count against the caps, and a socket has
// ConnectTimeout to send a CONNECT no larger than maxConnectBytes with
// valid credentials.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("mqtt: listen %s: %w", s.cfg.Listen, err)
	}
	s.addr.Store(ln.Addr())
	s.tcpLn = s.guard("mqtt", ln)
	if err := s.mochi.AddListener(listeners.NewNet("tcp", packetListener{s.tcpLn, s})); err != nil {
		s.tcpLn.Close()
		return fmt.Errorf("mqtt: %w", err)
	}
	if s.cfg.TLSListen != "" {
		raw, err := net.Listen("tcp", s.cfg.TLSListen)
		if err != nil {
			return fmt.Errorf("mqtt: listen tls %s: %w", s.cfg.TLSListen, err)
		}
		// The guard sits under TLS: the handshake runs within the
		// connect deadline, and a socket that never completes it counts.
		tl := tls.NewListener(s.guard("mqtt-tls", raw), s.cfg.TLS)
		s.tlsAddr, s.tlsLn = tl.Addr(), tl
		if err := s.mochi.AddListener(listeners.NewNet("tls", packetListener{tl, s})); err != nil {
			tl.Close()
			return fmt.Errorf("mqtt: %w", err)
		}
	}
	if s.cfg.WSListen != "" {
		raw, err := net.Listen("tcp", s.cfg.WSListen)
		if err != nil {
			return fmt.Errorf("mqtt: listen websocket %s: %w", s.cfg.WSListen, err)
		}
		ws := newWSListener("ws", s.guard("mqtt-ws", raw), s.cfg.ConnectTimeout,
			2*int64(s.mochi.Options.Capabilities.MaximumPacketSize), func(c net.Conn) net.Conn { return s.packetConn(c) })
		if err := s.mochi.AddListener(ws); err != nil {
			ws.ln.Close()
			return fmt.Errorf("mqtt: %w", err)
		}
		s.wsAddr, s.ws = ws.ln.Addr(), ws
	}
	if err := s.mochi.Serve(); err != nil {
		return fmt.Errorf("mqtt: serve: %w", err)
	}
	s.started.Store(true)
	return nil
}

// TLSAddr is the TLS listener's address (nil when off).
func (s *Server) TLSAddr() net.Addr { return s.tlsAddr }

// WSAddr is the WebSocket listener's address (nil when off).
func (s *Server) WSAddr() net.Addr { return s.wsAddr }

// Addr is the TCP listener's address (useful with ":0").
func (s *Server) Addr() net.Addr {
	a, _ := s.addr.Load().(net.Addr)
	return a
}

// Close shuts the broker down without losing an acknowledgement: it stops
// accepting connections and publishes (a publish arriving now is not
// acknowledged; the device resends it after reconnecting), waits until
// every publish already received has its acknowledgement decided and
// written (the futures complete as the log commits, so the log must still
// be open), and only then disconnects the clients. Close is idempotent.
func (s *Server) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	s.closing.Store(true)
	s.stopAccepting() // also what a failed Start bound
	s.cancel()        // an append still waiting for space gives up: its device is not acknowledged
	// A barrier: once it is passed, every publish being handled has queued
	// its acknowledgement, and later ones see closing.
	s.pubMu.Lock()
	s.pubMu.Unlock()
	s.ackWG.Wait()
	if c := s.crpc.Load(); c != nil {
		c.stop() // its readers use the log, which closes after the broker
	}
	var err error
	if s.started.Load() {
		// DISCONNECT (server shutting down) to every client, by our own
		// list: mochi's closeListenerClients read-locks its client map
		// twice (Clients.GetByListener calls Len), which deadlocks when a
		// client leaving at that moment asks for the write lock in
		// between. CloseAll also waits for every connection goroutine, so
		// mochi's Close, which closes the listeners again, finds them done.
		s.mochi.Listeners.CloseAll(s.disconnectListener)
		err = s.mochi.Close()
	}
	s.sessions.Range(func(_, v any) bool {
		v.(*session).stopTimer()
		return true
	})
	s.rpc.failAll(ErrShuttingDown)
	if err != nil {
		return fmt.Errorf("mqtt: close: %w", err)
	}
	return nil
}

// disconnectListener disconnects the authenticated clients of one listener.
func (s *Server) disconnectListener(id string) {
	s.sessions.Range(func(k, _ any) bool {
		if cl := k.(*mochi.Client); cl.Net.Listener == id {
			s.closeClient(cl, disconnectCodes["shutting_down"])
		}
		return true
	})
}

// stopAccepting closes the listening sockets but not the connections
// (mochi's Close would disconnect every client first).
func (s *Server) stopAccepting() {
	if s.tcpLn != nil {
		_ = s.tcpLn.Close()
	}
	if s.tlsLn != nil {
		_ = s.tlsLn.Close()
	}
	if s.ws != nil {
		s.ws.stopAccepting()
	}
}

// Connected returns the number of authenticated connections.
func (s *Server) Connected() int {
	n := 0
	s.sessions.Range(func(any, any) bool { n++; return true })
	return n
}

// Sentinel errors for downlink calls.
var (
	ErrDeviceOffline  = errors.New("mqtt: device is not connected")
	ErrNotSubscribed  = errors.New("mqtt: device is not subscribed to that kind of message")
	ErrRPCTimeout     = errors.New("mqtt: rpc timed out")
	ErrShuttingDown   = errors.New("mqtt: shutting down")
	ErrUnknownDevice  = errors.New("mqtt: unknown device")
	errConnectionGone = errors.New("mqtt: connection closed")
)

// levelFilter drops records below min: mochi logs every rejected packet at
// debug level (every publish, here) and every refused connection at warn
// level, which would let a misconfigured device flood the log; refusals are
// counted and logged, rate-limited, by the hooks instead.
type levelFilter struct {
	slog.Handler
	min slog.Level
}

func (f levelFilter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= f.min && f.Handler.Enabled(ctx, l)
}

func (f levelFilter) WithAttrs(a []slog.Attr) slog.Handler {
	return levelFilter{Handler: f.Handler.WithAttrs(a), min: f.min}
}

func (f levelFilter) WithGroup(n string) slog.Handler {
	return levelFilter{Handler: f.Handler.WithGroup(n), min: f.min}
}
