package modbussim

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

func TestCRC16(t *testing.T) {
	// Frames with their CRCs as published: the Modbus serial line spec's
	// example and a common read of holding register 0.
	for _, h := range []string{"1103006B00037687", "010300000001840A", "0106000100179804"} {
		b, _ := hex.DecodeString(h)
		if !crcOK(b) {
			t.Errorf("%s: crc %04x, frame says %02x%02x", h, crc16(b[:len(b)-2]), b[len(b)-1], b[len(b)-2])
		}
		if got := appendCRC(b[: len(b)-2 : len(b)-2]); !bytes.Equal(got, b) {
			t.Errorf("appendCRC = %x, want %x", got, b)
		}
	}
	if crcOK([]byte{0x01, 0x03, 0x84, 0x0B}) || crcOK([]byte{1, 2, 3}) {
		t.Error("crcOK accepted a bad frame")
	}
}

func TestRequestLength(t *testing.T) {
	tests := []struct {
		buf  string
		want int
	}{
		{"", 0}, {"01", 0}, {"0103", 8}, {"0106", 8}, {"0105", 8},
		{"010F0000", 0}, {"010F0000000A02", 11}, {"0110000000020400", 13},
		{"0110000000FF", 0}, {"011000000080FF", 264}, {"0107", -1}, {"012B0E", -1},
	}
	for _, tc := range tests {
		b, _ := hex.DecodeString(tc.buf)
		if got := requestLength(b); got != tc.want {
			t.Errorf("requestLength(%s) = %d, want %d", tc.buf, got, tc.want)
		}
	}
}

// rtuCase is one request written to the RTU slave and the answer it
// must get (nil: none).
type rtuCase struct {
	name   string
	writes [][]byte // written in turn, a pause between
	pause  time.Duration
	want   []byte
	check  func(t *testing.T, s *Slave)
}

// rtuCases are run in order against one slave serving units 1 (with an
// exception range on input registers 500-509) and 2 (dead).
func rtuCases(t testing.TB) []rtuCase {
	f := func(h string) []byte { return frame(t, h) }
	one := func(h string) [][]byte { return [][]byte{f(h)} }
	return []rtuCase{
		{name: "read holding setpoint", writes: one("01 03 0000 0001"), want: f("01 03 02 00D7")},
		{name: "read coils", writes: one("01 01 0000 000A"), want: f("01 01 02 01 00")},
		{name: "read discrete inputs", writes: one("01 02 0000 0002"), want: f("01 02 01 02")},
		{name: "read input voltage", writes: one("01 04 0000 0002"), want: f("01 04 04 4366 0000")},
		{name: "read input serial", writes: one("01 04 000E 0002"), want: f("01 04 04 4645 5252")},
		{name: "write coil", writes: one("01 05 0005 FF00"), want: f("01 05 0005 FF00"),
			check: func(t *testing.T, s *Slave) { wantTrue(t, s.Coil(1, 5)) }},
		{name: "write coil off", writes: one("01 05 0000 0000"), want: f("01 05 0000 0000"),
			check: func(t *testing.T, s *Slave) { wantTrue(t, !s.Coil(1, CoilRelay)) }},
		{name: "write coil bad value", writes: one("01 05 0005 1234"), want: f("01 85 03")},
		{name: "write register", writes: one("01 06 0064 1234"), want: f("01 06 0064 1234"),
			check: func(t *testing.T, s *Slave) { wantEqual(t, s.Holding(1, 100), 0x1234) }},
		{name: "write coils", writes: one("01 0F 000A 000A 02 CD 01"), want: f("01 0F 000A 000A"),
			check: func(t *testing.T, s *Slave) {
				for i, want := range []bool{true, false, true, true, false, false, true, true, true, false} {
					if s.Coil(1, 10+uint16(i)) != want {
						t.Errorf("coil %d != %v", 10+i, want)
					}
				}
			}},
		{name: "write registers", writes: one("01 10 00C8 0002 04 000A 0102"), want: f("01 10 00C8 0002"),
			check: func(t *testing.T, s *Slave) {
				wantEqual(t, s.Holding(1, 200), 0x000A)
				wantEqual(t, s.Holding(1, 201), 0x0102)
			}},
		{name: "write registers byte count", writes: one("01 10 00C8 0002 03 000A01"), want: f("01 90 03")},
		{name: "write coils quantity", writes: one("01 0F 0000 0000 00"), want: f("01 8F 03")},
		{name: "read quantity 0", writes: one("01 03 0000 0000"), want: f("01 83 03")},
		{name: "read quantity 126", writes: one("01 04 0000 007E"), want: f("01 84 03")},
		{name: "read coils quantity 2001", writes: one("01 01 0000 07D1"), want: f("01 81 03")},
		{name: "read past 0xFFFF", writes: one("01 03 FFFF 0002"), want: f("01 83 02")},
		{name: "read last register", writes: one("01 03 FFFF 0001"), want: f("01 03 02 0000")},
		{name: "unknown function", writes: one("01 2B 0E 01 00"), want: f("01 AB 01")},
		{name: "unknown function no data", writes: one("01 07"), want: f("01 87 01")},
		{name: "exception function code", writes: one("01 83 02")},
		{name: "setpoint out of range", writes: one("01 06 0000 07D1"), want: f("01 86 03"),
			check: func(t *testing.T, s *Slave) { wantEqual(t, s.Holding(1, HoldingSetpoint), 215) }},
		{name: "exception range", writes: one("01 04 01F0 0010"), want: f("01 84 04")},
		{name: "below exception range", writes: one("01 04 01EA 000A"), want: f("01 04 14" + zeros(20))},
		{name: "bad crc", writes: [][]byte{{0x01, 0x03, 0x00, 0x00, 0x00, 0x01, 0x84, 0x0B}}},
		{name: "answers after bad crc", writes: one("01 03 0000 0001"), want: f("01 03 02 00D7")},
		{name: "unit not served", writes: one("09 03 0000 0001")},
		{name: "dead unit", writes: one("02 03 0000 0001")},
		{name: "broadcast write", writes: one("00 06 0065 0007"),
			check: func(t *testing.T, s *Slave) { wantEqual(t, s.Holding(1, 101), 7) }},
		{name: "broadcast read", writes: one("00 03 0000 0001")},
		{name: "frame in two writes", writes: [][]byte{{0x01, 0x03, 0x00}, f("01 03 0000 0001")[3:]},
			pause: 2 * time.Millisecond, want: f("01 03 02 00D7")},
		{name: "partial frame then silence", writes: [][]byte{{0x01, 0x03, 0x00}, f("01 03 0065 0001")},
			pause: 3 * minPartialGap, want: f("01 03 02 0007"),
			check: func(t *testing.T, s *Slave) { wantTrue(t, s.Stats().BadFrames == 2) }},
	}
}

func zeros(n int) string { return hex.EncodeToString(make([]byte, n)) }

func wantTrue(t *testing.T, ok bool) {
	t.Helper()
	if !ok {
		t.Error("false")
	}
}

func wantEqual[T comparable](t *testing.T, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("got %v, want %v", got, want)
	}
}

// TestRTUFrames runs the packet table over net.Pipe, which has read
// deadlines like a tty.
func TestRTUFrames(t *testing.T) {
	cfg := Config{Units: units(1, 2), ManualClock: true}
	cfg.Units[0].Exceptions = []ExceptionRange{{Table: InputRegisters, First: 500, Last: 509, Code: ExServerDeviceFailure}}
	cfg.Units[1].Dead = true
	s := newSlave(t, cfg)
	client, port := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeRTU(ctx, port) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		client.Close()
		port.Close()
	}()

	for _, tc := range rtuCases(t) {
		for i, w := range tc.writes {
			if i > 0 {
				time.Sleep(tc.pause)
			}
			// A deadline, so that an answer the test did not expect
			// (blocking net.Pipe's other end) fails instead of hanging.
			if err := client.SetWriteDeadline(time.Now().Add(time.Second)); err != nil {
				t.Fatal(err)
			}
			if _, err := client.Write(w); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
		}
		got, err := readAnswer(client, tc.want)
		if tc.want == nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("%s: answer %x, %v; want none", tc.name, got, err)
			}
		} else if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("%s: answer %x, %v; want %x", tc.name, got, err, tc.want)
		}
		if tc.check != nil {
			t.Run(tc.name, func(t *testing.T) { tc.check(t, s) })
		}
	}
	st := s.Stats()
	if st.Silent != 1 || st.Ignored != 2 || st.Exceptions != 11 {
		t.Errorf("stats %+v", st)
	}
}

// readAnswer reads as many bytes as want has (or one, waiting for none)
// within 200 ms.
func readAnswer(c net.Conn, want []byte) ([]byte, error) {
	if err := c.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		return nil, err
	}
	buf := make([]byte, max(len(want), 1))
	n, err := io.ReadFull(c, buf)
	return buf[:n], err
}

func TestRTUPipelined(t *testing.T) {
	s := newSlave(t, Config{ManualClock: true})
	client, port := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeRTU(ctx, port) }()
	defer func() {
		cancel()
		<-done
		client.Close()
		port.Close()
	}()
	two := append(frame(t, "01 03 0000 0001"), frame(t, "01 04 0008 0001")...)
	wrote := make(chan error, 1)
	go func() { _, err := client.Write(two); wrote <- err }()
	want := append(frame(t, "01 03 02 00D7"), frame(t, "01 04 02 1388")...)
	if got, err := readAnswer(client, want); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("answers %x, %v; want %x", got, err, want)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}

// FuzzRTU feeds arbitrary bytes to the frame reader and answers every
// frame it finds: frames must carry a valid CRC, answers must be valid
// frames from the addressed unit echoing its function code.
func FuzzRTU(f *testing.F) {
	for _, tc := range rtuCases(f) {
		f.Add(bytes.Join(tc.writes, nil))
	}
	s, err := New(Config{Units: units(1, 2), ManualClock: true})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	f.Fuzz(func(t *testing.T, in []byte) {
		r := &frameReader{port: bytes.NewReader(in), stats: &s.stats}
		for {
			fr, _, err := r.next(context.Background())
			if err != nil {
				return
			}
			if !crcOK(fr) || len(fr) > maxFrame {
				t.Fatalf("frame %x", fr)
			}
			a, _ := s.answerRTU(context.Background(), fr)
			if a == nil {
				continue
			}
			if !crcOK(a) || len(a) > maxFrame || a[0] != fr[0] || a[1]&^exceptionFlag != fr[1] {
				t.Fatalf("frame %x: answer %x", fr, a)
			}
			if a[1]&exceptionFlag != 0 && len(a) != 5 {
				t.Fatalf("frame %x: exception %x", fr, a)
			}
		}
	})
}
