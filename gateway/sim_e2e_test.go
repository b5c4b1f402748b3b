package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/firmware-sim/sim"
)

// TestE2EFirmwareSimProvisioning runs simulated firmware that provisions
// itself, sends telemetry in every shape plus client attributes, and
// answers RPC; every acknowledged message must be in the log under the
// provisioned device's name.
func TestE2EFirmwareSimProvisioning(t *testing.T) {
	d := startDaemon(t, "", "")
	var mu sync.Mutex
	acked := map[string]bool{}
	cfg := sim.Config{
		Broker: d.broker(), Devices: 12, Messages: 20, Inflight: 4,
		Provision: true, ProvisionKey: "pkey", ProvisionSecret: "psecret",
		DeviceNameFormat: "field-sensor-%d", AttributesEvery: 5,
		OnMessage: func(m sim.MessageResult) {
			if m.Outcome == sim.Acked {
				mu.Lock()
				acked[fmt.Sprintf("field-sensor-%d/%d", m.Device, m.Seq)] = true
				mu.Unlock()
			}
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sum, err := sim.Run(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Provisioned != 12 || sum.Acked != 240 || sum.Failed != 0 {
		t.Fatalf("summary %+v", sum)
	}
	stored := map[string]bool{}
	for _, r := range d.records("telemetry") {
		var v struct {
			Values struct {
				Seq *int `json:"seq"`
			} `json:"values"`
		}
		if err := json.Unmarshal(r.Value, &v); err != nil {
			t.Fatal(err)
		}
		if v.Values.Seq != nil {
			stored[fmt.Sprintf("%s/%d", *r.Key, *v.Values.Seq)] = true
		}
	}
	for k := range acked {
		if !stored[k] {
			t.Errorf("acknowledged %s not stored", k)
		}
	}
	if n := len(d.records("attributes")); n < 12*3 {
		t.Fatalf("%d attribute records, want at least %d", n, 12*3)
	}
	var dev deviceJSON
	if code := d.api("GET", "/api/v1/devices/field-sensor-3", nil, &dev); code != 200 || dev.Source != "provision" {
		t.Fatalf("provisioned device: %d %+v", code, dev)
	}
}

// TestE2EFirmwareSimRPC: the simulator answers a server-side RPC sent
// through the HTTP API while it is publishing.
func TestE2EFirmwareSimRPC(t *testing.T) {
	d := startDaemon(t, "", "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan sim.Summary, 1)
	go func() {
		sum, _ := sim.Run(ctx, sim.Config{Broker: d.broker(), Devices: 2, Rate: 20, AnswerRPC: true}, nil)
		done <- sum
	}()
	var out struct {
		Response json.RawMessage `json:"response"`
	}
	code := 0
	for i := 0; i < 200 && code != 200; i++ {
		code = d.api("POST", "/api/v1/devices/sim-device-1/rpc", map[string]any{"method": "getState", "params": map[string]int{"x": 1}}, &out)
		if code != 200 {
			time.Sleep(25 * time.Millisecond)
		}
	}
	cancel()
	sum := <-done
	if code != 200 || len(out.Response) == 0 || sum.RPCAnswered < 1 {
		t.Fatalf("RPC through the simulator: %d %s (answered %d)", code, out.Response, sum.RPCAnswered)
	}
}
