package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferry-iot/ferry/devices/modbus/modbustest"
)

// startDaemonDevices is startDaemon with more devices in the
// configuration's devices list (YAML list items) and extra YAML.
func startDaemonDevices(t *testing.T, dataDir, devices, extra string) *daemon {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	base := strings.Replace(fmt.Sprintf(baseConfig, dataDir), "devices:\n", "devices:\n"+devices, 1)
	file := filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(file, []byte(base+extra), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	dm := &daemon{Daemon: d, t: t, dataDir: dataDir}
	t.Cleanup(func() { dm.stop() })
	return dm
}

const meterDevice = `  - name: meter-1
    type: energy_meter
    source:
      bus: plc
      unit: 1
      poll: %s
      timeseries:
        - {key: temperature, register: holding, address: 0, type: int16, scale: 0.1}
        - {key: energy, register: input, address: 2, type: uint32, byte_order: CDAB}
      attributes:
        - {key: serial, register: holding, address: 100, type: string, count: 4}
      rpc:
        - {method: setSetpoint, register: holding, address: 10, type: int16, scale: 0.1}
        - {method: beyond, register: holding, address: 500, type: uint16}
      attribute_updates:
        - {key: limit, register: holding, address: 20, type: uint16}
`

func meterTables() modbustest.Tables {
	return modbustest.Tables{
		HR: map[int]int{0: 215, 100: 0x4645, 101: 0x5252, 102: 0x592D, 103: 0x3031},
		IR: map[int]int{2: 0x5678, 3: 0x1234}, // 0x12345678 = 305419896, registers swapped
	}
}

// TestAdapterModbusEndToEnd: a Modbus unit (pymodbus over TCP) read by
// the adapter becomes records a Kafka client reads like an MQTT device's;
// the device is in the API with its bus and last poll; client attributes
// are stored; an RPC through the commands topic writes the register, an
// exception comes back as the command's error; a shared attribute is
// written through attribute_updates.
func TestAdapterModbusEndToEnd(t *testing.T) {
	slave := modbustest.StartTCP(t, map[int]modbustest.Tables{1: meterTables()})
	d := startDaemonDevices(t, "", fmt.Sprintf(meterDevice, "200ms"),
		fmt.Sprintf("buses:\n  - {name: plc, modbus: {url: \"tcp://%s\", timeout: 2s}}\n", slave.Addr))

	cl, err := kgo.NewClient(kgo.SeedBrokers(d.kafkaAddr()), kgo.ConsumeTopics("telemetry"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rec *kgo.Record
	for rec == nil && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			if rec == nil && string(r.Key) == "meter-1" {
				rec = r
			}
		})
	}
	if rec == nil {
		t.Fatal("no record of meter-1 in telemetry")
	}
	hs := map[string]string{}
	for _, h := range rec.Headers {
		hs[h.Key] = string(h.Value)
	}
	var val struct {
		Ts     int64          `json:"ts"`
		Values map[string]any `json:"values"`
	}
	if err := json.Unmarshal(rec.Value, &val); err != nil {
		t.Fatal(err)
	}
	if hs["device"] != "meter-1" || hs["device_type"] != "energy_meter" || val.Ts != rec.Timestamp.UnixMilli() ||
		val.Values["temperature"] != 21.5 || val.Values["energy"] != float64(305419896) {
		t.Fatalf("record: headers %v value %s ts %v", hs, rec.Value, rec.Timestamp)
	}

	var list struct {
		Devices []deviceJSON `json:"devices"`
	}
	d.api("GET", "/api/v1/devices", nil, &list)
	var meter *deviceJSON
	for i := range list.Devices {
		if list.Devices[i].Name == "meter-1" {
			meter = &list.Devices[i]
		}
	}
	if meter == nil || meter.Adapter == nil || meter.Adapter.Bus != "plc" || meter.Adapter.LastPoll == nil ||
		!meter.Adapter.LastPoll.OK || !meter.Connected || meter.Adapter.Polls == 0 {
		t.Fatalf("meter-1 in the API: %+v", meter)
	}
	var attrs map[string]map[string]any
	d.api("GET", "/api/v1/devices/meter-1/attributes", nil, &attrs)
	if attrs["client"]["serial"] != "FERRY-01" {
		t.Fatalf("client attributes: %v", attrs)
	}

	// RPC through the commands topic.
	prod, err := kgo.NewClient(kgo.SeedBrokers(d.kafkaAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	for _, v := range []string{`{"method":"setSetpoint","params":23.5}`, `{"method":"beyond","params":1}`} {
		if err := prod.ProduceSync(ctx, &kgo.Record{Topic: "commands", Key: []byte("meter-1"), Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := kgo.NewClient(kgo.SeedBrokers(d.kafkaAddr()), kgo.ConsumeTopics("rpc_responses"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Close()
	var answers []string
	for len(answers) < 2 && ctx.Err() == nil {
		resp.PollFetches(ctx).EachRecord(func(r *kgo.Record) { answers = append(answers, string(r.Value)) })
	}
	if len(answers) != 2 || !strings.Contains(answers[0], `"status":"ok"`) ||
		!strings.Contains(answers[1], `"status":"error"`) || !strings.Contains(answers[1], "illegal data address") {
		t.Fatalf("rpc responses: %q", answers)
	}
	if got := slave.Cmd("get hr 1 10 1"); got != "235" {
		t.Fatalf("setpoint register %s after the command, want 235", got)
	}
	// The HTTP API: an RPC, and a shared attribute written to the device.
	var out map[string]json.RawMessage
	if code := d.api("POST", "/api/v1/devices/meter-1/rpc", map[string]any{"method": "setSetpoint"}, &out); code != 200 ||
		string(out["response"]) != `{"value":23.5}` {
		t.Fatalf("rpc over HTTP: %d %s", code, out["response"])
	}
	if code := d.api("POST", "/api/v1/devices/meter-1/rpc", map[string]any{"method": "setSetpoint", "params": 24, "oneway": true}, nil); code != 202 {
		t.Fatalf("one-way rpc over HTTP: %d, want 202", code)
	}
	if got := slave.Cmd("get hr 1 10 1"); got != "240" {
		t.Fatalf("setpoint register %s after the one-way call, want 240", got)
	}
	if code := d.api("POST", "/api/v1/devices/meter-1/rpc", map[string]any{"method": "beyond"}, &out); code != 502 {
		t.Fatalf("exception over HTTP: %d, want 502", code)
	}
	if code := d.api("POST", "/api/v1/devices/meter-1/attributes/shared", map[string]any{"limit": 77}, &out); code != 200 {
		t.Fatalf("shared attributes: %d %v", code, out)
	}
	if got := slave.Cmd("get hr 1 20 1"); got != "77" {
		t.Fatalf("limit register %s, want 77", got)
	}
	if v := d.metric(`ferry_adapter_polls_total{bus="plc",device="meter-1"}`); v < 1 {
		t.Fatalf("polls metric %v", v)
	}
}

// TestAdapterThousandPollsExactlyInLog: 1,000 polls of a Modbus unit,
// each a record in the log — none lost, none twice — counted against the
// adapter's own count after a clean stop and read back after a restart.
func TestAdapterThousandPollsExactlyInLog(t *testing.T) {
	slave := modbustest.StartTCP(t, map[int]modbustest.Tables{1: meterTables()})
	dir := t.TempDir()
	buses := fmt.Sprintf("buses:\n  - {name: plc, modbus: {url: \"tcp://%s\", timeout: 2s}}\n", slave.Addr)
	d := startDaemonDevices(t, dir, fmt.Sprintf(meterDevice, "5ms"), buses)
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, _ := d.adapters.Status("meter-1")
		if st.Polls >= 1000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d polls in 60 s", st.Polls)
		}
		time.Sleep(50 * time.Millisecond)
	}
	adapters := d.adapters
	d.stop()
	st, _ := adapters.Status("meter-1")
	ok := st.Polls - st.Errors["timeout"] - st.Errors["connection"] - st.Errors["protocol"] - st.Errors["exception"] - st.Errors["device"]
	slave.Kill() // nothing more is read after the restart
	d = startDaemonDevices(t, dir, fmt.Sprintf(meterDevice, "5ms"), buses)
	var ts []int64
	for _, r := range d.records("telemetry") {
		if r.Key != nil && *r.Key == "meter-1" {
			ts = append(ts, r.Timestamp)
		}
	}
	// Records from after the restart are impossible (the slave is gone);
	// telemetry has three partitions but one key lands on one.
	if uint64(len(ts)) != ok || st.Records < ok || ok < 1000 {
		t.Fatalf("%d records in the log, %d successful polls (%d polls, errors %v), %d records counted", len(ts), ok, st.Polls, st.Errors, st.Records)
	}
	for i := 1; i < len(ts); i++ {
		if ts[i] <= ts[i-1] {
			t.Fatalf("record %d: sample time %d after %d: duplicated or out of order", i, ts[i], ts[i-1])
		}
	}
}
