package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestClientRPCBackend: a device's client-side RPC that Ferry does not
// answer itself reaches a backend through rpc.client_requests; the
// backend (a franz-go client) answers through rpc.client_replies, or over
// the HTTP API, and the device gets the answer on its response topic; an
// unanswered request times out with an error.
func TestClientRPCBackend(t *testing.T) {
	d := startDaemonEnv(t, "", "", []string{"FERRY_RPC_CLIENT_TIMEOUT=1s"})
	answers := make(chan paho.Message, 8)
	dev := connectDevice(t, d, "TOKEN1")
	if tok := dev.Subscribe("v1/devices/me/rpc/response/+", 1, func(_ paho.Client, m paho.Message) { answers <- m }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	answer := func(id string) string {
		t.Helper()
		select {
		case m := <-answers:
			if m.Topic() != "v1/devices/me/rpc/response/"+id {
				t.Fatalf("answer on %s, want request %s", m.Topic(), id)
			}
			return string(m.Payload())
		case <-time.After(10 * time.Second):
			t.Fatalf("no answer to request %s", id)
			return ""
		}
	}

	// getSessionLimits is still answered by Ferry itself.
	publish(t, dev, "v1/devices/me/rpc/request/1", `{"method":"getSessionLimits","params":{}}`)
	if a := answer("1"); !strings.Contains(a, "maxPayloadSize") {
		t.Fatalf("getSessionLimits answered %s", a)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	backend, err := kgo.NewClient(kgo.SeedBrokers(d.KafkaAddr().String()), kgo.ConsumeTopics("rpc_client_requests"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DefaultProduceTopic("rpc_client_replies"),
		kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	next := func() (key string, req map[string]any) {
		t.Helper()
		for {
			fs := backend.PollFetches(ctx)
			if err := ctx.Err(); err != nil {
				t.Fatal("the backend got no request")
			}
			fs.EachError(func(_ string, _ int32, err error) { t.Fatal(err) })
			if recs := fs.Records(); len(recs) > 0 {
				if len(recs) != 1 {
					t.Fatalf("%d requests at once", len(recs))
				}
				if err := json.Unmarshal(recs[0].Value, &req); err != nil {
					t.Fatal(err)
				}
				return string(recs[0].Key), req
			}
		}
	}
	reply := func(value string) {
		t.Helper()
		if err := backend.ProduceSync(ctx, &kgo.Record{Key: []byte("boiler-1"), Value: []byte(value)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	// Answered by the backend through Kafka.
	publish(t, dev, "v1/devices/me/rpc/request/5", `{"method":"getTime","params":{"tz":"UTC"}}`)
	key, req := next()
	if key != "boiler-1" || req["device"] != "boiler-1" || req["id"] != float64(5) || req["method"] != "getTime" {
		t.Fatalf("request record %s %v", key, req)
	}
	if p, _ := req["params"].(map[string]any); p["tz"] != "UTC" {
		t.Fatalf("params %v", req["params"])
	}
	reply(`{"id":5,"response":{"time":"12:00"}}`)
	if a := answer("5"); a != `{"time":"12:00"}` {
		t.Fatalf("device got %s", a)
	}

	// An error answer.
	publish(t, dev, "v1/devices/me/rpc/request/7", `{"method":"getTime","params":{}}`)
	next()
	reply(`{"device":"boiler-1","id":7,"error":"no clock"}`)
	if a := answer("7"); a != `{"error":"no clock"}` {
		t.Fatalf("device got %s", a)
	}

	// Answered over the HTTP API; a second answer finds nothing waiting.
	publish(t, dev, "v1/devices/me/rpc/request/6", `{"method":"getConfig","params":{}}`)
	next()
	var out map[string]any
	if code := d.api("POST", "/api/v1/devices/boiler-1/rpc/client/6", map[string]bool{"ok": true}, &out); code != http.StatusOK {
		t.Fatalf("HTTP answer: %d %v", code, out)
	}
	if a := answer("6"); a != `{"ok":true}` {
		t.Fatalf("device got %s", a)
	}
	if code := d.api("POST", "/api/v1/devices/boiler-1/rpc/client/6", map[string]bool{"ok": true}, &out); code != http.StatusNotFound {
		t.Fatalf("second HTTP answer: %d %v", code, out)
	}

	// Nobody answers: a timeout error after rpc.client_timeout.
	publish(t, dev, "v1/devices/me/rpc/request/8", `{"method":"getTime","params":{}}`)
	next()
	if a := answer("8"); !strings.Contains(a, `"error":"timeout`) {
		t.Fatalf("device got %s", a)
	}
	// A late answer is dropped and counted (as was the second HTTP answer).
	reply(`{"id":8,"response":{"late":true}}`)
	deadline := time.Now().Add(5 * time.Second)
	for d.metric(`ferry_client_rpc_total{outcome="unmatched_reply"}`) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := d.metric(`ferry_client_rpc_total{outcome="unmatched_reply"}`); n != 2 {
		t.Fatalf("unmatched replies %v, want 2", n)
	}
	select {
	case m := <-answers:
		t.Fatalf("the late answer reached the device: %s %s", m.Topic(), m.Payload())
	case <-time.After(200 * time.Millisecond):
	}
	for outcome, want := range map[string]float64{"forwarded": 4, "answered": 3, "timeout": 1} {
		if n := d.metric(`ferry_client_rpc_total{outcome="` + outcome + `"}`); n != want {
			t.Fatalf("%s %v, want %v", outcome, n, want)
		}
	}
}
