package modbus

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	mb "github.com/simonvetter/modbus"

	"github.com/ferry-iot/ferry/devices/adapter"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// Device is one Modbus unit on a Line: an adapter.Source, Caller and
// AttributeWriter.
type Device struct {
	line   *Line
	unit   uint8
	reads  []read   // timeseries and attributes, merged
	series []*point // in configuration order
	attrs  []*point
	// kvs are the last Read's values by point index — the series, then
	// the attributes — keys set once, values decoded in place.
	kvs    []tb.KV
	rpc    map[string]*point
	writes map[string]*point // attribute_updates by key
}

// NewDevice compiles cfg for a unit on line.
func NewDevice(line *Line, cfg DeviceConfig) (*Device, error) {
	if err := cfg.Validate(line.cfg); err != nil {
		return nil, fmt.Errorf("modbus: %w", err)
	}
	d := &Device{line: line, unit: uint8(cfg.Unit), rpc: map[string]*point{}, writes: map[string]*point{}}
	compile := func(pts []Point) []*point {
		out := make([]*point, len(pts))
		for i, pt := range pts {
			c, _ := compilePoint(pt, cfg.ByteOrder) // validated
			out[i] = &c
		}
		return out
	}
	d.series, d.attrs = compile(cfg.Timeseries), compile(cfg.Attributes)
	all := append(append([]*point(nil), d.series...), d.attrs...)
	d.kvs = make([]tb.KV, len(all))
	for i, p := range all {
		p.index = i
		d.kvs[i].Key = p.name
	}
	for _, p := range compile(cfg.RPC) {
		d.rpc[p.name] = p
	}
	for _, p := range compile(cfg.AttributeUpdates) {
		d.writes[p.name] = p
	}
	gap := cfg.MaxReadGap
	d.reads = planReads(append(append([]*point(nil), d.series...), d.attrs...), cfg.MaxRegistersPerRequest, gap)
	return d, nil
}

// Requests is the number of requests one poll makes.
func (d *Device) Requests() int { return len(d.reads) }

// Read polls the unit: every merged request, then the values decoded.
// Any failed request fails the poll (values of one sample time or none).
// The telemetry slice is reused by the next Read (adapter.Source allows
// it).
func (d *Device) Read(ctx context.Context) (adapter.Reading, error) {
	at := time.Now()
	for i := range d.reads {
		if err := d.readOne(ctx, &d.reads[i], d.kvs); err != nil {
			return adapter.Reading{}, err
		}
	}
	out := adapter.Reading{Time: at, Telemetry: d.kvs[:len(d.series)]}
	if len(d.attrs) > 0 {
		out.Attributes = d.kvs[len(d.series):]
	}
	return out, nil
}

// readOne runs one merged request and decodes its points into kvs (by
// point index).
func (d *Device) readOne(ctx context.Context, r *read, kvs []tb.KV) error {
	var words []uint16
	var bits []bool
	err := d.line.do(ctx, d.unit, func(c *mb.ModbusClient) error {
		var err error
		switch r.reg {
		case Coil:
			bits, err = c.ReadCoils(r.addr, r.count)
		case Discrete:
			bits, err = c.ReadDiscreteInputs(r.addr, r.count)
		case Holding:
			words, err = c.ReadRegisters(r.addr, r.count, mb.HOLDING_REGISTER)
		case Input:
			words, err = c.ReadRegisters(r.addr, r.count, mb.INPUT_REGISTER)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("%w (%s %d+%d)", err, r.reg, r.addr, r.count)
	}
	if len(words) < int(r.count) && len(bits) < int(r.count) {
		return adapter.Errorf(adapter.KindProtocol, fmt.Errorf("modbus: unit %d answered %d of %d %s values", d.unit, max(len(words), len(bits)), r.count, r.reg))
	}
	for _, p := range r.points {
		off := int(p.addr - r.addr)
		var v tb.Value
		var err error
		if r.reg.bits() {
			v, err = p.decode(nil, bits[off:off+1])
		} else {
			v, err = p.decode(words[off:off+p.n], nil)
		}
		if err != nil {
			return adapter.Errorf(adapter.KindDevice, err)
		}
		kvs[p.index].Value = v
	}
	return nil
}

// Call answers an RPC: the method names an rpc entry; params (a number,
// bool or string, or {"value": ...}) are written with its type and scale
// and answered {"ok":true,"value":...}; without params (or on a read-only
// table) the entry is read and answered {"value":...}.
func (d *Device) Call(ctx context.Context, method string, params json.RawMessage) (json.RawMessage, error) {
	p := d.rpc[method]
	if p == nil {
		return nil, adapter.Errorf(adapter.KindRequest, fmt.Errorf("%w: %q", adapter.ErrUnknownMethod, method))
	}
	v, has, err := paramValue(params)
	if err != nil {
		return nil, adapter.Errorf(adapter.KindRequest, fmt.Errorf("modbus: %s: %w", method, err))
	}
	if has && p.reg != Discrete && p.reg != Input {
		if err := d.write(ctx, p, v); err != nil {
			return nil, err
		}
		return json.Marshal(map[string]any{"ok": true, "value": json.RawMessage(v.AppendJSON(nil))})
	}
	one := *p
	one.index = 0
	kv := make([]tb.KV, 1)
	r := read{reg: p.reg, addr: p.addr, count: uint16(p.n), points: []*point{&one}}
	if err := d.readOne(ctx, &r, kv); err != nil {
		return nil, err
	}
	return json.Marshal(map[string]any{"value": json.RawMessage(kv[0].Value.AppendJSON(nil))})
}

// WriteAttribute writes a shared attribute through its attribute_updates
// entry.
func (d *Device) WriteAttribute(ctx context.Context, key string, v tb.Value) (bool, error) {
	p := d.writes[key]
	if p == nil {
		return false, nil
	}
	return true, d.write(ctx, p, v)
}

// write encodes v for p and writes it: FC 5 for a coil, FC 6 for one
// register, FC 16 for several, and for a bit of a register a read of the
// register then FC 6 with the bit changed.
func (d *Device) write(ctx context.Context, p *point, v tb.Value) error {
	words, on, err := p.encode(v)
	if err != nil {
		return adapter.Errorf(adapter.KindRequest, err)
	}
	return d.line.do(ctx, d.unit, func(c *mb.ModbusClient) error {
		switch {
		case p.reg == Coil:
			return c.WriteCoil(p.addr, on)
		case p.typ == Bool && p.bit >= 0:
			cur, err := c.ReadRegister(p.addr, mb.HOLDING_REGISTER)
			if err != nil {
				return err
			}
			if on {
				cur |= 1 << p.bit
			} else {
				cur &^= 1 << p.bit
			}
			return c.WriteRegister(p.addr, cur)
		case p.typ == Bool:
			w := uint16(0)
			if on {
				w = 1
			}
			return c.WriteRegister(p.addr, w)
		case len(words) == 1:
			return c.WriteRegister(p.addr, words[0])
		}
		return c.WriteRegisters(p.addr, words)
	})
}

// paramValue reads an RPC's params: absent or null (a read), a bare
// value, or {"value": ...}.
func paramValue(params json.RawMessage) (tb.Value, bool, error) {
	params = bytes.TrimSpace(params)
	if len(params) == 0 || string(params) == "null" || string(params) == "{}" {
		return tb.Value{}, false, nil
	}
	if params[0] == '{' {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(params, &obj); err != nil {
			return tb.Value{}, false, fmt.Errorf("params: %w", err)
		}
		raw, ok := obj["value"]
		if !ok {
			return tb.Value{}, false, fmt.Errorf("params: an object needs \"value\"")
		}
		params = raw
	}
	v, ok, err := tb.ParseValue(params)
	if err != nil || !ok || v.Kind == tb.KindJSON {
		return tb.Value{}, false, fmt.Errorf("params: %s is not a number, bool or string", params)
	}
	return v, true, nil
}
