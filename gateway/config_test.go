package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	if tel.Flush != "always" || tel.Compression != "zstd" || tel.Retention != 168*time.Hour || tel.Partitions != 1 {
		t.Fatalf("telemetry topic defaults: %+v", tel)
	}
	if cfg.MQTT.AllowAnonymous {
		t.Fatal("anonymous clients allowed by default")
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
	if tel.Partitions != 2 || tel.Flush != "never" || tel.Compression != "zstd" {
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
		"provisioning:", "log.min_free_ratio:", "log.topics.telemetry.flush:", "log.topics.telemetry.compression:",
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
