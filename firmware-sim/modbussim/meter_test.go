package modbussim

import (
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ferry-iot/ferry/configs"
)

func TestInitialReading(t *testing.T) {
	s := newSlave(t, Config{Units: units(1, 42), ManualClock: true})
	want := Reading{
		Voltage: 230, Current: 4, Power: 920, EnergyWh: 0x01020304, EnergyWh64: 0x01020304,
		FrequencyHz: 50, TemperatureC: -5, Serial: "FERRY-SIM-000042", Relay: true,
		Setpoint: 21.5, Uint32: 0x0A0B0C0D, Float64: 1234.5678,
	}
	if got := s.Reading(42); got != want {
		t.Errorf("reading\n got %+v\nwant %+v", got, want)
	}
	if got := s.Input(42, InputTemperature); got != 0xFFCE {
		t.Errorf("temperature register %#04x, want 0xFFCE (-50)", got)
	}
	if got := s.Units(); len(got) != 2 || got[0] != 1 || got[1] != 42 {
		t.Errorf("units %v", got)
	}
}

func TestMeterAdvance(t *testing.T) {
	s := newSlave(t, Config{ManualClock: true})
	s.Advance(10 * time.Second)
	if r := s.Reading(1); !r.Door {
		t.Error("door closed after 10 s")
	}
	s.Advance(10 * time.Second)
	if r := s.Reading(1); r.Door {
		t.Error("door open after 20 s")
	}
	s.Advance(130 * time.Second) // 150 s: temperature at its peak, 5 °C
	if r := s.Reading(1); r.TemperatureC < 4.5 || r.TemperatureC > 5.5 {
		t.Errorf("temperature %v at 150 s, want 5 ± 0.5", r.TemperatureC)
	}

	before := s.Reading(1)
	prev := before.EnergyWh
	for range 60 {
		s.Advance(time.Minute)
		r := s.Reading(1)
		if r.EnergyWh < prev || uint64(r.EnergyWh) != r.EnergyWh64 {
			t.Fatalf("energy %d after %d, 64-bit copy %d", r.EnergyWh, prev, r.EnergyWh64)
		}
		prev = r.EnergyWh
		if r.Voltage < 226 || r.Voltage > 234 || r.FrequencyHz < 49.9 || r.FrequencyHz > 50.1 ||
			r.Current < 1.5 || r.Current > 6.5 || r.TemperatureC < -16 || r.TemperatureC > 6 {
			t.Fatalf("out of range: %+v", r)
		}
		if d := float64(r.Power) - float64(r.Voltage)*float64(r.Current); d > 0.01 || d < -0.01 {
			t.Fatalf("power %v != %v · %v", r.Power, r.Voltage, r.Current)
		}
	}
	// An hour at 230 V and 4 ± 2 A (twelve whole current periods).
	if got := prev - before.EnergyWh; got < 880 || got > 960 {
		t.Errorf("%d Wh in an hour, want about 920", got)
	}

	s.SetCoil(1, CoilRelay, false)
	s.Advance(time.Second)
	off := s.Reading(1)
	if off.Current != 0 || off.Power != 0 || off.Relay || s.DiscreteInput(1, DiscreteRelayFeedback) {
		t.Errorf("relay off: %+v", off)
	}
	s.Advance(time.Hour)
	if got := s.Reading(1).EnergyWh; got != off.EnergyWh {
		t.Errorf("energy grew from %d to %d with the relay off", off.EnergyWh, got)
	}
}

func TestMeterSeed(t *testing.T) {
	a := newSlave(t, Config{ManualClock: true, Seed: 7})
	b := newSlave(t, Config{ManualClock: true, Seed: 7})
	c := newSlave(t, Config{ManualClock: true, Seed: 8})
	for _, s := range []*Slave{a, b, c} {
		s.Advance(5 * time.Minute)
	}
	if a.Reading(1) != b.Reading(1) {
		t.Errorf("same seed, different readings:\n%+v\n%+v", a.Reading(1), b.Reading(1))
	}
	if a.Reading(1) == c.Reading(1) {
		t.Error("different seeds, same reading")
	}
}

// TestTickLoop runs the real clock in a synctest bubble: after 10.05 s of
// fake time the meter has ticked about 100 times.
func TestTickLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, err := New(Config{})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(10*time.Second + 50*time.Millisecond)
		r := s.Reading(1)
		if !r.Door || r.Voltage == 230 || r.EnergyWh < InitialEnergy+2 {
			t.Errorf("after 10 s: %+v", r)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	_, err := New(Config{
		Units: []UnitConfig{
			{ID: 0}, {ID: 5, WordOrder: 9, Delay: -time.Second},
			{ID: 5, Exceptions: []ExceptionRange{{Table: 9, First: 5, Last: 1, Code: 7}}},
		},
		Tick: time.Microsecond, DeadHold: -1, Line: Line{Baud: 10, Parity: "x", StopBits: 3},
	})
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("error %v", err)
	}
	var fe *configs.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("%v is no FieldError", err)
	}
	for _, want := range []string{
		"Units[0].ID: 0 is outside", "Units[1].WordOrder", "Units[1].Delay", "Units[2].ID: unit 5 is listed twice",
		"Units[2].Exceptions[0]: unknown table 9; first address 5 is after last 1; exception code 0x07",
		"Tick:", "DeadHold:", "Line.Baud:", `Line.Parity: "X"`, "Line.StopBits:",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q is not in\n%v", want, err)
		}
	}
	s := newSlave(t, Config{ManualClock: true})
	if err := s.AddException(1, ExceptionRange{Table: Coils, First: 2, Last: 1}); err == nil {
		t.Error("AddException accepted first > last")
	}
}

func TestClosed(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartTCP("tcp://127.0.0.1:0"); !errors.Is(err, ErrClosed) {
		t.Errorf("StartTCP after Close: %v", err)
	}
	if err := s.ServeRTU(t.Context(), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("ServeRTU after Close: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("no panic for a unit not served")
		}
	}()
	s.Holding(2, 0)
}
