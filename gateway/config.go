package main

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"

	"github.com/ferry-iot/ferry/bridge/kafka"
	"github.com/ferry-iot/ferry/broker/commands"
	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/kafkaserver"
	"github.com/ferry-iot/ferry/broker/kafkaserver/group"
	"github.com/ferry-iot/ferry/broker/mqtt"
	"github.com/ferry-iot/ferry/broker/streams"
	"github.com/ferry-iot/ferry/configs"
)

// Config is the daemon's configuration: embedded defaults, then an
// optional YAML file, then FERRY_<KEY> environment variables (dots become
// underscores: FERRY_MQTT_LISTEN=:2883; lists and maps too, see
// config_env.go and the head of configs/ferry.yaml), validated once at
// start-up. Each section is decoded straight into the struct of the
// package that owns it, which validates it and names its keys; the
// daemon's own sections are the few it owns (http, devices, rpc,
// logging), and it checks what spans sections.
type Config struct {
	NodeID       string             `mapstructure:"node_id"`
	DataDir      string             `mapstructure:"data_dir"`
	MemoryLimit  configs.Size       `mapstructure:"memory_limit"`
	GCPercent    GCPercent          `mapstructure:"gc_percent"`
	MQTT         mqtt.Config        `mapstructure:"mqtt"`
	HTTP         HTTPConfig         `mapstructure:"http"`
	Devices      []DeviceConfig     `mapstructure:"devices"`
	Buses        []BusConfig        `mapstructure:"buses"`
	Streams      []streams.Config   `mapstructure:"streams"`
	Provisioning mqtt.Provisioning  `mapstructure:"provisioning"`
	RPC          RPCConfig          `mapstructure:"rpc"`
	Kafka        KafkaConfig        `mapstructure:"kafka"`
	Commands     commands.Config    `mapstructure:"commands"`
	Bridges      BridgesConfig      `mapstructure:"bridges"`
	Log          commitlog.Settings `mapstructure:"log"`
	Storage      StorageConfig      `mapstructure:"storage"`
	Logging      LoggingConfig      `mapstructure:"logging"`
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
	// Source makes the device one an adapter reads (adapters.go); it
	// then needs no credentials.
	Source *SourceConfig `mapstructure:"source"`
}

// RPCConfig bounds server-side RPC and routes client-side RPC to a backend.
type RPCConfig struct {
	Timeout        time.Duration `mapstructure:"timeout"`
	ClientRequests string        `mapstructure:"client_requests"`
	ClientReplies  string        `mapstructure:"client_replies"`
	ClientTimeout  time.Duration `mapstructure:"client_timeout"`
}

// KafkaConfig is the kafka section: the listener's settings and its
// consumer groups' (the coordinator's).
type KafkaConfig struct {
	kafkaserver.Config `mapstructure:",squash"`
	Groups             group.Config `mapstructure:",squash"`
}

// BridgesConfig holds the upstream bridges.
type BridgesConfig struct {
	Kafka kafka.Settings `mapstructure:"kafka"`
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
	// knows when Unmarshal runs (docs/libraries.md#viper-env) and cannot say that an
	// override matches no setting.
	settings, envProblems := envSettings(environ, tree)
	problems = append(problems, envProblems...)
	problems = append(problems, applyEnv(tree, settings, userMaps)...)

	v := viper.New()
	if err := v.MergeConfigMap(tree); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var cfg Config
	decode := func(hook mapstructure.DecodeHookFunc) error {
		cfg = Config{}
		return v.Unmarshal(&cfg, func(dc *mapstructure.DecoderConfig) {
			dc.ErrorUnused = false
			dc.WeaklyTypedInput = true
			dc.DecodeHook = hook
		})
	}
	var undecoded []string // keys whose values did not decode
	if err := decode(decodeHooks()); err != nil {
		bad := decodeProblems(err)
		problems = append(problems, bad...)
		for _, b := range bad {
			undecoded = append(undecoded, strings.SplitN(b, ": ", 2)[0])
		}
		// mapstructure drops a whole map entry (a topic) when one of its
		// fields fails; decode again with those values as zero so the
		// rest of the entry is still validated, every problem at once.
		_ = decode(lenientHook(decodeHooks()))
	}
	if cfg.NodeID == "" {
		if h, err := os.Hostname(); err == nil {
			cfg.NodeID = h
		} else {
			cfg.NodeID = "ferry"
		}
	}
	for _, pr := range cfg.validate() {
		key := strings.SplitN(pr, ": ", 2)[0]
		if !slices.ContainsFunc(undecoded, func(u string) bool { return key == u || strings.HasPrefix(u, key+".") }) {
			problems = append(problems, pr) // not a repeat of a value already reported as undecodable
		}
	}
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

// unknownKeysIn names every key of a settings tree (at key path) that
// type t has no setting for — found by decoding the tree with
// mapstructure's metadata — and every map entry whose name holds a '.'
// (the key separator: viper would read log.topics.a.b as topic a, field
// b). Type mismatches are left to the real decoding, which reports them.
func unknownKeysIn(node any, t reflect.Type, path string) []string {
	var md mapstructure.Metadata
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Metadata: &md, Result: reflect.New(t).Interface(), WeaklyTypedInput: true,
		// mapstructure records no unused keys of a struct one of whose
		// fields failed: bad values decode as zero here.
		DecodeHook: lenientHook(decodeHooks()),
	})
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", path, err)}
	}
	_ = dec.Decode(node)
	var out []string
	for _, k := range md.Unused {
		out = append(out, joinKey(path, strings.TrimPrefix(metadataKey(k), "."))+": unknown key")
	}
	return append(out, dottedNames(node, t, path)...)
}

// metadataKey turns mapstructure's key path (m[name].field, l[0].field)
// into the configuration's (m.name.field, l[0].field).
func metadataKey(k string) string {
	var b strings.Builder
	for {
		open := strings.IndexByte(k, '[')
		if open < 0 {
			b.WriteString(k)
			return b.String()
		}
		end := strings.IndexByte(k[open:], ']')
		if end < 0 {
			b.WriteString(k)
			return b.String()
		}
		name := k[open+1 : open+end]
		b.WriteString(k[:open])
		if _, err := strconv.Atoi(name); err == nil {
			b.WriteString("[" + name + "]")
		} else {
			b.WriteString("." + name)
		}
		k = k[open+end+1:]
	}
}

// dottedNames names the entries of the tree's maps whose names hold a '.'.
func dottedNames(node any, t reflect.Type, path string) []string {
	var out []string
	switch t.Kind() {
	case reflect.Struct:
		m, _ := node.(map[string]any)
		for _, f := range settingFields(t) {
			if child, ok := m[f.name]; ok {
				out = append(out, dottedNames(child, f.typ, joinKey(path, f.name))...)
			}
		}
	case reflect.Map:
		m, _ := node.(map[string]any)
		for k, child := range m {
			if strings.Contains(k, ".") {
				out = append(out, fmt.Sprintf("%s.%s: a name here may not contain '.'", path, k))
				continue
			}
			out = append(out, dottedNames(child, t.Elem(), path+"."+k)...)
		}
	case reflect.Slice:
		l, _ := node.([]any)
		for i, child := range l {
			out = append(out, dottedNames(child, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
		}
	}
	return out
}

// decodeProblems lists mapstructure's decoding errors one per setting,
// as "key: problem".
func decodeProblems(err error) []string {
	inner := errors.Unwrap(err) // "decoding failed due to the following error(s)"
	if inner == nil {
		return []string{err.Error()}
	}
	var out []string
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, c := range j.Unwrap() {
				walk(c)
			}
			return
		}
		var de *mapstructure.DecodeError
		if errors.As(e, &de) {
			out = append(out, metadataKey(de.Name())+": "+errors.Unwrap(de).Error())
			return
		}
		out = append(out, e.Error())
	}
	walk(inner)
	return out
}

// decodeHooks turn the tree's text into settings: durations ("500ms"),
// sizes and codecs (encoding.TextUnmarshaler: "4MiB", "zstd") and lists of
// strings written as one string ("a:1, b:2").
func decodeHooks() mapstructure.DecodeHookFunc {
	return mapstructure.ComposeDecodeHookFunc(mapstructure.StringToTimeDurationHookFunc(),
		mapstructure.TextUnmarshallerHookFunc(), stringToListHook)
}

// lenientHook is hook that turns values which do not decode into their
// setting's zero value instead of failing, for the second decoding after
// the first reported them.
func lenientHook(hook mapstructure.DecodeHookFunc) mapstructure.DecodeHookFuncValue {
	return func(from, to reflect.Value) (any, error) {
		out, err := mapstructure.DecodeHookExec(hook, from, to)
		if err != nil {
			return reflect.Zero(to.Type()).Interface(), nil
		}
		str, ok := out.(string)
		if !ok {
			return out, nil
		}
		var perr error
		switch to.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			_, perr = strconv.ParseInt(str, 0, 64)
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			_, perr = strconv.ParseUint(str, 0, 64)
		case reflect.Float32, reflect.Float64:
			_, perr = strconv.ParseFloat(str, 64)
		case reflect.Bool:
			_, perr = strconv.ParseBool(str)
		case reflect.Slice, reflect.Map, reflect.Struct:
			perr = errors.New("not a list or mapping")
		}
		if perr != nil && str != "" {
			return reflect.Zero(to.Type()).Interface(), nil
		}
		return out, nil
	}
}

// validate checks every section, each by its owner, with its keys
// prefixed, and what spans sections; it returns every problem at once.
func (c *Config) validate() []string {
	var p configs.Problems
	if c.DataDir == "" {
		p.Add("data_dir", "must not be empty")
	}
	p.Nest("mqtt", c.MQTT.Validate())
	p.CheckAddr("http.listen", c.HTTP.Listen, true)
	if c.HTTP.MaxConnections < 1 {
		p.Add("http.max_connections", "%d must be at least 1", c.HTTP.MaxConnections)
	}
	p.Nest("provisioning", c.Provisioning.Validate())
	if c.RPC.Timeout <= 0 {
		p.Add("rpc.timeout", "%v must be positive", c.RPC.Timeout)
	}
	if c.RPC.ClientRequests != "" {
		checkTopicPair(&p, "rpc.client_requests", c.RPC.ClientRequests, "rpc.client_replies", c.RPC.ClientReplies)
		if c.RPC.ClientTimeout <= 0 {
			p.Add("rpc.client_timeout", "%v must be positive", c.RPC.ClientTimeout)
		}
	}
	if c.Kafka.Listen != "" {
		p.Nest("kafka", c.Kafka.Config.Validate())
		p.Nest("kafka", c.Kafka.Groups.Validate())
	}
	if c.Commands.Topic != "" {
		checkTopicPair(&p, "commands.topic", c.Commands.Topic, "commands.responses", c.Commands.Responses)
		cc := c.Commands
		cc.Timeout = c.RPC.Timeout
		p.Nest("commands", cc.Validate())
	}
	c.validateKafkaBridge(&p)
	p.Nest("log", c.Log.Validate())
	if c.Storage.Endurance < 0 {
		p.Add("storage.endurance", "%v is negative", c.Storage.Endurance)
	}
	for _, name := range []string{"telemetry", "attributes"} {
		if _, ok := c.Log.Topics[name]; !ok {
			p.Add("log.topics."+name, "is required")
		}
	}
	names := map[string]int{}
	for i, d := range c.Devices {
		key := fmt.Sprintf("devices[%d]", i)
		if err := checkDeviceName(d.Name); err != nil {
			p.Add(key+".name", "%v", err)
		} else if j, dup := names[d.Name]; dup {
			p.Add(key+".name", "%q repeats devices[%d]", d.Name, j)
		} else {
			names[d.Name] = i
		}
		basic := d.ClientID != "" || d.Username != "" || d.Password != ""
		switch {
		case d.Token != "" && basic:
			p.Add(key, "set either token or client_id/username/password, not both")
		case d.Token == "" && !basic && d.Source == nil:
			p.Add(key, "needs a token or client_id/username/password (or a source: an adapter reads it)")
		case d.Password != "" && d.Username == "":
			p.Add(key+".password", "needs username (ThingsBoard does not allow a password with only a client id)")
		}
	}
	c.validateAdapters(&p)
	c.validateStreams(&p)
	if c.GCPercent != GCAuto && (c.GCPercent < 10 || c.GCPercent > 1000) {
		p.Add("gc_percent", "%d is not auto or within 10-1000", c.GCPercent)
	}
	switch strings.ToLower(c.Logging.Level) {
	case "debug", "info", "warn", "error":
	default:
		p.Add("logging.level", "%q is not debug, info, warn or error", c.Logging.Level)
	}
	switch c.Logging.Format {
	case "text", "json":
	default:
		p.Add("logging.format", "%q is not text or json", c.Logging.Format)
	}
	return configs.Lines(p.Err())
}

// checkTopicPair checks a request topic and its answers' topic: both
// valid names, and different.
func checkTopicPair(p *configs.Problems, key, topic, answersKey, answers string) {
	bad := p.Add
	if commitlog.ValidTopicName(topic) != nil {
		bad(key, "%q is not a valid topic name", topic)
	}
	if commitlog.ValidTopicName(answers) != nil {
		bad(answersKey, "%q is not a valid topic name (needed with %s)", answers, key)
	} else if answers == topic {
		bad(answersKey, "must differ from %s", key)
	}
}
