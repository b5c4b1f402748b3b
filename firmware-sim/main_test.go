package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/firmware-sim/sim"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// allowAll lets every client in (mochi's auth package would pull in a
// YAML module the project does not otherwise need).
type allowAll struct{ mqtt.HookBase }

func (*allowAll) ID() string { return "allow-all" }

func (*allowAll) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (*allowAll) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

func (*allowAll) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		check   func(options) bool
		wantErr string
	}{
		{"defaults", nil, func(o options) bool {
			return o.cfg.Broker == "tcp://127.0.0.1:1883" && o.cfg.Devices == 1 && o.cfg.Rate == 1 &&
				o.cfg.QoS == 1 && len(o.cfg.Shapes) == 4 && !o.cfg.Provision && o.duration == 0
		}, ""},
		{"everything", []string{"--broker", "ws://h:8080/mqtt", "--devices", "100", "--rate", "10", "--messages", "5",
			"--duration", "1m", "--qos", "0", "--inflight", "4", "--token-format", "t%d", "--shapes", "ts,array",
			"--attributes-every", "3", "--answer-rpc", "--provision-key", "k", "--provision-secret", "s"},
			func(o options) bool {
				c := o.cfg
				return c.Broker == "ws://h:8080/mqtt" && c.Devices == 100 && c.Rate == 10 && c.Messages == 5 &&
					o.duration == time.Minute && c.QoS == sim.AtMostOnce && c.Inflight == 4 && c.TokenFormat == "t%d" &&
					strings.Join(c.Shapes, "|") == "ts|array" && c.AttributesEvery == 3 && c.AnswerRPC &&
					c.Provision && c.ProvisionKey == "k" && c.ProvisionSecret == "s"
			}, ""},
		{"qos 2", []string{"--qos", "2"}, nil, "QoS 0 and 1"},
		{"stray argument", []string{"extra"}, nil, "unexpected argument"},
		{"unknown flag", []string{"--nope"}, nil, "not defined"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			o, err := parseFlags(tc.args, &stderr)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !tc.check(o) {
				t.Fatalf("parsed %+v, %v", o, err)
			}
		})
	}
}

func TestRunCommand(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(allowAll), nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewNet("t", ln)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	url := "tcp://" + ln.Addr().String()

	tests := []struct {
		name       string
		args       []string
		wantStatus int
		wantOut    string
	}{
		{"messages", []string{"--broker", url, "--devices", "2", "--messages", "5", "--rate", "0"}, 0, "acknowledged  10 "},
		{"duration", []string{"--broker", url, "--rate", "50", "--duration", "1200ms"}, 0, "devices       1 (1 connected"},
		{"bad config", []string{"--broker", url, "--devices", "0"}, 2, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			status := run(context.Background(), tc.args, &stdout, &stderr)
			if status != tc.wantStatus || !strings.Contains(stdout.String(), tc.wantOut) {
				t.Fatalf("status %d, stdout:\n%s\nstderr:\n%s", status, &stdout, &stderr)
			}
		})
	}
}
