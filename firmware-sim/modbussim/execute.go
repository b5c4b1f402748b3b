package modbussim

import "time"

// request is one decoded Modbus request, whatever carried it.
type request struct {
	unit  uint8
	fc    byte // function code (RTU only; the TCP server encodes its own answers)
	table Table
	write bool
	addr  uint16
	qty   uint16
	bools []bool   // values to write to coils
	regs  []uint16 // values to write to holding registers
}

// result is what a request read, or the exception it earned.
type result struct {
	bools []bool
	regs  []uint16
	exc   byte // 0: none
}

// unitState is what the transports check before executing: whether the
// unit is served, dead, and how long it delays answers.
type unitState struct {
	served  bool
	dead    bool
	revived <-chan struct{}
	delay   time.Duration
}

func (s *Slave) state(id uint8) unitState {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.mu.units[id]
	if !ok {
		return unitState{}
	}
	return unitState{served: true, dead: u.dead, revived: u.revived, delay: u.delay}
}

// apply executes req on its unit and counts the outcome.
func (s *Slave) apply(req *request) result {
	s.mu.Lock()
	u, ok := s.mu.units[req.unit]
	var res result
	if ok {
		res = u.apply(req)
	} else {
		res = result{exc: ExGatewayPathUnavailable}
	}
	s.mu.Unlock()
	if res.exc != 0 {
		s.stats.exceptions.Add(1)
	} else {
		s.stats.answers.Add(1)
	}
	return res
}

// broadcast executes a write on every unit that is alive (unit id 0 on a
// serial line); nothing answers.
func (s *Slave) broadcast(req *request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range s.mu.units {
		if !u.dead {
			u.apply(req)
		}
	}
}

// apply executes req. The transports have checked function codes and
// quantities already; apply checks the address range, the exception
// ranges and the setpoint's limits. Guarded by Slave.mu.
func (u *unit) apply(req *request) result {
	end := int(req.addr) + int(req.qty)
	if req.qty == 0 || end > tableSize {
		return result{exc: ExIllegalDataAddress}
	}
	for _, r := range u.exceptions {
		if r.overlaps(req.table, req.addr, req.qty) {
			return result{exc: r.Code}
		}
	}
	switch req.table {
	case Coils:
		if req.write {
			copy(u.coils[req.addr:end], req.bools)
			return result{}
		}
		return result{bools: append([]bool(nil), u.coils[req.addr:end]...)}
	case DiscreteInputs:
		return result{bools: append([]bool(nil), u.discrete[req.addr:end]...)}
	case HoldingRegisters:
		if req.write {
			if i := HoldingSetpoint - int(req.addr); i >= 0 && i < len(req.regs) {
				if v := int16(req.regs[i]); v < setpointMin || v > setpointMax {
					return result{exc: ExIllegalDataValue}
				}
			}
			copy(u.holding[req.addr:end], req.regs)
			return result{}
		}
		return result{regs: append([]uint16(nil), u.holding[req.addr:end]...)}
	case InputRegisters:
		return result{regs: append([]uint16(nil), u.input[req.addr:end]...)}
	}
	return result{exc: ExIllegalFunction}
}
