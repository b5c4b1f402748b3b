package kafkaserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/sync/semaphore"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/netguard"
	"github.com/ferry-iot/ferry/broker/ratelog"
	"github.com/ferry-iot/ferry/broker/state"
	"github.com/ferry-iot/ferry/configs"
)

// Config configures the listener. Zero fields take the defaults noted.
// The daemon decodes the kafka section of its configuration into it
// (mapstructure tags; the fields tagged "-" are wired by the daemon) and
// asks it to Validate itself.
type Config struct {
	// Listen is the TCP address (default "127.0.0.1:9092").
	Listen string `mapstructure:"listen"`
	// Advertised is the host:port returned in Metadata and FindCoordinator
	// (default: the bound address, with 127.0.0.1 for a wildcard host).
	Advertised string `mapstructure:"advertised"`
	// TLSCert and TLSKey are PEM files: set, every connection is TLS
	// (Fetch then copies instead of using sendfile). New loads them
	// unless TLS is set.
	TLSCert string      `mapstructure:"tls_cert"`
	TLSKey  string      `mapstructure:"tls_key"`
	TLS     *tls.Config `mapstructure:"-"`
	// SASLUsers are the SASL/PLAIN credentials. Non-empty: every
	// connection must authenticate before any request but ApiVersions.
	SASLUsers []SASLUser `mapstructure:"sasl_users"`
	// NodeID is this broker's id (default 0) and ClusterID its cluster id
	// (default "ferry").
	NodeID    int32  `mapstructure:"-"`
	ClusterID string `mapstructure:"-"`
	// MaxRequestBytes caps a request frame (default 16 MiB, Kafka's
	// socket.request.max.bytes is 100 MiB); larger declared sizes close
	// the connection before anything is allocated.
	MaxRequestBytes int `mapstructure:"max_request_bytes"`
	// MaxConnections caps concurrent connections (default 1024), counted
	// from accept, authenticated or not.
	MaxConnections int `mapstructure:"max_connections"`
	// MaxPending caps connections that have not authenticated yet — SASL
	// not done, or without SASL no request handled yet (default 64); past
	// it the oldest is closed (netguard).
	MaxPending int `mapstructure:"max_pending"`
	// AuthTimeout is how long a connection may take to authenticate (TLS
	// handshake and SASL; without SASL, its first request) (default 10s).
	AuthTimeout time.Duration `mapstructure:"auth_timeout"`
	// MaxBufferedBytes bounds the request bytes all connections together
	// may hold while reading and handling frames (default 32 MiB, at least
	// MaxRequestBytes). A connection waits for room as its frame grows; one
	// that gets none for bufferWait is closed (counted).
	MaxBufferedBytes int `mapstructure:"max_buffered_bytes"`
	// IdleTimeout closes connections that send nothing for this long
	// (default 10 minutes, Kafka's connections.max.idle.ms).
	IdleTimeout time.Duration `mapstructure:"idle_timeout"`
	// MaxFetchWait caps how long a Fetch short of its MinBytes is held
	// for more data, whatever MaxWaitMillis the client asks (default
	// 30 s). A held Fetch keeps its connection's answers behind it and its
	// request in memory; a lower cap bounds both on a small board with
	// many consumers.
	MaxFetchWait time.Duration `mapstructure:"max_fetch_wait"`
	// DisableSendfile makes Fetch copy segment bytes through user space
	// even on plain TCP (for comparison benchmarks and odd filesystems).
	DisableSendfile bool `mapstructure:"disable_sendfile"`
	// AutoCreateTopics lets Metadata requests that ask for it create
	// unknown topics with TopicDefaults (Kafka's auto.create.topics.enable).
	AutoCreateTopics bool `mapstructure:"auto_create_topics"`
	// DefaultPartitions is the partition count of topics clients create
	// without one (TopicDefaults.Partitions when that is 0; default 1).
	DefaultPartitions int `mapstructure:"default_partitions"`
	// TopicDefaults is the config of topics created by Metadata or by
	// CreateTopics without explicit settings.
	TopicDefaults commitlog.TopicConfig `mapstructure:"-"`
	// ProtectedTopics cannot be deleted through DeleteTopics (the device
	// topics the MQTT broker writes).
	ProtectedTopics []string `mapstructure:"-"`

	Listeners *netguard.Metrics `mapstructure:"-"` // the guarded listener's metrics (nil: not registered)
	Logger    *slog.Logger      `mapstructure:"-"`
	Metrics   *Metrics          `mapstructure:"-"` // nil: kept but not registered
}

// SASLUser is one SASL/PLAIN credential.
type SASLUser struct {
	Username string `mapstructure:"username"`
	Password string `mapstructure:"password"`
}

// Validate reports every problem, each a *configs.FieldError keyed
// relative to the section.
func (c *Config) Validate() error {
	var p configs.Problems
	p.CheckAddr("listen", c.Listen, true)
	p.CheckAddr("advertised", c.Advertised, false)
	if (c.TLSCert == "") != (c.TLSKey == "") {
		p.Add("tls_cert", "tls_cert and tls_key must be set together")
	}
	for i, u := range c.SASLUsers {
		if u.Username == "" || u.Password == "" {
			p.Add(fmt.Sprintf("sasl_users[%d]", i), "needs username and password")
		}
	}
	if c.DefaultPartitions < 1 || c.DefaultPartitions > maxPartitions {
		p.Add("default_partitions", "%d is outside 1..%d", c.DefaultPartitions, maxPartitions)
	}
	if c.MaxRequestBytes < 1<<20 || c.MaxRequestBytes > 1<<30 {
		p.Add("max_request_bytes", "%d is outside 1048576..1073741824", c.MaxRequestBytes)
	}
	if c.MaxBufferedBytes < c.MaxRequestBytes {
		p.Add("max_buffered_bytes", "%d is below max_request_bytes (%d): one request must fit", c.MaxBufferedBytes, c.MaxRequestBytes)
	}
	if c.MaxConnections < 1 {
		p.Add("max_connections", "%d must be at least 1", c.MaxConnections)
	}
	if c.MaxPending < 1 {
		p.Add("max_pending", "%d must be at least 1", c.MaxPending)
	}
	if c.AuthTimeout <= 0 {
		p.Add("auth_timeout", "%v must be positive", c.AuthTimeout)
	}
	if c.IdleTimeout <= 0 {
		p.Add("idle_timeout", "%v must be positive", c.IdleTimeout)
	}
	if c.MaxFetchWait <= 0 || c.MaxFetchWait > 5*time.Minute {
		p.Add("max_fetch_wait", "%v is outside (0, 5m]", c.MaxFetchWait)
	}
	return p.Err()
}

func (c *Config) ensureDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:9092"
	}
	if c.ClusterID == "" {
		c.ClusterID = "ferry"
	}
	if c.MaxRequestBytes <= 0 {
		c.MaxRequestBytes = 16 << 20
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = 1024
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 64
	}
	if c.AuthTimeout <= 0 {
		c.AuthTimeout = 10 * time.Second
	}
	if c.MaxBufferedBytes <= 0 {
		c.MaxBufferedBytes = 32 << 20
	}
	c.MaxBufferedBytes = max(c.MaxBufferedBytes, c.MaxRequestBytes)
	if c.Listeners == nil {
		c.Listeners = netguard.NewMetrics(nil)
	}
	if c.TopicDefaults.Partitions == 0 {
		c.TopicDefaults.Partitions = max(c.DefaultPartitions, 1)
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 10 * time.Minute
	}
	if c.MaxFetchWait <= 0 {
		c.MaxFetchWait = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
}

// Groups is the consumer-group coordinator the group APIs are served by
// (package group implements it). Each method gets the decoded request and
// returns the answer for the request's version; JoinGroup and SyncGroup
// block as the protocol requires, until ctx (the connection's) ends.
type Groups interface {
	JoinGroup(ctx context.Context, clientID, clientHost string, req *kmsg.JoinGroupRequest) *kmsg.JoinGroupResponse
	SyncGroup(ctx context.Context, req *kmsg.SyncGroupRequest) *kmsg.SyncGroupResponse
	Heartbeat(req *kmsg.HeartbeatRequest) *kmsg.HeartbeatResponse
	LeaveGroup(req *kmsg.LeaveGroupRequest) *kmsg.LeaveGroupResponse
	OffsetCommit(req *kmsg.OffsetCommitRequest) *kmsg.OffsetCommitResponse
	OffsetFetch(req *kmsg.OffsetFetchRequest) *kmsg.OffsetFetchResponse
	DescribeGroups(req *kmsg.DescribeGroupsRequest) *kmsg.DescribeGroupsResponse
	ListGroups(req *kmsg.ListGroupsRequest) *kmsg.ListGroupsResponse
	DeleteGroups(req *kmsg.DeleteGroupsRequest) *kmsg.DeleteGroupsResponse
}

// Server is the Kafka protocol listener. It serves the log's topics and
// the group coordinator's groups; it owns its accept loop and one reader
// and one writer goroutine per connection.
type Server struct {
	cfg       Config
	sasl      map[string]string // SASLUsers: user name → password
	log       *commitlog.Log
	groups    Groups
	producers *producers
	metrics   *Metrics
	logger    *slog.Logger
	limiter   *ratelog.Limiter

	advHost string
	advPort int32

	ln     *netguard.Listener
	ctx    context.Context // cancelled by Close: ends long polls and joins
	cancel context.CancelFunc
	frames *semaphore.Weighted // MaxBufferedBytes: frame bytes held by all connections

	mu    sync.Mutex
	conns map[*conn]struct{} // guarded by mu
	shut  bool               // guarded by mu

	wg sync.WaitGroup // accept loop and connections
}

// New binds the listener. st persists producer ids across restarts;
// groups serves the consumer-group APIs.
func New(cfg Config, lg *commitlog.Log, groups Groups, st *state.Store) (*Server, error) {
	cfg.ensureDefaults()
	if (cfg.TLSCert != "" || cfg.TLSKey != "") && cfg.TLS == nil {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("kafkaserver: tls_cert/tls_key: %w", err)
		}
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	prods, err := newProducers(st)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, log: lg, groups: groups, producers: prods, sasl: map[string]string{},
		metrics: cfg.Metrics, logger: cfg.Logger,
		conns: map[*conn]struct{}{}, frames: semaphore.NewWeighted(int64(cfg.MaxBufferedBytes)),
	}
	for _, u := range cfg.SASLUsers {
		s.sasl[u.Username] = u.Password
	}
	s.limiter = ratelog.New()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("kafkaserver: listen %s: %w", cfg.Listen, err)
	}
	s.ln = netguard.Wrap(ln, netguard.Config{
		Name: "kafka", MaxConns: cfg.MaxConnections, MaxPending: cfg.MaxPending, AuthTimeout: cfg.AuthTimeout,
		Logger: cfg.Logger, Metrics: cfg.Listeners,
	})
	if err := s.setAdvertised(); err != nil {
		s.ln.Close()
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

func (s *Server) setAdvertised() error {
	adv := s.cfg.Advertised
	if adv == "" {
		host, port, _ := net.SplitHostPort(s.ln.Addr().String())
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
			host = "127.0.0.1"
		}
		adv = net.JoinHostPort(host, port)
	}
	host, port, err := net.SplitHostPort(adv)
	if err != nil {
		return fmt.Errorf("kafkaserver: advertised address %q: %w", adv, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return fmt.Errorf("kafkaserver: advertised address %q: bad port: %w", adv, err)
	}
	if port == "0" { // the configured listen port was 0: advertise the bound one
		_, bound, _ := net.SplitHostPort(s.ln.Addr().String())
		p, _ = strconv.ParseUint(bound, 10, 16)
	}
	s.advHost, s.advPort = host, int32(p)
	return nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Start begins accepting connections.
func (s *Server) Start() {
	s.wg.Add(1)
	go s.acceptLoop()
}

// Status reports the listener's state (health checks).
func (s *Server) Status() netguard.Status { return s.ln.Status() }

// acceptLoop serves each admitted connection. The guarded listener
// retries failed accepts and applies the connection caps; its Accept
// fails only once it is closed.
func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		c := s.newConn(nc)
		s.mu.Lock()
		if s.shut {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c.serve()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Close stops accepting, ends long polls and pending joins, lets every
// accepted Produce finish and answer, closes every connection and waits
// for all goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	s.shut = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	err := s.ln.Close()
	s.cancel()
	for _, c := range conns {
		c.stopReading()
	}
	s.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("kafkaserver: close listener: %w", err)
	}
	return nil
}
