package modbussim

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// tableSize is the number of addresses in each table.
const tableSize = 1 << 16

// Slave is a simulated Modbus device with one or more units. It is safe
// for concurrent use. Methods taking a unit id panic if the slave does
// not serve that unit: that is a bug in the calling test, like an index
// out of range.
type Slave struct {
	cfg    Config
	ctx    context.Context // cancelled by Close: ends ticks, holds, delays and serving
	cancel context.CancelFunc
	wg     sync.WaitGroup // the tick loop and every ServeRTU call
	stats  counters

	mu struct {
		sync.Mutex
		closed  bool
		units   map[uint8]*unit
		servers map[*TCPServer]struct{}
	}
}

// unit is one unit id's register banks, meter and faults. Guarded by
// Slave.mu.
type unit struct {
	id       uint8
	order    WordOrder
	coils    []bool   // tableSize
	discrete []bool   // tableSize
	holding  []uint16 // tableSize
	input    []uint16 // tableSize
	meter    meter

	dead       bool
	revived    chan struct{} // closed when the unit comes back to life
	delay      time.Duration
	exceptions []ExceptionRange
}

// Stats counts what the slave did, over every transport.
type Stats struct {
	Requests   uint64 // requests to served units, broadcasts included
	Answers    uint64 // normal answers
	Exceptions uint64 // exception answers
	Silent     uint64 // requests to dead units, not answered (RTU) or held (TCP)
	Ignored    uint64 // RTU frames for units not served, and exception answers seen on the bus
	BadFrames  uint64 // RTU frames dropped: bad CRC, incomplete or too long
}

type counters struct {
	requests, answers, exceptions, silent, ignored, badFrames atomic.Uint64
}

// New validates cfg and returns a Slave whose meters tick (unless
// cfg.ManualClock) until Close.
func New(cfg Config) (*Slave, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Slave{cfg: cfg}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.mu.units = make(map[uint8]*unit, len(cfg.Units))
	s.mu.servers = map[*TCPServer]struct{}{}
	for _, uc := range cfg.Units {
		u := &unit{
			id:         uc.ID,
			order:      uc.WordOrder,
			coils:      make([]bool, tableSize),
			discrete:   make([]bool, tableSize),
			holding:    make([]uint16, tableSize),
			input:      make([]uint16, tableSize),
			meter:      newMeter(cfg.Seed, uc.ID),
			dead:       uc.Dead,
			revived:    make(chan struct{}),
			delay:      uc.Delay,
			exceptions: slices.Clone(uc.Exceptions),
		}
		u.initRegisters()
		s.mu.units[uc.ID] = u
	}
	if !cfg.ManualClock {
		s.wg.Add(1)
		go s.tickLoop()
	}
	return s, nil
}

// Close stops the meters, every TCP server started by StartTCP or
// ServeTCP and every ServeRTU call, and waits for them. It does not close
// ports passed to ServeRTU.
func (s *Slave) Close() error {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return nil
	}
	s.mu.closed = true
	servers := make([]*TCPServer, 0, len(s.mu.servers))
	for t := range s.mu.servers {
		servers = append(servers, t)
	}
	s.mu.Unlock()
	s.cancel()
	var first error
	for _, t := range servers {
		if err := t.Close(); err != nil && first == nil {
			first = err
		}
	}
	s.wg.Wait()
	return first
}

// begin registers a goroutine or serving call with s.wg, unless s is
// closed.
func (s *Slave) begin() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return ErrClosed
	}
	s.wg.Add(1)
	return nil
}

func (s *Slave) tickLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			s.step(now.Sub(last))
			last = now
		}
	}
}

// Advance moves every meter forward by d, in steps of at most Config.Tick.
// With Config.ManualClock it is the only way the meters change.
func (s *Slave) Advance(d time.Duration) {
	for d > 0 {
		dt := min(d, s.cfg.Tick)
		s.step(dt)
		d -= dt
	}
}

// step moves every meter forward by dt.
func (s *Slave) step(dt time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range s.mu.units {
		u.meter.step(dt, u.coils[CoilRelay])
		u.meter.store(u)
	}
}

// Units returns the served unit ids in increasing order.
func (s *Slave) Units() []uint8 {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]uint8, 0, len(s.mu.units))
	for id := range s.mu.units {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// unitList is the served unit ids for logs: "1,2,3".
func (s *Slave) unitList() string {
	ids := s.Units()
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.Itoa(int(id))
	}
	return strings.Join(parts, ",")
}

// Stats returns the counters so far.
func (s *Slave) Stats() Stats {
	c := &s.stats
	return Stats{
		Requests: c.requests.Load(), Answers: c.answers.Load(), Exceptions: c.exceptions.Load(),
		Silent: c.silent.Load(), Ignored: c.ignored.Load(), BadFrames: c.badFrames.Load(),
	}
}

// withUnit runs f on unit id under the lock.
func (s *Slave) withUnit(id uint8, f func(u *unit)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.mu.units[id]
	if !ok {
		panic(fmt.Sprintf("modbussim: unit %d is not served", id))
	}
	f(u)
}

// Reading decodes unit id's mapped registers.
func (s *Slave) Reading(id uint8) (r Reading) {
	s.withUnit(id, func(u *unit) { r = u.reading() })
	return r
}

// Coil returns coil addr of unit id.
func (s *Slave) Coil(id uint8, addr uint16) (v bool) {
	s.withUnit(id, func(u *unit) { v = u.coils[addr] })
	return v
}

// SetCoil sets coil addr of unit id.
func (s *Slave) SetCoil(id uint8, addr uint16, v bool) {
	s.withUnit(id, func(u *unit) { u.coils[addr] = v })
}

// DiscreteInput returns discrete input addr of unit id.
func (s *Slave) DiscreteInput(id uint8, addr uint16) (v bool) {
	s.withUnit(id, func(u *unit) { v = u.discrete[addr] })
	return v
}

// SetDiscreteInput sets discrete input addr of unit id. The meter rewrites
// the mapped ones at every tick.
func (s *Slave) SetDiscreteInput(id uint8, addr uint16, v bool) {
	s.withUnit(id, func(u *unit) { u.discrete[addr] = v })
}

// Holding returns holding register addr of unit id.
func (s *Slave) Holding(id uint8, addr uint16) (v uint16) {
	s.withUnit(id, func(u *unit) { v = u.holding[addr] })
	return v
}

// SetHolding sets holding register addr of unit id.
func (s *Slave) SetHolding(id uint8, addr uint16, v uint16) {
	s.withUnit(id, func(u *unit) { u.holding[addr] = v })
}

// Input returns input register addr of unit id.
func (s *Slave) Input(id uint8, addr uint16) (v uint16) {
	s.withUnit(id, func(u *unit) { v = u.input[addr] })
	return v
}

// SetInput sets input register addr of unit id. The meter rewrites the
// mapped ones at every tick.
func (s *Slave) SetInput(id uint8, addr uint16, v uint16) {
	s.withUnit(id, func(u *unit) { u.input[addr] = v })
}

// SetDead makes unit id stop answering (dead) or answer again. Requests the
// TCP server holds for it are answered at once when it comes back.
func (s *Slave) SetDead(id uint8, dead bool) {
	s.withUnit(id, func(u *unit) {
		if u.dead && !dead {
			close(u.revived)
			u.revived = make(chan struct{})
		}
		u.dead = dead
	})
}

// SetDelay makes unit id wait d before every answer.
func (s *Slave) SetDelay(id uint8, d time.Duration) {
	s.withUnit(id, func(u *unit) { u.delay = max(d, 0) })
}

// AddException makes unit id answer requests touching r with an exception
// (r.Code, or ExIllegalDataAddress when zero).
func (s *Slave) AddException(id uint8, r ExceptionRange) error {
	if r.Code == 0 {
		r.Code = ExIllegalDataAddress
	}
	if err := r.validate(); err != nil {
		return fmt.Errorf("modbussim: exception range: %w", err)
	}
	s.withUnit(id, func(u *unit) { u.exceptions = append(u.exceptions, r) })
	return nil
}

// ClearExceptions removes every exception range of unit id.
func (s *Slave) ClearExceptions(id uint8) {
	s.withUnit(id, func(u *unit) { u.exceptions = nil })
}

// sleep waits d, or until ctx or the slave ends; it reports whether the
// whole d passed.
func (s *Slave) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-s.ctx.Done():
	}
	return false
}
