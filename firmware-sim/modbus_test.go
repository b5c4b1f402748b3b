package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/simonvetter/modbus"

	"github.com/ferry-iot/ferry/broker/testkit"
	"github.com/ferry-iot/ferry/firmware-sim/modbussim"
)

func TestParseModbusFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		check   func(modbusOptions) bool
		wantErr string
	}{
		{"defaults", nil, func(o modbusOptions) bool {
			u := o.cfg.Units
			return o.listen == "tcp://127.0.0.1:5020" && o.rtu == "" && len(u) == 1 && u[0].ID == 1 &&
				u[0].WordOrder == modbussim.OrderABCD && !u[0].Dead && o.cfg.Line.Baud == 9600 && o.cfg.Line.Parity == "E"
		}, ""},
		{"everything", []string{"--listen", "", "--rtu", "pty", "--units", "1,2-4", "--dead-units", "3,4",
			"--word-order", "CDAB,2=dcba", "--exception", "2:holding:100-199", "--exception", "4:coils:7:0x0B",
			"--delay", "20ms", "--baud", "19200", "--parity", "N", "--emulate-line", "--seed", "9", "--tick", "1s"},
			func(o modbusOptions) bool {
				u, c := o.cfg.Units, o.cfg
				return o.listen == "" && o.rtu == "pty" && len(u) == 4 && u[3].ID == 4 &&
					u[0].WordOrder == modbussim.OrderCDAB && u[1].WordOrder == modbussim.OrderDCBA &&
					!u[1].Dead && u[2].Dead && u[3].Dead && u[0].Delay == 20*time.Millisecond &&
					len(u[1].Exceptions) == 1 && u[1].Exceptions[0] == modbussim.ExceptionRange{Table: modbussim.HoldingRegisters, First: 100, Last: 199} &&
					len(u[3].Exceptions) == 1 && u[3].Exceptions[0] == modbussim.ExceptionRange{Table: modbussim.Coils, First: 7, Last: 7, Code: 0x0B} &&
					c.Line == modbussim.Line{Baud: 19200, Parity: "N", Emulate: true} && c.Seed == 9 && c.Tick == time.Second
			}, ""},
		{"nothing to serve", []string{"--listen", ""}, nil, "nothing to serve"},
		{"dead unit not served", []string{"--dead-units", "2"}, nil, "unit 2 is not in --units"},
		{"word order unit not served", []string{"--word-order", "5=ABCD"}, nil, "unit 5 is not in --units"},
		{"bad word order", []string{"--word-order", "ABDC"}, nil, "unknown word order"},
		{"bad exception", []string{"--exception", "1:holding"}, nil, "UNIT:TABLE:FIRST-LAST"},
		{"bad table", []string{"--exception", "1:fifo:1-2"}, nil, "unknown table"},
		{"backwards range", []string{"--units", "5-2"}, nil, "runs backwards"},
		{"stray argument", []string{"extra"}, nil, "unexpected argument"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			o, err := parseModbusFlags(tc.args, &stderr)
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

type syncBuffer = testkit.SyncBuffer

// TestRunModbus runs the subcommand with TCP and a pty and talks to both.
func TestRunModbus(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outR, outW := io.Pipe()
	var stderr syncBuffer
	status := make(chan int, 1)
	go func() {
		status <- run(ctx, []string{"modbus", "--listen", "tcp://127.0.0.1:0", "--rtu", "pty",
			"--units", "1,2", "--dead-units", "2", "--word-order", "2=CDAB"}, outW, &stderr)
		outW.Close()
	}()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	urls := map[string]string{}
	for range 2 {
		kind, url, _ := strings.Cut(<-lines, " ")
		urls[kind] = url
	}
	if urls["tcp"] == "" || !strings.HasPrefix(urls["rtu"], "/dev/pts/") {
		t.Fatalf("printed %v; stderr:\n%s", urls, stderr.String())
	}

	tcp := openClient(t, "tcp://"+strings.TrimPrefix(urls["tcp"], "tcp://"))
	if v, err := tcp.ReadFloat32(modbussim.InputVoltage, modbus.INPUT_REGISTER); err != nil || v < 220 || v > 240 {
		t.Errorf("tcp voltage %v, %v", v, err)
	}
	rtu := openClient(t, "rtu://"+urls["rtu"])
	if b, err := rtu.ReadBytes(modbussim.InputSerial, 16, modbus.INPUT_REGISTER); err != nil || string(b) != "FERRY-SIM-000001" {
		t.Errorf("rtu serial %q, %v", b, err)
	}
	if err := rtu.SetUnitId(2); err != nil {
		t.Fatal(err)
	}
	if _, err := rtu.ReadRegister(0, modbus.HOLDING_REGISTER); !errors.Is(err, modbus.ErrRequestTimedOut) {
		t.Errorf("dead unit 2: %v", err)
	}

	cancel()
	var rest []string
	for l := range lines {
		rest = append(rest, l)
	}
	if s := <-status; s != 0 || len(rest) != 1 || !strings.HasPrefix(rest[0], "requests 3  answers 2") {
		t.Errorf("status %d, then printed %q; stderr:\n%s", s, rest, stderr.String())
	}
}

func openClient(t *testing.T, url string) *modbus.ModbusClient {
	t.Helper()
	c, err := modbus.NewClient(&modbus.ClientConfiguration{URL: url, Speed: 9600, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
