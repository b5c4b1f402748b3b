package modbus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/devices/adapter"
	"github.com/ferry-iot/ferry/devices/modbus/modbustest"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// orderBlock is one value of each multi-register type laid out in one
// byte order, written by hand from the order's definition (not by the
// codec under test): 20 registers.
type orderBlock struct {
	order string
	words []uint16
}

var orderBlocks = []orderBlock{
	{"ABCD", []uint16{
		0xF8A4, 0x32EB, // int32 -123456789 = 0xF8A432EB
		0xB2D0, 0x5E00, // uint32 3000000000 = 0xB2D05E00
		0x41AC, 0x0000, // float32 21.5 = 0x41AC0000
		0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE, // int64 -2
		0x0102, 0x0304, 0x0506, 0x0708, // uint64 0x0102030405060708
		0xBFF8, 0x0000, 0x0000, 0x0000, // float64 -1.5
		0xFB2E, // int16 -1234
		0xD431, // uint16 54321
	}},
	{"DCBA", []uint16{
		0xEB32, 0xA4F8,
		0x005E, 0xD0B2,
		0x0000, 0xAC41,
		0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF,
		0x0807, 0x0605, 0x0403, 0x0201,
		0x0000, 0x0000, 0x0000, 0xF8BF,
		0x2EFB,
		0x31D4,
	}},
	{"BADC", []uint16{
		0xA4F8, 0xEB32,
		0xD0B2, 0x005E,
		0xAC41, 0x0000,
		0xFFFF, 0xFFFF, 0xFFFF, 0xFEFF,
		0x0201, 0x0403, 0x0605, 0x0807,
		0xF8BF, 0x0000, 0x0000, 0x0000,
		0x2EFB,
		0x31D4,
	}},
	{"CDAB", []uint16{
		0x32EB, 0xF8A4,
		0x5E00, 0xB2D0,
		0x0000, 0x41AC,
		0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF,
		0x0708, 0x0506, 0x0304, 0x0102,
		0x0000, 0x0000, 0x0000, 0xBFF8,
		0xFB2E,
		0xD431,
	}},
}

// blockPoints are the points of orderBlock at base, with the values
// they must read as.
func blockPoints(prefix, register string, base int, order string) ([]Point, map[string]string) {
	type tv struct {
		typ  string
		off  int
		want string
	}
	tvs := []tv{{"int32", 0, "-123456789"}, {"uint32", 2, "3000000000"}, {"float32", 4, "21.5"},
		{"int64", 6, "-2"}, {"uint64", 10, "72623859790382856"}, {"float64", 14, "-1.5"},
		{"int16", 18, "-1234"}, {"uint16", 19, "54321"}}
	var pts []Point
	want := map[string]string{}
	for _, v := range tvs {
		key := fmt.Sprintf("%s_%s_%s", prefix, strings.ToLower(order), v.typ)
		pts = append(pts, Point{Key: key, Register: register, Address: base + v.off, Type: v.typ, ByteOrder: order})
		want[key] = v.want
	}
	return pts, want
}

func slaveTables() modbustest.Tables {
	t := modbustest.Tables{HR: map[int]int{}, IR: map[int]int{}, CO: map[int]int{0: 1, 5: 1}, DI: map[int]int{1: 1}}
	for i, b := range orderBlocks {
		for j, w := range b.words {
			t.HR[20*i+j] = int(w)
		}
	}
	for j, w := range orderBlocks[0].words {
		t.IR[10+j] = int(w)
	}
	for j, w := range []uint16{0x4645, 0x5252, 0x592D, 0x3031} { // "FERRY-01"
		t.HR[100+j] = int(w)
	}
	t.HR[104] = 0x0008 // bit 3 set
	t.HR[105] = 215    // 21.5 at scale 0.1
	t.HR[106] = 0xFF85 // -12.3 at scale 0.1 (int16 -123)
	return t
}

func allTypesConfig(unit int) (DeviceConfig, map[string]string) {
	cfg := DeviceConfig{Unit: unit}
	want := map[string]string{}
	for i, b := range orderBlocks {
		pts, w := blockPoints("hr", "holding", 20*i, b.order)
		cfg.Timeseries = append(cfg.Timeseries, pts...)
		for k, v := range w {
			want[k] = v
		}
	}
	pts, w := blockPoints("ir", "input", 10, "ABCD")
	cfg.Timeseries = append(cfg.Timeseries, pts...)
	for k, v := range w {
		want[k] = v
	}
	bit3, bit2 := 3, 2
	cfg.Timeseries = append(cfg.Timeseries,
		Point{Key: "flag3", Register: "holding", Address: 104, Type: "bool", Bit: &bit3},
		Point{Key: "flag2", Register: "holding", Address: 104, Type: "bool", Bit: &bit2},
		Point{Key: "temperature", Register: "holding", Address: 105, Type: "int16", Scale: 0.1},
		Point{Key: "outside", Register: "holding", Address: 106, Type: "int16", Scale: 0.1},
		Point{Key: "relay", Register: "coil", Address: 0},
		Point{Key: "relay2", Register: "coil", Address: 1},
		Point{Key: "door", Register: "discrete", Address: 1},
	)
	cfg.Attributes = []Point{{Key: "serial", Register: "holding", Address: 100, Type: "string", Count: 4}}
	for k, v := range map[string]string{"flag3": "true", "flag2": "false", "temperature": "21.5", "outside": "-12.3",
		"relay": "true", "relay2": "false", "door": "true", "serial": `"FERRY-01"`} {
		want[k] = v
	}
	return cfg, want
}

func checkReading(t *testing.T, r adapter.Reading, want map[string]string) {
	t.Helper()
	got := map[string]string{}
	for _, kv := range append(append([]tb.KV(nil), r.Telemetry...), r.Attributes...) {
		got[kv.Key] = string(kv.Value.AppendJSON(nil))
	}
	for k, w := range want {
		g := got[k]
		if g == "" {
			t.Errorf("%s: not read", k)
			continue
		}
		// Doubles print with a fraction (21.5, -1.5, 3.0E9 aside): compare as text.
		if g != w && g != w+".0" {
			t.Errorf("%s = %s, want %s", k, g, w)
		}
	}
}

// TestPymodbusEveryTypeAndOrder reads every type in every byte order,
// bits of a register, scaled values, coils, discrete inputs and a string
// from pymodbus over TCP and as an RTU slave on a pty pair, in merged
// requests.
func TestPymodbusEveryTypeAndOrder(t *testing.T) {
	t.Run("tcp", func(t *testing.T) {
		slave := modbustest.StartTCP(t, map[int]modbustest.Tables{1: slaveTables()})
		readEveryType(t, BusConfig{URL: "tcp://" + slave.Addr, Timeout: 2 * time.Second})
	})
	t.Run("rtu", func(t *testing.T) {
		slave := modbustest.StartRTU(t, map[int]modbustest.Tables{7: slaveTables()}, 19200)
		readEveryType(t, BusConfig{URL: "rtu://" + slave.Port, Baud: 19200, Timeout: 2 * time.Second})
	})
}

func readEveryType(t *testing.T, bus BusConfig) {
	line, err := NewLine(bus)
	if err != nil {
		t.Fatal(err)
	}
	defer line.Close()
	unit := 1
	if bus.Serial() {
		unit = 7
	}
	cfg, want := allTypesConfig(unit)
	dev, err := NewDevice(line, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// holding 0-106 (two requests at 125: 0-79 and 100-106 merge to 107
	// registers), input 10-29, coils 0-1, discrete 1: four requests.
	if dev.Requests() != 4 {
		t.Errorf("%d requests per poll, want 4 (merged)", dev.Requests())
	}
	r, err := dev.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkReading(t, r, want)
}

// TestPymodbusWritesAndExceptions: RPC writes every register kind with
// its type and scale (checked in pymodbus's tables), reads on demand, and
// an exception answer comes back as the call's error at once, not as a
// timeout.
func TestPymodbusWritesAndExceptions(t *testing.T) {
	slave := modbustest.StartTCP(t, map[int]modbustest.Tables{1: slaveTables()})
	line, err := NewLine(BusConfig{URL: "tcp://" + slave.Addr, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer line.Close()
	bit5 := 5
	cfg := DeviceConfig{Unit: 1,
		Timeseries: []Point{{Key: "t", Register: "holding", Address: 105, Type: "int16", Scale: 0.1}},
		RPC: []Point{
			{Method: "setSetpoint", Register: "holding", Address: 110, Type: "int16", Scale: 0.1},
			{Method: "setTotal", Register: "holding", Address: 112, Type: "uint32", ByteOrder: "CDAB"},
			{Method: "setGain", Register: "holding", Address: 114, Type: "float32"},
			{Method: "relay", Register: "coil", Address: 7},
			{Method: "flag5", Register: "holding", Address: 104, Type: "bool", Bit: &bit5},
			{Method: "door", Register: "discrete", Address: 1},
			{Method: "beyond", Register: "holding", Address: 500, Type: "uint16"},
		},
		AttributeUpdates: []Point{{Key: "limit", Register: "holding", Address: 120, Type: "uint16"}},
	}
	dev, err := NewDevice(line, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	call := func(method, params string) string {
		t.Helper()
		out, err := dev.Call(ctx, method, []byte(params))
		if err != nil {
			t.Fatalf("%s(%s): %v", method, params, err)
		}
		return string(out)
	}
	call("setSetpoint", `-21.7`)
	call("setTotal", `{"value": 305419896}`) // 0x12345678, CDAB: 0x5678 then 0x1234
	call("setGain", `1.5`)                   // 0x3FC00000
	call("relay", `true`)
	call("flag5", `true`)                                   // 0x0008 | 0x0020
	if got := slave.Cmd("get hr 1 110 1"); got != "65319" { // -217 as uint16
		t.Errorf("setpoint register %s, want 65319 (-217)", got)
	}
	if got := slave.Cmd("get hr 1 112 2"); got != "22136 4660" {
		t.Errorf("total registers %s, want 22136 4660 (CDAB)", got)
	}
	if got := slave.Cmd("get hr 1 114 2"); got != "16320 0" {
		t.Errorf("gain registers %s, want 16320 0", got)
	}
	if got := slave.Cmd("get co 1 7 1"); got != "1" {
		t.Errorf("coil 7 %s, want 1", got)
	}
	if got := slave.Cmd("get hr 1 104 1"); got != "40" {
		t.Errorf("bit register %s, want 40 (bits 3 and 5)", got)
	}
	if got := call("setSetpoint", ``); got != `{"value":-21.7}` {
		t.Errorf("read on demand: %s", got)
	}
	if got := call("door", `true`); got != `{"value":true}` { // read-only: read
		t.Errorf("discrete read: %s", got)
	}
	if handled, err := dev.WriteAttribute(ctx, "limit", tb.Value{Kind: tb.KindLong, Long: 42}); !handled || err != nil {
		t.Fatalf("attribute write: %v %v", handled, err)
	}
	if got := slave.Cmd("get hr 1 120 1"); got != "42" {
		t.Errorf("limit register %s, want 42", got)
	}
	start := time.Now()
	_, err = dev.Call(ctx, "beyond", []byte(`7`))
	if adapter.KindOf(err) != adapter.KindException || !strings.Contains(err.Error(), "illegal data address") {
		t.Fatalf("write past the table: %v (kind %s), want an illegal data address exception", err, adapter.KindOf(err))
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the exception took %v: waited like a timeout", d)
	}
	if _, err := dev.Call(ctx, "nope", nil); !errors.Is(err, adapter.ErrUnknownMethod) {
		t.Errorf("unknown method: %v", err)
	}
	if _, err := dev.Call(ctx, "setSetpoint", []byte(`4000`)); adapter.KindOf(err) != adapter.KindRequest {
		t.Errorf("out of range: %v", err)
	}
	// The connection survived the exception: reads go on.
	if _, err := dev.Read(ctx); err != nil {
		t.Fatal(err)
	}
	if st := line.Stats(); st.Connects != 1 {
		t.Errorf("%d connects, want 1: an exception must not reconnect", st.Connects)
	}
}
