package modbussim

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/simonvetter/modbus"
)

// The same client-side checks run over TCP and over RTU on a pty, with
// simonvetter's client.

func TestTCPClient(t *testing.T) {
	s := newSlave(t, Config{Units: units(1, 7), ManualClock: true})
	url := startTCP(t, s)
	exercise(t, s, newClient(t, url, 7, time.Second), 7)
}

func TestRTUClient(t *testing.T) {
	s := newSlave(t, Config{Units: units(1, 7), ManualClock: true})
	path := startPTY(t, s)
	exercise(t, s, newClient(t, "rtu://"+path, 7, 500*time.Millisecond), 7)
}

// exercise reads every register kind, writes with FC 5, 6, 15 and 16 and
// provokes exceptions, on a fresh ManualClock slave.
func exercise(t *testing.T, s *Slave, c *modbus.ModbusClient, unit uint8) {
	t.Run("read", func(t *testing.T) {
		want := s.Reading(unit)
		coils, err := c.ReadCoils(CoilRelay, 2)
		check(t, err, slices.Equal(coils, []bool{true, false}), "coils %v", coils)
		di, err := c.ReadDiscreteInputs(DiscreteDoor, 2)
		check(t, err, slices.Equal(di, []bool{false, true}), "discrete inputs %v", di)
		f32, err := c.ReadFloat32s(InputVoltage, 3, modbus.INPUT_REGISTER)
		check(t, err, slices.Equal(f32, []float32{230, 4, 920}) &&
			slices.Equal(f32, []float32{want.Voltage, want.Current, want.Power}), "V, A, W %v", f32)
		e32, err := c.ReadUint32(InputEnergy, modbus.INPUT_REGISTER)
		check(t, err, e32 == InitialEnergy, "energy %d", e32)
		e64, err := c.ReadUint64(InputEnergy64, modbus.INPUT_REGISTER)
		check(t, err, e64 == InitialEnergy, "energy64 %d", e64)
		regs, err := c.ReadRegisters(InputFrequency, 2, modbus.INPUT_REGISTER)
		check(t, err, len(regs) == 2 && regs[0] == 5000 && int16(regs[1]) == -50, "frequency, temperature %v", regs)
		serial, err := c.ReadBytes(InputSerial, 2*SerialRegisters, modbus.INPUT_REGISTER)
		check(t, err, string(serial) == fmt.Sprintf("FERRY-SIM-%06d", unit), "serial %q", serial)
		sp, err := c.ReadRegister(HoldingSetpoint, modbus.HOLDING_REGISTER)
		check(t, err, sp == 215, "setpoint %d", sp)
		u32, err := c.ReadUint32(HoldingUint32, modbus.HOLDING_REGISTER)
		check(t, err, u32 == InitialUint32, "uint32 %#x", u32)
		f64, err := c.ReadFloat64(HoldingFloat64, modbus.HOLDING_REGISTER)
		check(t, err, f64 == InitialFloat64, "float64 %v", f64)
		max, err := c.ReadRegisters(1000, 125, modbus.HOLDING_REGISTER)
		check(t, err, len(max) == 125, "125 registers: %d", len(max))
	})
	t.Run("write", func(t *testing.T) {
		check(t, c.WriteCoil(CoilRelay, false), !s.Coil(unit, CoilRelay), "FC 5: relay still on")
		bits := []bool{true, false, true, true, false, false, false, false, true}
		check(t, c.WriteCoils(100, bits), true, "FC 15")
		for i, b := range bits {
			check(t, nil, s.Coil(unit, 100+uint16(i)) == b, "FC 15: coil %d", 100+i)
		}
		check(t, c.WriteRegister(HoldingSetpoint, uint16(0xFF83)), s.Reading(unit).Setpoint == -12.5, "FC 6: setpoint %v", s.Reading(unit).Setpoint)
		check(t, c.WriteRegisters(200, []uint16{1, 2, 3}), s.Holding(unit, 202) == 3, "FC 16")
		check(t, c.WriteUint32(HoldingUint32, 0xDEADBEEF), s.Reading(unit).Uint32 == 0xDEADBEEF, "uint32")
		check(t, c.WriteFloat64(HoldingFloat64, -0.125), s.Reading(unit).Float64 == -0.125, "float64")
		s.Advance(DefaultTick)
		amps, err := c.ReadFloat32(InputCurrent, modbus.INPUT_REGISTER)
		check(t, err, amps == 0, "current %v with the relay off", amps)
	})
	t.Run("exceptions", func(t *testing.T) {
		err := c.WriteRegister(HoldingSetpoint, 2000)
		check(t, nil, errors.Is(err, modbus.ErrIllegalDataValue), "setpoint 200.0 °C: %v", err)
		check(t, nil, s.Holding(unit, HoldingSetpoint) == 0xFF83, "setpoint changed")
		if err := s.AddException(unit, ExceptionRange{Table: HoldingRegisters, First: 300, Last: 309}); err != nil {
			t.Fatal(err)
		}
		if err := s.AddException(unit, ExceptionRange{Table: Coils, First: 0, Last: 0, Code: ExServerDeviceBusy}); err != nil {
			t.Fatal(err)
		}
		_, err = c.ReadRegisters(305, 1, modbus.HOLDING_REGISTER)
		check(t, nil, errors.Is(err, modbus.ErrIllegalDataAddress), "inside the range: %v", err)
		_, err = c.ReadRegisters(295, 6, modbus.HOLDING_REGISTER)
		check(t, nil, errors.Is(err, modbus.ErrIllegalDataAddress), "overlapping the range: %v", err)
		_, err = c.ReadRegisters(295, 5, modbus.HOLDING_REGISTER)
		check(t, err, true, "below the range")
		err = c.WriteCoil(0, true)
		check(t, nil, errors.Is(err, modbus.ErrServerDeviceBusy), "busy coil: %v", err)
		_, err = c.ReadDiscreteInputs(0, 1)
		check(t, err, true, "discrete inputs are another table")
		s.ClearExceptions(unit)
		_, err = c.ReadRegisters(305, 1, modbus.HOLDING_REGISTER)
		check(t, err, true, "after ClearExceptions")
	})
}

// check fails the test if err is not nil or ok is false.
func check(t *testing.T, err error, ok bool, format string, args ...any) {
	t.Helper()
	if err != nil {
		t.Errorf(format+": %v", append(args, err)...)
	} else if !ok {
		t.Errorf(format, args...)
	}
}

func TestTCPDeadUnit(t *testing.T) {
	cfg := Config{Units: units(1, 3), ManualClock: true, DeadHold: time.Minute}
	cfg.Units[1].Dead = true
	s := newSlave(t, cfg)
	url := startTCP(t, s)
	dead := newClient(t, url, 3, 200*time.Millisecond)
	live := newClient(t, url, 1, time.Second)

	// While the dead unit's request is held, another connection answers.
	errc := make(chan error, 1)
	go func() { _, err := dead.ReadRegister(0, modbus.HOLDING_REGISTER); errc <- err }()
	time.Sleep(50 * time.Millisecond)
	v, err := live.ReadRegister(HoldingSetpoint, modbus.HOLDING_REGISTER)
	check(t, err, v == 215, "live unit: %d", v)
	err = <-errc
	check(t, nil, errors.Is(err, modbus.ErrRequestTimedOut), "dead unit: %v", err)

	// Reviving ends the hold; the late 0x0B answer carries the old
	// transaction id and the client skips it.
	s.SetDead(3, false)
	v, err = dead.ReadRegister(HoldingSetpoint, modbus.HOLDING_REGISTER)
	check(t, err, v == 215, "revived unit: %d", v)

	// A unit not served: gateway path unavailable.
	other := newClient(t, url, 9, time.Second)
	_, err = other.ReadRegister(0, modbus.HOLDING_REGISTER)
	check(t, nil, errors.Is(err, modbus.ErrGWPathUnavailable), "unit 9: %v", err)

	// A hold shorter than the client's timeout: exception 0x0B.
	s2 := newSlave(t, Config{ManualClock: true, DeadHold: 50 * time.Millisecond})
	s2.SetDead(1, true)
	c2 := newClient(t, startTCP(t, s2), 1, time.Second)
	_, err = c2.ReadRegister(0, modbus.HOLDING_REGISTER)
	check(t, nil, errors.Is(err, modbus.ErrGWTargetFailedToRespond), "short hold: %v", err)
	if st := s.Stats(); st.Silent != 1 || st.Answers != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestRTUDeadUnit(t *testing.T) {
	cfg := Config{Units: units(1, 3), ManualClock: true}
	cfg.Units[1].Dead = true
	s := newSlave(t, cfg)
	c := newClient(t, "rtu://"+startPTY(t, s), 3, 200*time.Millisecond)
	_, err := c.ReadRegister(0, modbus.HOLDING_REGISTER)
	check(t, nil, errors.Is(err, modbus.ErrRequestTimedOut), "dead unit: %v", err)
	check(t, c.SetUnitId(1), true, "")
	v, err := c.ReadRegister(HoldingSetpoint, modbus.HOLDING_REGISTER)
	check(t, err, v == 215, "live unit: %d", v)
	check(t, c.SetUnitId(9), true, "")
	_, err = c.ReadRegister(0, modbus.HOLDING_REGISTER)
	check(t, nil, errors.Is(err, modbus.ErrRequestTimedOut), "unit 9: %v", err)

	s.SetDead(3, false)
	check(t, c.SetUnitId(3), true, "")
	v, err = c.ReadRegister(HoldingSetpoint, modbus.HOLDING_REGISTER)
	check(t, err, v == 215, "revived unit: %d", v)
	if st := s.Stats(); st.Silent != 1 || st.Ignored != 1 || st.Answers != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestDelay(t *testing.T) {
	cfg := Config{ManualClock: true}
	cfg.Units = units(1)
	cfg.Units[0].Delay = 300 * time.Millisecond
	s := newSlave(t, cfg)
	c := newClient(t, startTCP(t, s), 1, 100*time.Millisecond)
	_, err := c.ReadRegister(0, modbus.HOLDING_REGISTER)
	check(t, nil, errors.Is(err, modbus.ErrRequestTimedOut), "300 ms delay, 100 ms timeout: %v", err)
	time.Sleep(300 * time.Millisecond) // let the late answer arrive, to be skipped

	s.SetDelay(1, 30*time.Millisecond)
	start := time.Now()
	v, err := c.ReadRegister(HoldingSetpoint, modbus.HOLDING_REGISTER)
	check(t, err, v == 215 && time.Since(start) >= 30*time.Millisecond, "30 ms delay: %d after %v", v, time.Since(start))
}

// TestWordOrderClient reads and writes wide values in every word order,
// decoded by simonvetter's client with the matching encoding.
func TestWordOrderClient(t *testing.T) {
	tests := []struct {
		order  WordOrder
		endian modbus.Endianness
		words  modbus.WordOrder
		raw32  []uint16 // InitialUint32, 0x0A0B0C0D, as the registers hold it
	}{
		{OrderABCD, modbus.BIG_ENDIAN, modbus.HIGH_WORD_FIRST, []uint16{0x0A0B, 0x0C0D}},
		{OrderDCBA, modbus.LITTLE_ENDIAN, modbus.LOW_WORD_FIRST, []uint16{0x0D0C, 0x0B0A}},
		{OrderBADC, modbus.LITTLE_ENDIAN, modbus.HIGH_WORD_FIRST, []uint16{0x0B0A, 0x0D0C}},
		{OrderCDAB, modbus.BIG_ENDIAN, modbus.LOW_WORD_FIRST, []uint16{0x0C0D, 0x0A0B}},
	}
	cfg := Config{ManualClock: true}
	for i, tc := range tests {
		cfg.Units = append(cfg.Units, UnitConfig{ID: uint8(i + 1), WordOrder: tc.order})
	}
	s := newSlave(t, cfg)
	url := startTCP(t, s)
	for i, tc := range tests {
		t.Run(tc.order.String(), func(t *testing.T) {
			unit := uint8(i + 1)
			c := newClient(t, url, unit, time.Second)
			raw, err := c.ReadRegisters(HoldingUint32, 2, modbus.HOLDING_REGISTER)
			check(t, err, slices.Equal(raw, tc.raw32), "raw %04x, want %04x", raw, tc.raw32)
			check(t, c.SetEncoding(tc.endian, tc.words), true, "")
			u32, err := c.ReadUint32(HoldingUint32, modbus.HOLDING_REGISTER)
			check(t, err, u32 == InitialUint32, "uint32 %#x", u32)
			f64, err := c.ReadFloat64(HoldingFloat64, modbus.HOLDING_REGISTER)
			check(t, err, f64 == InitialFloat64, "float64 %v", f64)
			volts, err := c.ReadFloat32(InputVoltage, modbus.INPUT_REGISTER)
			check(t, err, volts == 230, "voltage %v", volts)
			e32, err := c.ReadUint32(InputEnergy, modbus.INPUT_REGISTER)
			check(t, err, e32 == InitialEnergy, "energy %#x", e32)
			e64, err := c.ReadUint64(InputEnergy64, modbus.INPUT_REGISTER)
			check(t, err, e64 == InitialEnergy, "energy64 %#x", e64)
			check(t, c.WriteUint32(HoldingUint32, 0x11223344), s.Reading(unit).Uint32 == 0x11223344, "written uint32")
			check(t, c.WriteFloat64(HoldingFloat64, math.Pi), s.Reading(unit).Float64 == math.Pi, "written float64")
		})
	}
}

// TestConcurrentClients reads from several connections while the meter
// ticks every millisecond; the energy counter must never go back.
func TestConcurrentClients(t *testing.T) {
	s := newSlave(t, Config{Units: units(1, 2), Tick: time.Millisecond})
	url := startTCP(t, s)
	var wg sync.WaitGroup
	for i := range 4 {
		c := newClient(t, url, uint8(i%2+1), time.Second)
		wg.Go(func() {
			var last uint32
			for range 100 {
				e, err := c.ReadUint32(InputEnergy, modbus.INPUT_REGISTER)
				if err != nil || e < last {
					t.Errorf("energy %d after %d: %v", e, last, err)
					return
				}
				last = e
			}
		})
	}
	wg.Wait()
}

// TestEmulateLine checks that an emulated 9600-baud line, over a pty
// that transfers at once, answers no sooner than the answer would be
// complete on a real line, and carries at most one transaction per
// LineTime even when the master sends back to back.
func TestEmulateLine(t *testing.T) {
	s := newSlave(t, Config{ManualClock: true, Line: Line{Baud: 9600, Emulate: true}})
	path := startPTY(t, s)
	period := LineTime(9600, 11, 8, 5+2*2)
	answered := period - T35(9600, 11)

	c := newClient(t, "rtu://"+path, 1, time.Second)
	start := time.Now()
	_, err := c.ReadRegisters(0, 2, modbus.HOLDING_REGISTER)
	took := time.Since(start)
	check(t, err, took >= answered, "simonvetter client: took %v, answer complete on the line after %v", took, answered)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// A master that does not wait t3.5 after an answer.
	pts, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pts.Close()
	req, want := frame(t, "01 03 0000 0002"), frame(t, "01 03 04 00D7 0000")
	const n = 5
	start = time.Now()
	for range n {
		if _, err := pts.Write(req); err != nil {
			t.Fatal(err)
		}
		if err := pts.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(want))
		if _, err := io.ReadFull(pts, got); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("answer %x, %v; want %x", got, err, want)
		}
	}
	if took, min := time.Since(start), (n-1)*period+answered; took < min {
		t.Errorf("%d back-to-back transactions took %v, the line needs %v", n, took, min)
	}
}
