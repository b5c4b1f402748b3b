package modbussim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// The register map of every unit (zero-based PDU addresses; see the
// package doc for units and scaling). Every other address of the four
// tables is plain memory: readable, and writable where the table is.
const (
	InputVoltage     = 0  // float32, V
	InputCurrent     = 2  // float32, A
	InputPower       = 4  // float32, W
	InputEnergy      = 6  // uint32, Wh
	InputFrequency   = 8  // uint16, 0.01 Hz
	InputTemperature = 9  // int16, 0.1 °C
	InputEnergy64    = 10 // uint64, Wh
	InputSerial      = 14 // 8 registers, 16 ASCII characters
	SerialRegisters  = 8

	HoldingSetpoint = 0 // int16, 0.1 °C, -400..1000
	HoldingUint32   = 2 // uint32
	HoldingFloat64  = 4 // float64

	CoilRelay = 0 // the load relay: off, no current flows

	DiscreteDoor          = 0 // door contact, toggles every DoorPeriod
	DiscreteRelayFeedback = 1 // the relay's state, as last ticked
)

// Meter constants.
const (
	// DoorPeriod is how long the door contact stays in one state.
	DoorPeriod = 10 * time.Second
	// InitialEnergy is the energy counter at start, in Wh: 0x01020304,
	// four distinct bytes so a word-order mix-up shows.
	InitialEnergy = 0x01020304
	// InitialSetpoint, InitialUint32 and InitialFloat64 are the holding
	// registers' values at start (distinct bytes again).
	InitialSetpoint = 21.5
	InitialUint32   = 0x0A0B0C0D
	InitialFloat64  = 1234.5678

	setpointMin, setpointMax = -400, 1000 // register values, 0.1 °C
)

// Reading is what a unit's mapped registers hold, decoded with its word
// order: exactly what a client reading them should see.
type Reading struct {
	Voltage, Current, Power float32
	EnergyWh                uint32
	EnergyWh64              uint64
	FrequencyHz             float64 // register / 100
	TemperatureC            float64 // int16 register / 10
	Serial                  string
	Door, Relay             bool // discrete input 0, coil 0

	Setpoint float64 // int16 holding register / 10
	Uint32   uint32
	Float64  float64
}

// meter is one unit's simulated energy meter. Its values at elapsed time
// 0 are exact (230 V, 4 A, 920 W, InitialEnergy, 50.00 Hz, -5.0 °C);
// every step adds noise from a generator seeded by (Config.Seed, unit).
type meter struct {
	rng      *rand.Rand
	elapsed  time.Duration
	energyWh float64

	voltage, current, power float64
	frequency, temperature  float64
	door                    bool
}

func newMeter(seed uint64, unit uint8) meter {
	m := meter{rng: rand.New(rand.NewPCG(seed, uint64(unit))), energyWh: InitialEnergy}
	m.compute(true, false)
	return m
}

// step advances the meter by dt with the relay in the given state.
func (m *meter) step(dt time.Duration, relay bool) {
	m.elapsed += dt
	m.compute(relay, true)
	m.energyWh += m.power * dt.Hours()
}

// compute sets the instantaneous values for m.elapsed.
func (m *meter) compute(relay, noisy bool) {
	t := m.elapsed.Seconds()
	noise := func(sd float64) float64 {
		if !noisy {
			return 0
		}
		return sd * m.rng.NormFloat64()
	}
	wave := func(period float64) float64 { return math.Sin(2 * math.Pi * t / period) }
	m.voltage = 230 + 2*wave(60) + noise(0.3)
	m.current = 0
	if relay {
		m.current = max(0, 4+2*wave(300)+noise(0.05))
	}
	m.power = m.voltage * m.current
	m.frequency = 50 + 0.03*wave(45) + noise(0.005)
	m.temperature = -5 + 10*wave(600) + noise(0.05)
	m.door = (m.elapsed/DoorPeriod)%2 == 1
}

// store writes the meter's values into the unit's registers.
func (m *meter) store(u *unit) {
	o := u.order
	in := u.input
	o.put(in[InputVoltage:InputVoltage+2], uint64(math.Float32bits(float32(m.voltage))))
	o.put(in[InputCurrent:InputCurrent+2], uint64(math.Float32bits(float32(m.current))))
	o.put(in[InputPower:InputPower+2], uint64(math.Float32bits(float32(m.power))))
	energy := uint64(m.energyWh)
	o.put(in[InputEnergy:InputEnergy+2], energy&math.MaxUint32)
	in[InputFrequency] = uint16(math.Round(m.frequency * 100))
	in[InputTemperature] = uint16(int16(math.Round(m.temperature * 10)))
	o.put(in[InputEnergy64:InputEnergy64+4], energy)
	u.discrete[DiscreteDoor] = m.door
	u.discrete[DiscreteRelayFeedback] = u.coils[CoilRelay]
}

// initRegisters sets a new unit's registers: the meter's, the serial
// number, the relay and the holding registers' initial values.
func (u *unit) initRegisters() {
	serial := fmt.Sprintf("FERRY-SIM-%06d", u.id)
	for i := range SerialRegisters {
		u.input[InputSerial+i] = uint16(serial[2*i])<<8 | uint16(serial[2*i+1])
	}
	u.coils[CoilRelay] = true
	u.holding[HoldingSetpoint] = uint16(int16(InitialSetpoint * 10))
	u.order.put(u.holding[HoldingUint32:HoldingUint32+2], InitialUint32)
	u.order.put(u.holding[HoldingFloat64:HoldingFloat64+4], math.Float64bits(InitialFloat64))
	u.meter.store(u)
}

// reading decodes the mapped registers.
func (u *unit) reading() Reading {
	o := u.order
	in, h := u.input, u.holding
	f32 := func(r []uint16) float32 { return math.Float32frombits(uint32(o.get(r))) }
	serial := make([]byte, 0, 2*SerialRegisters)
	for _, r := range in[InputSerial : InputSerial+SerialRegisters] {
		serial = append(serial, byte(r>>8), byte(r))
	}
	return Reading{
		Voltage:      f32(in[InputVoltage : InputVoltage+2]),
		Current:      f32(in[InputCurrent : InputCurrent+2]),
		Power:        f32(in[InputPower : InputPower+2]),
		EnergyWh:     uint32(o.get(in[InputEnergy : InputEnergy+2])),
		EnergyWh64:   o.get(in[InputEnergy64 : InputEnergy64+4]),
		FrequencyHz:  float64(in[InputFrequency]) / 100,
		TemperatureC: float64(int16(in[InputTemperature])) / 10,
		Serial:       string(serial),
		Door:         u.discrete[DiscreteDoor],
		Relay:        u.coils[CoilRelay],
		Setpoint:     float64(int16(h[HoldingSetpoint])) / 10,
		Uint32:       uint32(o.get(h[HoldingUint32 : HoldingUint32+2])),
		Float64:      math.Float64frombits(o.get(h[HoldingFloat64 : HoldingFloat64+4])),
	}
}
