package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/configs"
)

// Config is the daemon's configuration: embedded defaults, then an
// optional YAML file, then FERRY_<KEY> environment variables (dots become
// underscores: FERRY_MQTT_LISTEN=:2883; lists and maps too, see
// config_env.go and the head of configs/ferry.yaml), validated once at
// start-up.
type Config struct {
	NodeID       string             `mapstructure:"node_id"`
	DataDir      string             `mapstructure:"data_dir"`
	MemoryLimit  string             `mapstructure:"memory_limit"`
	MQTT         MQTTConfig         `mapstructure:"mqtt"`
	HTTP         HTTPConfig         `mapstructure:"http"`
	Devices      []DeviceConfig     `mapstructure:"devices"`
	Provisioning ProvisioningConfig `mapstructure:"provisioning"`
	RPC          RPCConfig          `mapstructure:"rpc"`
	Kafka        KafkaConfig        `mapstructure:"kafka"`
	Commands     CommandsConfig     `mapstructure:"commands"`
	Bridges      BridgesConfig      `mapstructure:"bridges"`
	Log          LogConfig          `mapstructure:"log"`
	Logging      LoggingConfig      `mapstructure:"logging"`
}

// MQTTConfig is the device-facing MQTT broker.
type MQTTConfig struct {
	Listen         string        `mapstructure:"listen"`
	MaxPayload     int           `mapstructure:"max_payload"`
	AllowAnonymous bool          `mapstructure:"allow_anonymous"`
	WSListen       string        `mapstructure:"ws_listen"`
	TLSListen      string        `mapstructure:"tls_listen"`
	TLSCert        string        `mapstructure:"tls_cert"`
	TLSKey         string        `mapstructure:"tls_key"`
	MaxConnections int           `mapstructure:"max_connections"`
	MaxPending     int           `mapstructure:"max_pending"`
	ConnectTimeout time.Duration `mapstructure:"connect_timeout"`
}

// HTTPConfig is the HTTP API.
type HTTPConfig struct {
	Listen              string `mapstructure:"listen"`
	AdminToken          string `mapstructure:"admin_token"`
	AllowAnonymousReads bool   `mapstructure:"allow_anonymous_reads"`
	MaxConnections      int    `mapstructure:"max_connections"`
}

// DeviceConfig seeds one device into the registry.
type DeviceConfig struct {
	Name     string `mapstructure:"name"`
	Type     string `mapstructure:"type"`
	Gateway  bool   `mapstructure:"gateway"`
	Token    string `mapstructure:"token"`
	ClientID string `mapstructure:"client_id"`
	Username string `mapstructure:"username"`
	Password string `mapstructure:"password"`
}

// ProvisioningConfig enables ThingsBoard device provisioning.
type ProvisioningConfig struct {
	Key    string `mapstructure:"key"`
	Secret string `mapstructure:"secret"`
}

// RPCConfig bounds server-side RPC.
type RPCConfig struct {
	Timeout        time.Duration `mapstructure:"timeout"`
	ClientRequests string        `mapstructure:"client_requests"`
	ClientReplies  string        `mapstructure:"client_replies"`
	ClientTimeout  time.Duration `mapstructure:"client_timeout"`
}

// KafkaConfig is the Kafka protocol listener for backend services.
type KafkaConfig struct {
	Listen            string        `mapstructure:"listen"`
	Advertised        string        `mapstructure:"advertised"`
	TLSCert           string        `mapstructure:"tls_cert"`
	TLSKey            string        `mapstructure:"tls_key"`
	SASLUsers         []SASLUser    `mapstructure:"sasl_users"`
	AutoCreateTopics  bool          `mapstructure:"auto_create_topics"`
	DefaultPartitions int           `mapstructure:"default_partitions"`
	MaxRequestBytes   int           `mapstructure:"max_request_bytes"`
	MaxBufferedBytes  int           `mapstructure:"max_buffered_bytes"`
	MaxConnections    int           `mapstructure:"max_connections"`
	MaxPending        int           `mapstructure:"max_pending"`
	AuthTimeout       time.Duration `mapstructure:"auth_timeout"`
	GroupMinSession   time.Duration `mapstructure:"group_min_session_timeout"`
	GroupMaxSession   time.Duration `mapstructure:"group_max_session_timeout"`
	OffsetsRetention  time.Duration `mapstructure:"offsets_retention"`
}

// SASLUser is one SASL/PLAIN credential for the Kafka listener.
type SASLUser struct {
	Username string `mapstructure:"username"`
	Password string `mapstructure:"password"`
}

// BridgesConfig holds the upstream bridges.
type BridgesConfig struct {
	Kafka KafkaBridgeConfig `mapstructure:"kafka"`
}

// KafkaBridgeConfig replicates log topics to an upstream Kafka cluster.
type KafkaBridgeConfig struct {
	Brokers         []string          `mapstructure:"brokers"`
	Topics          map[string]string `mapstructure:"topics"`
	Delivery        string            `mapstructure:"delivery"`
	TransactionalID string            `mapstructure:"transactional_id"`
	CheckpointTopic string            `mapstructure:"checkpoint_topic"`
	RejectedTopic   string            `mapstructure:"rejected_topic"`
	Compression     string            `mapstructure:"compression"`
	TLS             BridgeTLSConfig   `mapstructure:"tls"`
	SASL            BridgeSASLConfig  `mapstructure:"sasl"`
	Order           string            `mapstructure:"order"`
	RateLimit       string            `mapstructure:"rate_limit"`
	StallTimeout    time.Duration     `mapstructure:"stall_timeout"`
	Backoff         time.Duration     `mapstructure:"backoff"`
	MaxBackoff      time.Duration     `mapstructure:"max_backoff"`
	MaxBatchBytes   string            `mapstructure:"max_batch_bytes"`
	MaxBatchRecords int               `mapstructure:"max_batch_records"`
	Linger          time.Duration     `mapstructure:"linger"`
	LiveThreshold   int64             `mapstructure:"live_threshold"`
}

// BridgeTLSConfig is TLS towards an upstream.
type BridgeTLSConfig struct {
	Enabled            bool   `mapstructure:"enabled"`
	CAFile             string `mapstructure:"ca_file"`
	CertFile           string `mapstructure:"cert_file"`
	KeyFile            string `mapstructure:"key_file"`
	InsecureSkipVerify bool   `mapstructure:"insecure_skip_verify"`
}

// BridgeSASLConfig is SASL towards an upstream.
type BridgeSASLConfig struct {
	Mechanism string `mapstructure:"mechanism"`
	Username  string `mapstructure:"username"`
	Password  string `mapstructure:"password"`
}

// CommandsConfig turns records in a log topic into device RPC.
type CommandsConfig struct {
	Topic     string        `mapstructure:"topic"`
	Responses string        `mapstructure:"responses"`
	Expiry    time.Duration `mapstructure:"expiry"`
}

// LogConfig is the durable log.
type LogConfig struct {
	MinFreeRatio      float64                `mapstructure:"min_free_ratio"`
	RetentionInterval time.Duration          `mapstructure:"retention_interval"`
	Linger            time.Duration          `mapstructure:"linger"`
	MaxTopics         int                    `mapstructure:"max_topics"`
	MaxPartitions     int                    `mapstructure:"max_partitions"`
	MaxOpenSegments   int                    `mapstructure:"max_open_segments"`
	Topics            map[string]TopicConfig `mapstructure:"topics"`
}

// TopicConfig is one log topic's settings.
type TopicConfig struct {
	Partitions     int           `mapstructure:"partitions"`
	Flush          string        `mapstructure:"flush"`
	FlushInterval  time.Duration `mapstructure:"flush_interval"`
	Retention      time.Duration `mapstructure:"retention"`
	RetentionBytes int64         `mapstructure:"retention_bytes"`
	OnFull         string        `mapstructure:"on_full"`
	Compression    string        `mapstructure:"compression"`
	CleanupPolicy  string        `mapstructure:"cleanup_policy"`
	SegmentBytes   int64         `mapstructure:"segment_bytes"`
}

// LoggingConfig is the daemon's own logging.
type LoggingConfig struct {
	Level  string `mapstructure:"level"`
	Format string `mapstructure:"format"`
}

// ConfigError lists every configuration problem, each with its full key.
type ConfigError struct{ Problems []string }

func (e *ConfigError) Error() string {
	return "config: " + strings.Join(e.Problems, "; ")
}

// LoadConfig builds the configuration from the embedded defaults, the
// optional file and the environment (config_env.go says how they merge),
// and validates it.
func LoadConfig(file string, environ []string) (*Config, error) {
	tree, err := parseTree(configs.Default)
	if err != nil {
		return nil, fmt.Errorf("config: embedded defaults: %w", err)
	}
	var problems []string
	userMaps := map[string]bool{} // replaced maps the user set
	if file != "" {
		raw, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		user, err := parseTree(raw)
		if err != nil {
			return nil, &ConfigError{Problems: []string{fmt.Sprintf("%s: %v", file, err)}}
		}
		problems = append(problems, unknownKeysIn(user, reflect.TypeOf(Config{}), "")...)
		for key := range replacedMaps {
			if _, set := lookupTree(user, strings.Split(key, ".")); set {
				userMaps[key] = true
			}
		}
		mergeTree(tree, user, "")
	}
	// Environment overrides are resolved against Config's fields rather
	// than with viper.AutomaticEnv, which only reaches keys viper already
	// knows when Unmarshal runs (libs.md §4) and cannot say that an
	// override matches no setting.
	settings, envProblems := envSettings(environ, tree)
	problems = append(problems, envProblems...)
	problems = append(problems, applyEnv(tree, settings, userMaps)...)

	v := viper.New()
	if err := v.MergeConfigMap(tree); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var cfg Config
	if err := v.Unmarshal(&cfg, func(dc *mapstructure.DecoderConfig) {
		dc.ErrorUnused = false
		dc.WeaklyTypedInput = true
		dc.DecodeHook = mapstructure.ComposeDecodeHookFunc(mapstructure.StringToTimeDurationHookFunc(), stringToListHook)
	}); err != nil {
		problems = append(problems, err.Error())
	}
	if cfg.NodeID == "" {
		if h, err := os.Hostname(); err == nil {
			cfg.NodeID = h
		} else {
			cfg.NodeID = "ferry"
		}
	}
	problems = append(problems, cfg.validate()...)
	if len(problems) > 0 {
		sort.Strings(problems)
		return nil, &ConfigError{Problems: problems}
	}
	return &cfg, nil
}

// lookupTree reports whether path is set in tree (to any value, null too).
func lookupTree(tree map[string]any, path []string) (any, bool) {
	m := tree
	for i, k := range path {
		v, ok := m[k]
		if !ok {
			return nil, false
		}
		if i == len(path)-1 {
			return v, true
		}
		if m, ok = v.(map[string]any); !ok {
			return nil, false
		}
	}
	return nil, false
}

// unknownKeysIn walks a settings tree (at key path) against type t and
// names every key the daemon does not know, and every map entry whose name
// holds a '.' (the key separator: viper would read log.topics.a.b as
// topic a, field b).
func unknownKeysIn(node any, t reflect.Type, path string) []string {
	var out []string
	var walk func(node any, t reflect.Type, path string)
	walk = func(node any, t reflect.Type, path string) {
		switch t.Kind() {
		case reflect.Struct:
			if t == durationType {
				return
			}
			m, ok := node.(map[string]any)
			if !ok {
				if node != nil {
					out = append(out, fmt.Sprintf("%s: expected a mapping", path))
				}
				return
			}
			fields := map[string]reflect.StructField{}
			for i := 0; i < t.NumField(); i++ {
				fields[t.Field(i).Tag.Get("mapstructure")] = t.Field(i)
			}
			for k, child := range m {
				f, ok := fields[k]
				key := joinKey(path, k)
				if !ok {
					out = append(out, fmt.Sprintf("%s: unknown key", key))
					continue
				}
				walk(child, f.Type, key)
			}
		case reflect.Map:
			m, ok := node.(map[string]any)
			if !ok {
				if node != nil {
					out = append(out, fmt.Sprintf("%s: expected a mapping", path))
				}
				return
			}
			for k, child := range m {
				if strings.Contains(k, ".") {
					out = append(out, fmt.Sprintf("%s.%s: a name here may not contain '.'", path, k))
					continue
				}
				walk(child, t.Elem(), path+"."+k)
			}
		case reflect.Slice:
			l, ok := node.([]any)
			if !ok {
				if node != nil && t.Elem().Kind() != reflect.String { // "a,b" is a list of strings
					out = append(out, fmt.Sprintf("%s: expected a list", path))
				}
				return
			}
			for i, child := range l {
				walk(child, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
	walk(node, t, path)
	return out
}

// validate checks every field and returns all problems with full keys.
func (c *Config) validate() []string {
	var p []string
	bad := func(key, format string, args ...any) {
		p = append(p, fmt.Sprintf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.DataDir == "" {
		bad("data_dir", "must not be empty")
	}
	if _, err := parseSize(c.MemoryLimit); err != nil {
		bad("memory_limit", "%v", err)
	}
	checkAddr := func(key, addr string, required bool) {
		if addr == "" {
			if required {
				bad(key, "must not be empty")
			}
			return
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad(key, "%q is not host:port (%v)", addr, err)
		}
	}
	checkAddr("mqtt.listen", c.MQTT.Listen, true)
	checkAddr("mqtt.ws_listen", c.MQTT.WSListen, false)
	checkAddr("mqtt.tls_listen", c.MQTT.TLSListen, false)
	checkAddr("http.listen", c.HTTP.Listen, true)
	if c.MQTT.TLSListen != "" && (c.MQTT.TLSCert == "" || c.MQTT.TLSKey == "") {
		bad("mqtt.tls_listen", "needs mqtt.tls_cert and mqtt.tls_key")
	}
	if c.MQTT.MaxPayload < 64 || c.MQTT.MaxPayload > 256<<20 {
		bad("mqtt.max_payload", "%d is outside 64..268435456", c.MQTT.MaxPayload)
	}
	if c.MQTT.MaxConnections < 0 {
		bad("mqtt.max_connections", "%d is negative", c.MQTT.MaxConnections)
	}
	if c.MQTT.MaxPending < 1 {
		bad("mqtt.max_pending", "%d must be at least 1", c.MQTT.MaxPending)
	}
	if c.MQTT.ConnectTimeout <= 0 {
		bad("mqtt.connect_timeout", "%v must be positive", c.MQTT.ConnectTimeout)
	}
	if c.HTTP.MaxConnections < 1 {
		bad("http.max_connections", "%d must be at least 1", c.HTTP.MaxConnections)
	}
	switch {
	case c.Provisioning.Key != "" && c.Provisioning.Secret == "":
		bad("provisioning.secret", "is required with provisioning.key (both empty: provisioning off)")
	case c.Provisioning.Key == "" && c.Provisioning.Secret != "":
		bad("provisioning.key", "is required with provisioning.secret (both empty: provisioning off)")
	}
	if c.RPC.Timeout <= 0 {
		bad("rpc.timeout", "%v must be positive", c.RPC.Timeout)
	}
	if c.RPC.ClientRequests != "" {
		checkTopicPair(bad, "rpc.client_requests", c.RPC.ClientRequests, "rpc.client_replies", c.RPC.ClientReplies)
		if c.RPC.ClientTimeout <= 0 {
			bad("rpc.client_timeout", "%v must be positive", c.RPC.ClientTimeout)
		}
	}
	checkAddr("kafka.listen", c.Kafka.Listen, false)
	checkAddr("kafka.advertised", c.Kafka.Advertised, false)
	if (c.Kafka.TLSCert == "") != (c.Kafka.TLSKey == "") {
		bad("kafka.tls_cert", "kafka.tls_cert and kafka.tls_key must be set together")
	}
	for i, u := range c.Kafka.SASLUsers {
		if u.Username == "" || u.Password == "" {
			bad(fmt.Sprintf("kafka.sasl_users[%d]", i), "needs username and password")
		}
	}
	if c.Kafka.DefaultPartitions < 1 || c.Kafka.DefaultPartitions > 1024 {
		bad("kafka.default_partitions", "%d is outside 1..1024", c.Kafka.DefaultPartitions)
	}
	if c.Kafka.MaxRequestBytes < 1<<20 || c.Kafka.MaxRequestBytes > 1<<30 {
		bad("kafka.max_request_bytes", "%d is outside 1048576..1073741824", c.Kafka.MaxRequestBytes)
	}
	if c.Kafka.MaxBufferedBytes < c.Kafka.MaxRequestBytes {
		bad("kafka.max_buffered_bytes", "%d is below kafka.max_request_bytes (%d): one request must fit", c.Kafka.MaxBufferedBytes, c.Kafka.MaxRequestBytes)
	}
	if c.Kafka.MaxConnections < 1 {
		bad("kafka.max_connections", "%d must be at least 1", c.Kafka.MaxConnections)
	}
	if c.Kafka.MaxPending < 1 {
		bad("kafka.max_pending", "%d must be at least 1", c.Kafka.MaxPending)
	}
	if c.Kafka.AuthTimeout <= 0 {
		bad("kafka.auth_timeout", "%v must be positive", c.Kafka.AuthTimeout)
	}
	if c.Kafka.GroupMinSession <= 0 || c.Kafka.GroupMaxSession < c.Kafka.GroupMinSession {
		bad("kafka.group_min_session_timeout", "%v..%v is not a positive range (kafka.group_max_session_timeout)", c.Kafka.GroupMinSession, c.Kafka.GroupMaxSession)
	}
	if c.Kafka.OffsetsRetention <= 0 {
		bad("kafka.offsets_retention", "%v must be positive", c.Kafka.OffsetsRetention)
	}
	if c.Commands.Topic != "" {
		checkTopicPair(bad, "commands.topic", c.Commands.Topic, "commands.responses", c.Commands.Responses)
		if c.Commands.Expiry <= 0 {
			bad("commands.expiry", "%v must be positive", c.Commands.Expiry)
		}
	}
	c.validateKafkaBridge(bad)
	if c.Log.MinFreeRatio < 0 || c.Log.MinFreeRatio >= 1 {
		bad("log.min_free_ratio", "%v is outside [0, 1)", c.Log.MinFreeRatio)
	}
	if c.Log.RetentionInterval <= 0 {
		bad("log.retention_interval", "%v must be positive", c.Log.RetentionInterval)
	}
	if c.Log.Linger < 0 {
		bad("log.linger", "%v is negative", c.Log.Linger)
	}
	if c.Log.MaxTopics < 0 {
		bad("log.max_topics", "%d is negative", c.Log.MaxTopics)
	} else if c.Log.MaxTopics > 0 && len(c.Log.Topics) > c.Log.MaxTopics {
		bad("log.max_topics", "%d is below the %d topics log.topics configures", c.Log.MaxTopics, len(c.Log.Topics))
	}
	if c.Log.MaxOpenSegments < 0 {
		bad("log.max_open_segments", "%d is negative", c.Log.MaxOpenSegments)
	}
	if c.Log.MaxPartitions < 0 {
		bad("log.max_partitions", "%d is negative", c.Log.MaxPartitions)
	} else if n := c.configuredPartitions(); c.Log.MaxPartitions > 0 && n > c.Log.MaxPartitions {
		bad("log.max_partitions", "%d is below the %d partitions log.topics configures", c.Log.MaxPartitions, n)
	}
	for _, name := range []string{"telemetry", "attributes"} {
		if _, ok := c.Log.Topics[name]; !ok {
			bad("log.topics."+name, "is required")
		}
	}
	for name, tc := range c.Log.Topics {
		prefix := "log.topics." + name
		if err := commitlog.ValidTopicName(name); err != nil {
			bad(prefix, "invalid topic name")
			continue
		}
		if _, err := tc.toLog(); err != nil {
			var joined interface{ Unwrap() []error }
			if errors.As(err, &joined) {
				for _, e := range joined.Unwrap() {
					var fe *commitlog.FieldError
					if errors.As(e, &fe) {
						bad(prefix+"."+fe.Field, "%s", fe.Problem)
					} else {
						bad(prefix, "%v", e)
					}
				}
			} else {
				bad(prefix, "%v", err)
			}
		}
	}
	names := map[string]int{}
	for i, d := range c.Devices {
		key := fmt.Sprintf("devices[%d]", i)
		if err := checkDeviceName(d.Name); err != nil {
			bad(key+".name", "%v", err)
		} else if j, dup := names[d.Name]; dup {
			bad(key+".name", "%q repeats devices[%d]", d.Name, j)
		} else {
			names[d.Name] = i
		}
		basic := d.ClientID != "" || d.Username != "" || d.Password != ""
		switch {
		case d.Token != "" && basic:
			bad(key, "set either token or client_id/username/password, not both")
		case d.Token == "" && !basic:
			bad(key, "needs a token or client_id/username/password")
		case d.Password != "" && d.Username == "":
			bad(key+".password", "needs username (ThingsBoard does not allow a password with only a client id)")
		}
	}
	switch strings.ToLower(c.Logging.Level) {
	case "debug", "info", "warn", "error":
	default:
		bad("logging.level", "%q is not debug, info, warn or error", c.Logging.Level)
	}
	switch c.Logging.Format {
	case "text", "json":
	default:
		bad("logging.format", "%q is not text or json", c.Logging.Format)
	}
	return p
}

// checkTopicPair checks a request topic and its answers' topic: both
// valid names, and different.
func checkTopicPair(bad func(key, format string, args ...any), key, topic, answersKey, answers string) {
	if commitlog.ValidTopicName(topic) != nil {
		bad(key, "%q is not a valid topic name", topic)
	}
	if commitlog.ValidTopicName(answers) != nil {
		bad(answersKey, "%q is not a valid topic name (needed with %s)", answers, key)
	} else if answers == topic {
		bad(answersKey, "must differ from %s", key)
	}
}

// configuredPartitions counts the partitions of the topics log.topics sets.
func (c *Config) configuredPartitions() int {
	n := 0
	for _, tc := range c.Log.Topics {
		n += max(tc.Partitions, 1)
	}
	return n
}

// toLog converts a topic's settings to the log's config (validated).
func (tc TopicConfig) toLog() (commitlog.TopicConfig, error) {
	var errs []error
	codec, err := commitlog.ParseCompression(tc.Compression)
	if err != nil && tc.Compression != "" {
		errs = append(errs, &commitlog.FieldError{Field: "compression", Problem: fmt.Sprintf("%q is not none, gzip, snappy, lz4 or zstd", tc.Compression)})
	}
	if tc.Compression == "" {
		codec = commitlog.CompressionNone
	}
	c := commitlog.TopicConfig{
		Partitions: tc.Partitions, Flush: commitlog.FlushPolicy(tc.Flush), FlushInterval: tc.FlushInterval,
		Retention: tc.Retention, RetentionBytes: tc.RetentionBytes, OnFull: commitlog.OnFull(tc.OnFull),
		Compression: codec, Cleanup: commitlog.CleanupPolicy(tc.CleanupPolicy), SegmentBytes: tc.SegmentBytes,
	}
	c.EnsureDefaults()
	if err := c.Validate(); err != nil {
		errs = append(errs, err.(interface{ Unwrap() []error }).Unwrap()...)
	}
	return c, errors.Join(errs...)
}

// parseSize reads a byte count: a plain integer or one with a KiB, MiB or
// GiB suffix ("48MiB"). "0" or "" is zero.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	mult := int64(1)
	for suffix, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if strings.HasSuffix(s, suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, suffix)), m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (bytes, or a number with KiB, MiB or GiB)", s)
	}
	return n * mult, nil
}

// formatSize writes n the way parseSize reads it, in the largest unit that
// divides it.
func formatSize(n int64) string {
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.m && n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}
