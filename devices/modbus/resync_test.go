package modbus

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/devices/adapter"
	"github.com/ferry-iot/ferry/devices/modbus/modbustest"
)

// fakeTCPSlave answers Modbus TCP read-holding requests with register
// value 7; conn i (from 0) answers its first request with bad(i) when
// bad returns bytes.
func fakeTCPSlave(t *testing.T, bad func(conn int, req []byte) []byte) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var conns atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := int(conns.Add(1)) - 1
			go func() {
				defer c.Close()
				first := true
				for {
					req := make([]byte, 12) // MBAP (7) + FC 3 request (5)
					if _, err := io.ReadFull(c, req); err != nil {
						return
					}
					if first {
						first = false
						if b := bad(n, req); b != nil {
							c.Write(b)
							continue
						}
					}
					resp := []byte{req[0], req[1], 0, 0, 0, 5, req[6], 3, 2, 0, 7}
					c.Write(resp)
				}
			}()
		}
	}()
	return "tcp://" + ln.Addr().String(), &conns
}

func oneRegister(t *testing.T, url string) (*Line, *Device) {
	t.Helper()
	line, err := NewLine(BusConfig{URL: url, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { line.Close() })
	dev, err := NewDevice(line, DeviceConfig{Unit: 1, Timeseries: []Point{{Key: "v", Register: "holding", Address: 0, Type: "uint16"}}})
	if err != nil {
		t.Fatal(err)
	}
	return line, dev
}

// TestResyncGarbledTCPFrame: an answer whose header is garbage (an MBAP
// length of 0) is a protocol error; the connection — with the rest of the
// garbage still in it — is dropped and the next poll, on a new one, reads
// the value.
func TestResyncGarbledTCPFrame(t *testing.T) {
	url, conns := fakeTCPSlave(t, func(conn int, req []byte) []byte {
		if conn == 0 {
			return []byte{req[0], req[1], 0, 0, 0, 0, 1, 3, 2, 0, 1} // length 0
		}
		return nil
	})
	line, dev := oneRegister(t, url)
	ctx := context.Background()
	if _, err := dev.Read(ctx); adapter.KindOf(err) != adapter.KindProtocol {
		t.Fatalf("garbled answer: %v, want a protocol error", err)
	}
	r, err := dev.Read(ctx)
	if err != nil || r.Telemetry[0].Value.Long != 7 {
		t.Fatalf("after the resync: %v %v", r.Telemetry, err)
	}
	if st := line.Stats(); st.Resyncs != 1 || st.Connects != 2 || conns.Load() != 2 {
		t.Fatalf("stats %+v, %d connections", st, conns.Load())
	}
}

// TestResyncStaleTransactionID: an answer to a transaction the line did
// not send (a late answer) is not taken for the awaited one: the request
// times out, the connection is dropped, and the next poll reads the
// right value.
func TestResyncStaleTransactionID(t *testing.T) {
	url, _ := fakeTCPSlave(t, func(conn int, req []byte) []byte {
		if conn == 0 {
			id := binary.BigEndian.Uint16(req) - 1 // the previous transaction's
			return []byte{byte(id >> 8), byte(id), 0, 0, 0, 5, req[6], 3, 2, 0x99, 0x99}
		}
		return nil
	})
	line, dev := oneRegister(t, url)
	ctx := context.Background()
	if _, err := dev.Read(ctx); adapter.KindOf(err) != adapter.KindTimeout {
		t.Fatalf("stale transaction: %v, want a timeout", err)
	}
	r, err := dev.Read(ctx)
	if err != nil || r.Telemetry[0].Value.Long != 7 {
		t.Fatalf("after the resync: %v %v (0x9999 would be the stale answer)", r.Telemetry, err)
	}
	if st := line.Stats(); st.Resyncs != 1 || st.Connects != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// TestResyncBadCRCOnRTU: a frame with a bad CRC on a serial line (a pty
// pair; the test plays the slave) is a protocol error; the port is
// reopened (its input discarded) and the next poll reads the value.
func TestResyncBadCRCOnRTU(t *testing.T) {
	modbustest.Need(t, true)
	master, slavePath := modbustest.PtyPair(t)
	line, dev := oneRegister(t, "rtu://"+master)
	f, err := os.OpenFile(slavePath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	go func() {
		for i := 0; ; i++ {
			req := make([]byte, 8) // unit, FC 3, addr, count, CRC
			if _, err := io.ReadFull(f, req); err != nil {
				return
			}
			resp := appendCRC([]byte{1, 3, 2, 0, 7})
			if i == 0 {
				resp[len(resp)-1] ^= 0xFF
			}
			f.Write(resp)
		}
	}()
	ctx := context.Background()
	if _, err := dev.Read(ctx); adapter.KindOf(err) != adapter.KindProtocol {
		t.Fatalf("bad CRC: %v, want a protocol error", err)
	}
	r, err := dev.Read(ctx)
	if err != nil || r.Telemetry[0].Value.Long != 7 {
		t.Fatalf("after the resync: %v %v", r.Telemetry, err)
	}
	if st := line.Stats(); st.Resyncs != 1 || st.Connects != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// appendCRC appends the CRC-16/MODBUS of b (polynomial 0xA001 reflected,
// initial 0xFFFF, low byte first), computed here independently of the
// library.
func appendCRC(b []byte) []byte {
	crc := uint16(0xFFFF)
	for _, c := range b {
		crc ^= uint16(c)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xA001
			} else {
				crc >>= 1
			}
		}
	}
	return append(b, byte(crc), byte(crc>>8))
}
