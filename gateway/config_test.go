package main

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/kafkaserver"
	"github.com/ferry-iot/ferry/broker/mqtt"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := LoadConfig("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "./data" || cfg.MQTT.Listen != ":1883" || cfg.HTTP.Listen != ":8080" || cfg.MQTT.MaxPayload != 65536 {
		t.Fatalf("defaults: %+v", cfg)
	}
	if cfg.NodeID == "" {
		t.Fatal("node_id does not default to the host name")
	}
	tel := cfg.Log.Topics["telemetry"]
	if tel.Flush != "always" || tel.Compression != commitlog.CompressionZstd || tel.Retention != 168*time.Hour || tel.Partitions != 1 {
		t.Fatalf("telemetry topic defaults: %+v", tel)
	}
	if cfg.MQTT.AllowAnonymous {
		t.Fatal("anonymous clients allowed by default")
	}
	if cfg.Kafka.Listen != "127.0.0.1:9092" {
		t.Fatalf("kafka.listen %q, want the loopback default 127.0.0.1:9092", cfg.Kafka.Listen)
	}
	if cfg.Commands.Topic != "commands" || cfg.Commands.Responses != "rpc_responses" || cfg.Commands.Expiry != time.Hour {
		t.Fatalf("commands defaults: %+v", cfg.Commands)
	}
	kb := cfg.Bridges.Kafka
	if len(kb.Brokers) != 0 || kb.Delivery != "exactly_once" || kb.MaxBatchBytes != 4<<20 || kb.MaxBatchRecords != 50000 ||
		kb.Linger != 50*time.Millisecond || kb.LiveThreshold != 10000 || kb.Order != "oldest_first" {
		t.Fatalf("bridges.kafka defaults: %+v", kb)
	}
	if len(cfg.Devices) != 0 || len(cfg.Kafka.SASLUsers) != 0 || cfg.Provisioning != (mqtt.Provisioning{}) {
		t.Fatalf("devices %v, kafka.sasl_users %v, provisioning %+v: want none", cfg.Devices, cfg.Kafka.SASLUsers, cfg.Provisioning)
	}
}

func TestConfigFileAndEnvironment(t *testing.T) {
	file := writeConfig(t, `
data_dir: /var/lib/ferry
mqtt:
  max_payload: 1024
devices:
  - {name: boiler-1, token: T1, type: boiler}
  - {name: gw, client_id: c, username: u, password: p, gateway: true}
log:
  topics:
    telemetry:
      partitions: 2
    alarms:
      partitions: 1
      flush: interval
`)
	env := []string{
		"FERRY_MQTT_LISTEN=:2883",                    // absent from the file
		"FERRY_HTTP_ADMIN_TOKEN=secret",              // absent from the file
		"FERRY_LOG_TOPICS_TELEMETRY_FLUSH=never",     // nested, absent from the file
		"FERRY_LOG_TOPICS_ALARMS_RETENTION=1h",       // a topic only the file names
		"FERRY_MQTT_MAX_PAYLOAD=2048",                // present in the file: env wins
		"FERRY_LOG_RETENTION_INTERVAL=10s",           // key with an underscore in its name
		"PATH=/usr/bin", "NOT_FERRY_MQTT_LISTEN=:99", // ignored
	}
	cfg, err := LoadConfig(file, env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MQTT.Listen != ":2883" || cfg.HTTP.AdminToken != "secret" || cfg.MQTT.MaxPayload != 2048 || cfg.DataDir != "/var/lib/ferry" {
		t.Fatalf("overrides: %+v", cfg)
	}
	if cfg.Log.RetentionInterval != 10*time.Second {
		t.Fatalf("log.retention_interval %v", cfg.Log.RetentionInterval)
	}
	tel := cfg.Log.Topics["telemetry"]
	if tel.Partitions != 2 || tel.Flush != "never" || tel.Compression != commitlog.CompressionZstd {
		t.Fatalf("telemetry merged from defaults, file and env: %+v", tel)
	}
	if a := cfg.Log.Topics["alarms"]; a.Flush != "interval" || a.Retention != time.Hour {
		t.Fatalf("alarms topic: %+v", a)
	}
	if len(cfg.Devices) != 2 || cfg.Devices[1].Username != "u" || !cfg.Devices[1].Gateway {
		t.Fatalf("devices: %+v", cfg.Devices)
	}
}

func TestConfigReportsEveryProblemWithItsKey(t *testing.T) {
	file := writeConfig(t, `
mqtt:
  lisen: ":1"
  listen: "nonsense"
  max_payload: 1
http:
  listen: ""
devices:
  - {name: a}
  - {name: a, token: x, username: y}
  - {name: b, client_id: c, password: p}
provisioning:
  key: only-key
log:
  min_free_ratio: 2
  topics:
    telemetry:
      flush: sometimes
      compression: brotli
      on_full: explode
bogus: 1
`)
	_, err := LoadConfig(file, []string{"FERRY_MQTT_LISTN=:1"})
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("got %v", err)
	}
	want := []string{
		"mqtt.lisen: unknown key", "bogus: unknown key", "mqtt.listen:", "mqtt.max_payload:", "http.listen:",
		"devices[0]: needs a token", "devices[1].name:", "devices[1]: set either token", "devices[2].password:",
		"provisioning.secret: is required with provisioning.key", "log.min_free_ratio:", "log.topics.telemetry.flush:", "log.topics.telemetry.compression:",
		"log.topics.telemetry.on_full:", "FERRY_MQTT_LISTN: no such setting",
	}
	msg := err.Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("missing %q in:\n%s", w, strings.Join(ce.Problems, "\n"))
		}
	}
	if len(ce.Problems) < len(want) {
		t.Errorf("%d problems reported, want at least %d", len(ce.Problems), len(want))
	}
}

// TestConfigEnvListsAndMaps: every key can be set from the environment,
// lists (comma-separated strings, YAML/JSON flow lists of settings) and
// entries of user-named maps included, whether or not the defaults or the
// file name them.
// TestConfigFileListString: a string where a list of strings belongs is
// split as the environment splits it (commas, items trimmed, empty ones
// dropped), so `brokers: "a:1, b:2"` does not yield a broker " b:2".
func TestConfigFileListString(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, "bridges:\n  kafka:\n    brokers: \"127.0.0.1:9092, 127.0.0.1:9093,\"\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Bridges.Kafka.Brokers; !slices.Equal(got, []string{"127.0.0.1:9092", "127.0.0.1:9093"}) {
		t.Fatalf("brokers %q", got)
	}
}

func TestConfigEnvListsAndMaps(t *testing.T) {
	file := writeConfig(t, `
log:
  topics:
    site-1:
      partitions: 2
`)
	env := []string{
		`FERRY_DEVICES=[{"name":"a","token":"t"},{"name":"gw","client_id":"c","username":"u","password":"p","gateway":true}]`,
		`FERRY_KAFKA_SASL_USERS=[{username: backend, password: secret}]`, // YAML flow
		`FERRY_BRIDGES_KAFKA_BROKERS=127.0.0.1:9092, 127.0.0.1:9093`,
		`FERRY_LOG_TOPICS_ALARMS_PARTITIONS=3`,                // a topic neither the defaults nor the file name
		`FERRY_LOG_TOPICS_PLANT_ALARMS_FLUSH_INTERVAL=250ms`,  // underscores in the name and in the field
		`FERRY_LOG_TOPICS_PLANT_ALARMS_FLUSH=interval`,        // the shorter field of the same topic
		`FERRY_LOG_TOPICS_FLUSH_RETENTION_BYTES=1024`,         // a topic named like a field
		`FERRY_LOG_TOPICS_SITE_1_RETENTION=2h`,                // site-1 from the file, '-' spelled '_'
		`FERRY_BRIDGES_KAFKA_TOPICS_ALARMS=site1.alarms`,      // a bridge mapping entry
		`FERRY_BRIDGES_KAFKA_TOPICS_PLANT_ALARMS=site1.plant`, // an entry whose name has an underscore
		`FERRY_BRIDGES_KAFKA_MAX_BATCH_RECORDS=1000`,          // a key with underscores under a section
		`FERRY_COMMANDS_TOPIC=`,                               // empty: set to empty (commands off)
	}
	cfg, err := LoadConfig(file, env)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Devices) != 2 || cfg.Devices[0] != (DeviceConfig{Name: "a", Token: "t"}) ||
		cfg.Devices[1] != (DeviceConfig{Name: "gw", ClientID: "c", Username: "u", Password: "p", Gateway: true}) {
		t.Fatalf("devices: %+v", cfg.Devices)
	}
	if len(cfg.Kafka.SASLUsers) != 1 || cfg.Kafka.SASLUsers[0] != (kafkaserver.SASLUser{Username: "backend", Password: "secret"}) {
		t.Fatalf("kafka.sasl_users: %+v", cfg.Kafka.SASLUsers)
	}
	if b := cfg.Bridges.Kafka.Brokers; len(b) != 2 || b[0] != "127.0.0.1:9092" || b[1] != "127.0.0.1:9093" {
		t.Fatalf("bridges.kafka.brokers: %q", b)
	}
	if tc, ok := cfg.Log.Topics["alarms"]; !ok || tc.Partitions != 3 {
		t.Fatalf("log.topics.alarms: %+v (topics %v)", tc, cfg.Log.Topics)
	}
	if tc := cfg.Log.Topics["plant_alarms"]; tc.FlushInterval != 250*time.Millisecond || tc.Flush != "interval" {
		t.Fatalf("log.topics.plant_alarms: %+v (topics %v)", tc, cfg.Log.Topics)
	}
	if tc, ok := cfg.Log.Topics["flush"]; !ok || tc.RetentionBytes != 1024 {
		t.Fatalf("log.topics.flush: %+v (topics %v)", tc, cfg.Log.Topics)
	}
	if tc := cfg.Log.Topics["site-1"]; tc.Partitions != 2 || tc.Retention != 2*time.Hour {
		t.Fatalf("log.topics.site-1: %+v (topics %v)", tc, cfg.Log.Topics)
	}
	if _, ok := cfg.Log.Topics["site_1"]; ok {
		t.Fatal("FERRY_LOG_TOPICS_SITE_1_RETENTION created topic site_1 next to site-1")
	}
	want := map[string]string{"alarms": "site1.alarms", "plant_alarms": "site1.plant"}
	if got := cfg.Bridges.Kafka.Topics; !reflect.DeepEqual(got, want) {
		t.Fatalf("bridges.kafka.topics: %v, want %v (environment entries replace the defaults' mapping)", got, want)
	}
	if cfg.Bridges.Kafka.MaxBatchRecords != 1000 || cfg.Commands.Topic != "" {
		t.Fatalf("max_batch_records %d, commands.topic %q", cfg.Bridges.Kafka.MaxBatchRecords, cfg.Commands.Topic)
	}
	// With both spellings in the file, the exact one is meant.
	cfg, err = LoadConfig(writeConfig(t, "log:\n  topics:\n    a-b: {partitions: 2}\n    a_b: {partitions: 2}\n"),
		[]string{"FERRY_LOG_TOPICS_A_B_PARTITIONS=5"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Log.Topics["a_b"].Partitions != 5 || cfg.Log.Topics["a-b"].Partitions != 2 {
		t.Fatalf("a_b %+v, a-b %+v", cfg.Log.Topics["a_b"], cfg.Log.Topics["a-b"])
	}
	if _, err := LoadConfig("", []string{"FERRY_LOG_TOPICS_A.B_PARTITIONS=5"}); err == nil || !strings.Contains(err.Error(), "FERRY_LOG_TOPICS_A.B_PARTITIONS: no such setting") {
		t.Fatalf("a '.' in a variable's topic name: %v", err)
	}
}

// TestConfigEnvMalformed: a value that does not parse as its setting's
// type is a problem naming the variable and the key.
func TestConfigEnvMalformed(t *testing.T) {
	env := []string{
		`FERRY_DEVICES=[{"name":"a",`,
		`FERRY_KAFKA_SASL_USERS={"username":"a"}`,
		`FERRY_BRIDGES_KAFKA_TOPICS=[a, b]`,
		`FERRY_MQTT_MAX_PAYLOAD=big`,
		`FERRY_RPC_TIMEOUT=soon`,
		`FERRY_MQTT_ALLOW_ANONYMOUS=maybe`,
		`FERRY_LOG_TOPICS_ALARMS_PARTITONS=3`, // typo in the field: no such setting
		`FERRY_LOG_TOPICS_ALARMS_PARTITIONS=three`,
		`FERRY_BRIDGES_KAFKA_BROKERS=[[a]]`,
	}
	_, err := LoadConfig(writeConfig(t, "devices: []\n"), append(env, `FERRY_HTTP_LISTEN=:1`))
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("got %v", err)
	}
	for _, w := range []string{
		"FERRY_DEVICES (devices): not a YAML or JSON list",
		"FERRY_KAFKA_SASL_USERS (kafka.sasl_users): not a YAML or JSON list (a mapping)",
		"FERRY_BRIDGES_KAFKA_TOPICS (bridges.kafka.topics): not a YAML or JSON mapping (a list)",
		`FERRY_MQTT_MAX_PAYLOAD (mqtt.max_payload): "big" is not an integer`,
		`FERRY_RPC_TIMEOUT (rpc.timeout): "soon" is not a duration`,
		`FERRY_MQTT_ALLOW_ANONYMOUS (mqtt.allow_anonymous): "maybe" is not true or false`,
		"FERRY_LOG_TOPICS_ALARMS_PARTITONS: no such setting",
		`FERRY_LOG_TOPICS_ALARMS_PARTITIONS (log.topics.alarms.partitions): "three" is not an integer`,
		"FERRY_BRIDGES_KAFKA_BROKERS (bridges.kafka.brokers): item 0 is a list, not a string",
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%s", w, strings.Join(ce.Problems, "\n"))
		}
	}
	if len(ce.Problems) != len(env) {
		t.Errorf("%d problems, want %d:\n%s", len(ce.Problems), len(env), strings.Join(ce.Problems, "\n"))
	}

	// Settings inside a list or map value are checked like a file's.
	_, err = LoadConfig("", []string{`FERRY_DEVICES=[{nmae: a, token: t}]`, `FERRY_LOG_TOPICS={alarms: {partitons: 2}}`})
	for _, w := range []string{"FERRY_DEVICES: devices[0].nmae: unknown key", "FERRY_LOG_TOPICS: log.topics.alarms.partitons: unknown key"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in %v", w, err)
		}
	}
}

// TestConfigBridgeTopicsReplaceDefaults: a user's bridges.kafka.topics
// (file or environment) is the whole mapping; the defaults' telemetry and
// attributes entries do not survive it. log.topics still merges per topic.
func TestConfigBridgeTopicsReplaceDefaults(t *testing.T) {
	defaults, err := LoadConfig("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"telemetry": "ferry.telemetry", "attributes": "ferry.attributes"}; !reflect.DeepEqual(defaults.Bridges.Kafka.Topics, want) {
		t.Fatalf("default mapping %v", defaults.Bridges.Kafka.Topics)
	}
	cases := []struct {
		name, file string
		env        []string
		want       map[string]string
	}{
		{"file narrows", "bridges:\n  kafka:\n    topics:\n      telemetry: site1.telemetry\n", nil,
			map[string]string{"telemetry": "site1.telemetry"}},
		{"file empties", "bridges:\n  kafka:\n    topics: {}\n", nil, map[string]string{}},
		{"file null empties", "bridges:\n  kafka:\n    topics:\n", nil, map[string]string{}},
		{"env entry narrows", "", []string{"FERRY_BRIDGES_KAFKA_TOPICS_TELEMETRY=site1.telemetry"},
			map[string]string{"telemetry": "site1.telemetry"}},
		{"env whole map", "", []string{`FERRY_BRIDGES_KAFKA_TOPICS={"attributes":"site1.attributes"}`},
			map[string]string{"attributes": "site1.attributes"}},
		{"env whole then entry", "", []string{"FERRY_BRIDGES_KAFKA_TOPICS_TELEMETRY=t2", `FERRY_BRIDGES_KAFKA_TOPICS={attributes: a2}`},
			map[string]string{"attributes": "a2", "telemetry": "t2"}},
		{"env entry edits the file's mapping", "bridges:\n  kafka:\n    topics: {telemetry: a, attributes: b}\n",
			[]string{"FERRY_BRIDGES_KAFKA_TOPICS_ATTRIBUTES=c"}, map[string]string{"telemetry": "a", "attributes": "c"}},
		{"env whole map replaces the file's", "bridges:\n  kafka:\n    topics: {telemetry: a, attributes: b}\n",
			[]string{"FERRY_BRIDGES_KAFKA_TOPICS={telemetry: x}"}, map[string]string{"telemetry": "x"}},
		{"other bridge keys keep the default mapping", "bridges:\n  kafka:\n    delivery: at_least_once\n", nil,
			map[string]string{"telemetry": "ferry.telemetry", "attributes": "ferry.attributes"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			file := ""
			if c.file != "" {
				file = writeConfig(t, c.file)
			}
			cfg, err := LoadConfig(file, c.env)
			if err != nil {
				t.Fatal(err)
			}
			got := cfg.Bridges.Kafka.Topics
			if got == nil {
				got = map[string]string{}
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("bridges.kafka.topics %v, want %v", got, c.want)
			}
			// log.topics keeps merging: both required topics stay, with their defaults.
			if tel := cfg.Log.Topics["telemetry"]; tel.Flush != "always" || cfg.Log.Topics["attributes"].Compression != commitlog.CompressionZstd {
				t.Fatalf("log.topics lost its defaults: %+v", cfg.Log.Topics)
			}
		})
	}

	// The exact case of the bug: with brokers set, narrowing to telemetry
	// means the bridge replicates telemetry only.
	cfg, err := LoadConfig(writeConfig(t, `
bridges:
  kafka:
    brokers: ["127.0.0.1:9092"]
    topics:
      telemetry: site1.telemetry
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"telemetry": "site1.telemetry"}; !reflect.DeepEqual(cfg.Bridges.Kafka.Topics, want) {
		t.Fatalf("bridge replicates %v, want %v", cfg.Bridges.Kafka.Topics, want)
	}
}

// TestConfigDottedMapKeys: a '.' in a topic name would be read as a key
// separator; it is reported instead of silently becoming another topic.
func TestConfigDottedMapKeys(t *testing.T) {
	_, err := LoadConfig(writeConfig(t, "log:\n  topics:\n    site.alarms: {partitions: 2}\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "log.topics.site.alarms: a name here may not contain '.'") {
		t.Fatalf("got %v", err)
	}
}

// TestConfigProvisioningNamesTheMissingKey: half a provisioning pair names
// the half that is missing.
func TestConfigProvisioningNamesTheMissingKey(t *testing.T) {
	for _, c := range []struct{ file, want string }{
		{"provisioning: {key: k}\n", "provisioning.secret: is required with provisioning.key"},
		{"provisioning: {secret: s}\n", "provisioning.key: is required with provisioning.secret"},
	} {
		_, err := LoadConfig(writeConfig(t, c.file), nil)
		var ce *ConfigError
		if !errors.As(err, &ce) || len(ce.Problems) != 1 || !strings.HasPrefix(ce.Problems[0], c.want) {
			t.Errorf("%q: got %v, want one problem %q", c.file, err, c.want)
		}
	}
	if _, err := LoadConfig(writeConfig(t, "provisioning: {key: k, secret: s}\n"), nil); err != nil {
		t.Fatal(err)
	}
}

// TestConfigKafkaBridgeValidation: every problem of bridges.kafka is
// reported, at once, with its full key.
func TestConfigKafkaBridgeValidation(t *testing.T) {
	certFile, keyFile := selfSigned(t)
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	const valid = `
bridges:
  kafka:
    brokers: ["127.0.0.1:9092"]
`
	cases := []struct {
		name string
		yaml string   // bridges.kafka settings, indented under "kafka:"
		env  []string // more settings
		want []string // problem prefixes, exactly these
	}{
		{"defaults with brokers are valid", "", nil, nil},
		{"at least once, every option", `
    delivery: at_least_once
    order: live_first
    compression: lz4
    sasl: {mechanism: SCRAM-SHA-512, username: u, password: p}
    tls: {enabled: true, ca_file: ` + certFile + `, cert_file: ` + certFile + `, key_file: ` + keyFile + `}
    rate_limit: 64KiB
    max_batch_bytes: 1MiB
    max_batch_records: 10
    linger: 0s
    live_threshold: 1
`, nil, nil},
		{"broker forms", "", []string{"FERRY_BRIDGES_KAFKA_BROKERS=kafka-1,:9092,h:0,h:port,[::1]:9092,h:65536"}, []string{
			"bridges.kafka.brokers[0]: \"kafka-1\" is not host:port",
			"bridges.kafka.brokers[1]: \":9092\" has no host",
			"bridges.kafka.brokers[2]: \"h:0\": port",
			"bridges.kafka.brokers[3]: \"h:port\": port",
			"bridges.kafka.brokers[5]: \"h:65536\": port",
		}},
		{"delivery typo", "    delivery: exactly-once\n", nil, []string{"bridges.kafka.delivery: \"exactly-once\" is not exactly_once or at_least_once"}},
		{"order and compression typos", "    order: newest_first\n    compression: brotli\n", nil, []string{
			"bridges.kafka.compression: \"brotli\"", "bridges.kafka.order: \"newest_first\"",
		}},
		{"sasl mechanism typo", "    sasl: {mechanism: scram-sha-1, username: u, password: p}\n", nil, []string{
			"bridges.kafka.sasl.mechanism: \"scram-sha-1\" is not plain, scram-sha-256 or scram-sha-512",
		}},
		{"sasl without credentials", "    sasl: {mechanism: plain}\n", nil, []string{
			"bridges.kafka.sasl.password: is required", "bridges.kafka.sasl.username: is required",
		}},
		{"sasl credentials without mechanism", "    sasl: {username: u, password: p}\n", nil, []string{"bridges.kafka.sasl.mechanism: is empty"}},
		{"tls files", "    tls: {enabled: true, ca_file: " + notPEM + ", cert_file: " + missing + ", key_file: " + keyFile + "}\n", nil, []string{
			"bridges.kafka.tls.ca_file: " + notPEM + " holds no PEM certificate",
			"bridges.kafka.tls.cert_file: with tls.key_file: open " + missing,
		}},
		{"tls missing ca file", "    tls: {enabled: true, ca_file: " + missing + "}\n", nil, []string{"bridges.kafka.tls.ca_file: open " + missing}},
		{"tls key without cert", "    tls: {enabled: true, key_file: " + keyFile + "}\n", nil, []string{"bridges.kafka.tls.cert_file: is required with bridges.kafka.tls.key_file"}},
		{"tls files while disabled", "    tls: {ca_file: " + certFile + ", insecure_skip_verify: true}\n", nil, []string{
			"bridges.kafka.tls.ca_file: is set but bridges.kafka.tls.enabled is false",
			"bridges.kafka.tls.insecure_skip_verify: is set but bridges.kafka.tls.enabled is false",
		}},
		{"topic mapping errors", "    topics: {telemetry: \"\", attributes: \"bad topic\", alarms: up.alarms, rpc_responses: ferry.checkpoints}\n", nil, []string{
			"bridges.kafka.topics.alarms: is not a log topic (log.topics.alarms)",
			"bridges.kafka.topics.attributes: upstream topic \"bad topic\" is not a Kafka topic name",
			"bridges.kafka.topics.rpc_responses: upstream topic \"ferry.checkpoints\" is bridges.kafka.checkpoint_topic",
			"bridges.kafka.topics.telemetry: upstream topic name is empty",
		}},
		{"upstream names by Kafka's rule, not the edge log's", "    topics: {telemetry: " + strings.Repeat("u", 249) + ", attributes: " + strings.Repeat("u", 250) +
			", rpc_responses: \".\"}\n", nil, []string{
			"bridges.kafka.topics.attributes: upstream topic \"" + strings.Repeat("u", 250) + "\" is not a Kafka topic name",
			"bridges.kafka.topics.rpc_responses: upstream topic \".\" is not a Kafka topic name",
		}},
		{"no mapping", "    topics: {}\n", nil, []string{"bridges.kafka.topics: must map at least one log topic"}},
		{"checkpoint topic", "    checkpoint_topic: \"..\"\n", nil, []string{"bridges.kafka.checkpoint_topic: \"..\" is not a Kafka topic name"}},
		{"rejected topic name", "    rejected_topic: \"no space\"\n", nil, []string{"bridges.kafka.rejected_topic: \"no space\""}},
		{"rejected topic replicated", "    rejected_topic: telemetry\n", nil, []string{"bridges.kafka.topics.telemetry: is bridges.kafka.rejected_topic"}},
		{"sizes and counts", "    rate_limit: fast\n    max_batch_bytes: 1KiB\n    max_batch_records: 0\n    live_threshold: 0\n", nil, []string{
			"bridges.kafka.live_threshold: 0 must be at least 1",
			"bridges.kafka.max_batch_bytes: \"1KiB\" is not a size within 64KiB..64MiB",
			"bridges.kafka.max_batch_records: 0 is outside 1..1000000",
			"bridges.kafka.rate_limit: \"fast\" is not a size",
		}},
		{"timing", "    stall_timeout: 0s\n    linger: -1s\n    backoff: 10s\n    max_backoff: 1s\n", nil, []string{
			"bridges.kafka.linger: -1s is outside [0, bridges.kafka.stall_timeout 0s)",
			"bridges.kafka.max_backoff: 1s is below bridges.kafka.backoff 10s",
			"bridges.kafka.stall_timeout: 0s must be positive",
		}},
		{"linger not below stall timeout", "    stall_timeout: 1s\n    linger: 1s\n", nil, []string{"bridges.kafka.linger: 1s is outside"}},
		{"two batches exceed a quarter of memory_limit", "    max_batch_bytes: 8MiB\n", nil, []string{
			"bridges.kafka.max_batch_bytes: 8MiB: two batches (one in flight, the next read ahead) exceed a quarter of memory_limit 48MiB; lower bridges.kafka.max_batch_bytes to at most 6MiB or raise memory_limit",
		}},
		{"a larger memory_limit allows larger batches", "    max_batch_bytes: 8MiB\n", []string{"FERRY_MEMORY_LIMIT=64MiB"}, nil},
		{"no memory_limit: no bound from it", "    max_batch_bytes: 64MiB\n", []string{"FERRY_MEMORY_LIMIT=0"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := LoadConfig(writeConfig(t, valid+c.yaml), c.env)
			checkProblems(t, err, c.want)
		})
	}
	// Every problem at once: the broker, delivery, SASL, TLS, topic and
	// size problems of one file come back together.
	all := []string{
		"bridges.kafka.brokers[0]: \"kafka-1\" is not host:port",
		"bridges.kafka.delivery: \"exactly-once\"",
		"bridges.kafka.sasl.mechanism: \"scram-sha-1\"",
		"bridges.kafka.tls.ca_file: " + notPEM + " holds no PEM certificate",
		"bridges.kafka.tls.cert_file: with tls.key_file: open " + missing,
		"bridges.kafka.topics.alarms: is not a log topic",
		"bridges.kafka.topics.telemetry: upstream topic name is empty",
		"bridges.kafka.max_batch_records: 0 is outside 1..1000000",
		"bridges.kafka.max_batch_bytes: 16MiB: two batches",
		"bridges.kafka.linger: 2m0s is outside",
		"bridges.kafka.max_backoff: 1s is below",
	}
	_, err := LoadConfig(writeConfig(t, `
bridges:
  kafka:
    brokers: ["kafka-1"]
    delivery: exactly-once
    sasl: {mechanism: scram-sha-1, username: u, password: p}
    tls: {enabled: true, ca_file: `+notPEM+`, cert_file: `+missing+`, key_file: `+keyFile+`}
    topics: {telemetry: "", alarms: up.alarms}
    max_batch_records: 0
    max_batch_bytes: 16MiB
    linger: 2m
    backoff: 10s
    max_backoff: 1s
`), nil)
	checkProblems(t, err, all)
}

// checkProblems asserts that err is a ConfigError with exactly the
// problems that start with want's entries (none: no error).
func checkProblems(t *testing.T, err error, want []string) {
	t.Helper()
	if len(want) == 0 {
		if err != nil {
			t.Fatalf("unexpected: %v", err)
		}
		return
	}
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want problems %q", err, want)
	}
	got := strings.Join(ce.Problems, "\n")
	for _, w := range want {
		found := false
		for _, p := range ce.Problems {
			found = found || strings.HasPrefix(p, w)
		}
		if !found {
			t.Errorf("missing %q in:\n%s", w, got)
		}
	}
	if len(ce.Problems) != len(want) {
		t.Errorf("%d problems, want %d:\n%s", len(ce.Problems), len(want), got)
	}
}

// FuzzLoadConfig: any file and any FERRY_ variable give a configuration
// or a config error (a ConfigError naming keys, or a config: error about
// the file), never a panic.
func FuzzLoadConfig(f *testing.F) {
	f.Add("mqtt: {listen: \":1\"}\n", "LOG_TOPICS_A_B_FLUSH_INTERVAL", "1s")
	f.Add("bridges: {kafka: {topics: {telemetry: x}}}\n", "BRIDGES_KAFKA_TOPICS", "{a: b}")
	f.Add("devices: [{name: a, token: t}]\n", "DEVICES", `[{"name":"b","token":"u"}]`)
	f.Add("log:\n  topics:\n    x-y: {partitions: 2}\n", "LOG_TOPICS_X_Y_PARTITIONS", "3")
	f.Add("mqtt: 5\n", "MQTT_LISTEN", "[")
	f.Add("log: {topics: 3}\n", "LOG_TOPICS_A_PARTITIONS", "1")
	f.Add("", "BRIDGES_KAFKA_BROKERS", "a:1,,b:2")
	f.Add("? [a]\n: b\n", "LOG", "{topics: {a: {partitions: x}}}")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, file, key, val string) {
		p := filepath.Join(dir, "fuzz.yaml")
		if err := os.WriteFile(p, []byte(file), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadConfig(p, []string{"FERRY_" + key + "=" + val})
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) && !strings.HasPrefix(err.Error(), "config: ") {
				t.Fatalf("error %T %v is neither a ConfigError nor a config: error", err, err)
			}
			if errors.As(err, &ce) && len(ce.Problems) == 0 {
				t.Fatal("a ConfigError without problems")
			}
		}
	})
}

// TestConfigAdapterErrorsNameKeys: problems of buses and device sources
// are reported together, each with its full key.
func TestConfigAdapterErrorsNameKeys(t *testing.T) {
	file := filepath.Join(t.TempDir(), "ferry.yaml")
	yaml := `
buses:
  - {name: plc, modbus: {url: "tcp://127.0.0.1", timeout: -1s}}
  - {name: plc, modbus: {url: "serial:///dev/ttyS0", parity: X}}
  - {name: empty}
devices:
  - name: m1
    source:
      bus: plc
      unit: 0
      report: {strategy: period}
      timeseries:
        - {key: t, register: holding, address: 0, type: int17}
        - {key: t, register: coil, address: 1, type: int16}
      rpc:
        - {register: holding, address: 3, type: uint16}
  - {name: m2, source: {bus: nowhere, poll: 1s}}
`
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(file, nil)
	if err == nil {
		t.Fatal("config accepted")
	}
	for _, want := range []string{
		"buses[0].modbus.url: \"tcp://127.0.0.1\": needs host:port",
		"buses[0].modbus.timeout: -1s is negative",
		"buses[1].name: \"plc\" repeats buses[0]",
		"buses[1].modbus.url:",
		"buses[1].modbus.parity: \"X\"",
		"buses[2]: names no bus kind",
		"devices[0].source.poll: is required",
		"devices[0].source.report.period: is required",
		"devices[0].source.timeseries[0].type: \"int17\"",
		"devices[0].source.timeseries[1].key: \"t\" repeats",
		"devices[0].source.timeseries[1].type: coil registers hold bits",
		"devices[0].source.rpc[0].method: is required",
		"devices[1].source.bus: \"nowhere\" is not in buses",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "devices[0]: needs a token") {
		t.Errorf("a device with a source was asked for credentials: %v", err)
	}
}

// TestConfigGCPercent: gc_percent defaults to auto, takes a percentage
// from the file or the environment, and is held to a sane range, naming
// its key.
func TestConfigGCPercent(t *testing.T) {
	cfg, err := LoadConfig("", nil)
	if err != nil || cfg.GCPercent != GCAuto {
		t.Fatalf("default gc_percent %d, %v", cfg.GCPercent, err)
	}
	if cfg, err := LoadConfig(writeConfig(t, "gc_percent: 75\n"), nil); err != nil || cfg.GCPercent != 75 {
		t.Fatalf("gc_percent 75 in the file: %d, %v", cfg.GCPercent, err)
	}
	if cfg, err := LoadConfig("", []string{"FERRY_GC_PERCENT=50"}); err != nil || cfg.GCPercent != 50 {
		t.Fatalf("FERRY_GC_PERCENT=50: %d, %v", cfg.GCPercent, err)
	}
	if cfg, err := LoadConfig(writeConfig(t, "gc_percent: 75\n"), []string{"FERRY_GC_PERCENT=AUTO"}); err != nil || cfg.GCPercent != GCAuto {
		t.Fatalf("FERRY_GC_PERCENT=AUTO over a file: %d, %v", cfg.GCPercent, err)
	}
	for env, want := range map[string]string{
		"FERRY_GC_PERCENT=5":     "gc_percent: 5 is not auto or within 10-1000",
		"FERRY_GC_PERCENT=often": "gc_percent",
	} {
		if _, err := LoadConfig("", []string{env}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", env, err, want)
		}
	}
}
