package sim

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Reading is one sample of a simulated sensor board. Values are rounded
// the way they are encoded (temperature, pressure and battery to 2
// decimals, humidity to 1), so a decoded payload equals the Reading
// exactly.
type Reading struct {
	Seq         int     // per-device sequence number, from 0
	Temperature float64 // °C, a random walk around the board's base
	Humidity    float64 // % relative, falls as the temperature rises
	Pressure    float64 // hPa, slow weather drift
	Battery     float64 // %, drains a little with every message
	RSSI        int     // dBm
	Motion      bool    // PIR sensor, true in about 5 % of samples
}

// Noise channels, so that sensors draw independent numbers.
const (
	chBaseTemp uint64 = iota + 1
	chBaseHumidity
	chBasePressure
	chBaseBattery
	chDrain
	chBaseRSSI
	chTempStep
	chTempSlow
	chHumidityStep
	chPressureSlow
	chPressureNoise
	chRSSINoise
	chMotion
)

// Window lengths of the walks: a step older than this many samples drops
// out, which keeps the walk bounded and Sample O(window) instead of O(seq).
const (
	tempWindow     = 64
	humidityWindow = 32
)

// Sample returns device's reading number seq. It is a pure function of
// its arguments (a counter-based RNG seeded with device and seq), so a
// test can recompute what any device sent.
func Sample(device, seq int) Reading {
	d := uint64(device)
	baseTemp := 17 + 8*unit(d, 0, chBaseTemp)
	baseHumidity := 35 + 25*unit(d, 0, chBaseHumidity)
	basePressure := 1003 + 18*unit(d, 0, chBasePressure)
	battery0 := 88 + 12*unit(d, 0, chBaseBattery)
	drain := 0.0005 + 0.002*unit(d, 0, chDrain) // % per message
	baseRSSI := -50 - 30*unit(d, 0, chBaseRSSI)

	temp := baseTemp + walk(d, seq, chTempStep, tempWindow, 0.08) + 2*smooth(d, seq, chTempSlow, 600)
	humidity := baseHumidity - 1.5*(temp-baseTemp) + walk(d, seq, chHumidityStep, humidityWindow, 0.4)
	pressure := basePressure + 4*smooth(d, seq, chPressureSlow, 3000) + 0.3*(unit(d, uint64(seq), chPressureNoise)-0.5)

	return Reading{
		Seq:         seq,
		Temperature: round(temp, 100),
		Humidity:    round(math.Min(99, math.Max(3, humidity)), 10),
		Pressure:    round(pressure, 100),
		Battery:     round(math.Max(0, battery0-drain*float64(seq)), 100),
		RSSI:        int(math.Round(baseRSSI + 10*(unit(d, uint64(seq), chRSSINoise)-0.5))),
		Motion:      unit(d, uint64(seq), chMotion) < 0.05,
	}
}

// Telemetry returns device's telemetry message number seq in the given
// ThingsBoard shape, with ts fields (milliseconds) taken from now. Every
// shape carries all of Sample(device, seq) and exactly one "seq" key:
//
//	object:   {"seq":7,"temperature":21.53,"humidity":48.2,"pressure":1012.08,"battery":97.31,"rssi":-67,"motion":false}
//	array:    [{"seq":7,"temperature":21.53,"humidity":48.2},{"pressure":1012.08,"battery":97.31},{"rssi":-67,"motion":false}]
//	ts:       {"ts":1767225600000,"values":{"seq":7,"temperature":21.53,...}}
//	ts-array: [{"ts":1767225599000,"values":{"temperature":21.53,"humidity":48.2,"pressure":1012.08}},
//	           {"ts":1767225600000,"values":{"seq":7,"battery":97.31,"rssi":-67,"motion":false}}]
//
// In ts-array the climate values were sampled a second before the rest.
// Floating-point values always carry a decimal point, so ThingsBoard
// stores them as DOUBLE every time, never as LONG. An unknown shape is
// encoded as object.
func Telemetry(shape string, device, seq int, now time.Time) []byte {
	r := Sample(device, seq)
	ts := now.UnixMilli()
	b := make([]byte, 0, 192)
	switch shape {
	case ShapeArray:
		b = append(b, `[{"seq":`...)
		b = strconv.AppendInt(b, int64(r.Seq), 10)
		b = r.appendClimate(append(b, ','))
		b = append(b, `},{`...)
		b = r.appendPower(b)
		b = append(b, `},{`...)
		b = r.appendRadio(b)
		b = append(b, `}]`...)
	case ShapeTS:
		b = append(b, `{"ts":`...)
		b = strconv.AppendInt(b, ts, 10)
		b = append(b, `,"values":`...)
		b = r.appendObject(b)
		b = append(b, '}')
	case ShapeTSArray:
		b = append(b, `[{"ts":`...)
		b = strconv.AppendInt(b, ts-1000, 10)
		b = append(b, `,"values":{`...)
		b = r.appendClimate(b)
		b = append(b, `,"pressure":`...)
		b = strconv.AppendFloat(b, r.Pressure, 'f', 2, 64)
		b = append(b, `}},{"ts":`...)
		b = strconv.AppendInt(b, ts, 10)
		b = append(b, `,"values":{"seq":`...)
		b = strconv.AppendInt(b, int64(r.Seq), 10)
		b = append(b, `,"battery":`...)
		b = strconv.AppendFloat(b, r.Battery, 'f', 2, 64)
		b = r.appendRadio(append(b, ','))
		b = append(b, `}}]`...)
	default:
		b = r.appendObject(b)
	}
	return b
}

// Attributes returns device's client attributes as sent after telemetry
// message seq: static board facts plus a few that change.
func Attributes(device, seq int) []byte {
	r := Sample(device, seq)
	return fmt.Appendf(nil,
		`{"model":"ferry-sim-board","firmwareVersion":"1.4.2","serialNumber":"SIM-%06d","batteryLow":%t,"lastSeq":%d}`,
		device, r.Battery < 20, seq)
}

func (r Reading) appendObject(b []byte) []byte {
	b = append(b, `{"seq":`...)
	b = strconv.AppendInt(b, int64(r.Seq), 10)
	b = r.appendClimate(append(b, ','))
	b = append(b, `,"pressure":`...)
	b = strconv.AppendFloat(b, r.Pressure, 'f', 2, 64)
	b = append(b, `,"battery":`...)
	b = strconv.AppendFloat(b, r.Battery, 'f', 2, 64)
	b = r.appendRadio(append(b, ','))
	return append(b, '}')
}

// appendClimate appends "temperature" and "humidity" without braces.
func (r Reading) appendClimate(b []byte) []byte {
	b = append(b, `"temperature":`...)
	b = strconv.AppendFloat(b, r.Temperature, 'f', 2, 64)
	b = append(b, `,"humidity":`...)
	return strconv.AppendFloat(b, r.Humidity, 'f', 1, 64)
}

// appendPower appends "pressure" and "battery" without braces.
func (r Reading) appendPower(b []byte) []byte {
	b = append(b, `"pressure":`...)
	b = strconv.AppendFloat(b, r.Pressure, 'f', 2, 64)
	b = append(b, `,"battery":`...)
	return strconv.AppendFloat(b, r.Battery, 'f', 2, 64)
}

// appendRadio appends "rssi" and "motion" without braces.
func (r Reading) appendRadio(b []byte) []byte {
	b = append(b, `"rssi":`...)
	b = strconv.AppendInt(b, int64(r.RSSI), 10)
	b = append(b, `,"motion":`...)
	return strconv.AppendBool(b, r.Motion)
}

// rpcReply is the device's answer to a server-side RPC request.
func rpcReply(device, seq int, request []byte) []byte {
	var req struct {
		Method string          `json:"method"`
		Params json.RawMessage `json:"params"`
	}
	if err := json.Unmarshal(request, &req); err != nil || req.Method == "" {
		return []byte(`{"error":"invalid RPC request"}`)
	}
	switch req.Method {
	case "getTelemetry", "getState":
		return Sample(device, seq).appendObject(nil)
	case "ping":
		return []byte(`{"pong":true}`)
	default:
		params := req.Params
		if len(params) == 0 {
			params = json.RawMessage("null")
		}
		out, err := json.Marshal(struct {
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
			Result string          `json:"result"`
		}{req.Method, params, "ok"})
		if err != nil { // params were valid JSON inside valid JSON; cannot happen
			return []byte(`{"error":"cannot encode reply"}`)
		}
		return out
	}
}

// walk is a random walk that forgets steps older than window samples:
// consecutive values differ by one fresh step minus one expired step.
func walk(device uint64, seq int, ch uint64, window int, step float64) float64 {
	var sum float64
	for k := range window {
		sum += unit(device, uint64(int64(seq-k)), ch) - 0.5
	}
	return sum * step
}

// smooth is value noise in [-1, 1]: random knots every period samples,
// joined by smoothstep.
func smooth(device uint64, seq int, ch uint64, period int) float64 {
	k, f := seq/period, float64(seq%period)/float64(period)
	a := 2*unit(device, uint64(k), ch) - 1
	b := 2*unit(device, uint64(k+1), ch) - 1
	f = f * f * (3 - 2*f)
	return a + (b-a)*f
}

// unit is a uniform number in [0, 1) determined by its arguments.
func unit(device, seq, ch uint64) float64 {
	h := splitmix(splitmix(splitmix(device)^seq) ^ ch<<56)
	return float64(h>>11) / (1 << 53)
}

// splitmix is the SplitMix64 finaliser, a fast high-quality mixer.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// round rounds v to 1/scale; dividing two exact integers makes the
// result the same float64 that parsing the printed decimal gives.
func round(v, scale float64) float64 {
	return math.Round(v*scale) / scale
}
