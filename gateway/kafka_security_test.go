package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/ferry-iot/ferry/broker/testkit"
)

// startWith runs a daemon from a complete YAML config (%s: data dir) and
// returns it with what it logged.
func startWith(t *testing.T, yaml string) (*Daemon, *syncBuffer) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf(yaml, t.TempDir())), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	d, err := Start(cfg, slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	return d, &out
}

type syncBuffer = testkit.SyncBuffer

// TestKafkaTLSAndSASL: with kafka.tls_cert/tls_key and kafka.sasl_users a
// client needs TLS and the right password; a wrong one is refused.
func TestKafkaTLSAndSASL(t *testing.T) {
	cert, key := selfSigned(t)
	d, _ := startWith(t, `data_dir: %s
mqtt: {listen: "127.0.0.1:0"}
http: {listen: "127.0.0.1:0"}
kafka:
  listen: "127.0.0.1:0"
  tls_cert: `+cert+`
  tls_key: `+key+`
  sasl_users: [{username: backend, password: s3cret}]
log: {min_free_ratio: 0}
`)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := func(pass string) *kgo.Client {
		cl, err := kgo.NewClient(kgo.SeedBrokers(d.KafkaAddr().String()), kgo.DialTLSConfig(&tls.Config{InsecureSkipVerify: true}),
			kgo.SASL(plain.Auth{User: "backend", Pass: pass}.AsMechanism()), kgo.DefaultProduceTopic("telemetry"),
			kgo.RequestRetries(1), kgo.RetryTimeout(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
	if err := client("s3cret").ProduceSync(ctx, &kgo.Record{Key: []byte("svc"), Value: []byte("hello")}).FirstErr(); err != nil {
		t.Fatalf("authenticated produce: %v", err)
	}
	err := client("wrong").Ping(ctx)
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "sasl") {
		t.Fatalf("wrong password: %v", err)
	}
}

// TestKafkaOpenListenerWarns: a listener bound beyond loopback without
// SASL prints a clear warning at start-up.
func TestKafkaOpenListenerWarns(t *testing.T) {
	_, logged := startWith(t, `data_dir: %s
mqtt: {listen: "127.0.0.1:0"}
http: {listen: "127.0.0.1:0"}
kafka: {listen: "0.0.0.0:0"}
log: {min_free_ratio: 0}
`)
	if out := logged.String(); !strings.Contains(out, "without authentication") || !strings.Contains(out, "kafka.sasl_users") {
		t.Fatalf("no warning about the open listener; log:\n%s", out)
	}
}
