package gpio

import (
	"sync"
	"time"

	"periph.io/x/conn/v3/physic"
	"periph.io/x/conn/v3/pin"

	periphgpio "periph.io/x/conn/v3/gpio"
)

// fakePin stands in for periph's gpiotest.Pin, which needs a module
// (github.com/jonboulle/clockwork) that go.sum does not list: a level, the
// settings it was given, the levels driven, and edges sent on a channel
// as gpiotest's EdgesChan, each carrying the time the clock shows when
// the pin sees it.
type fakePin struct {
	name  string
	clock *fakeClock
	edges chan edge
	halt  chan struct{}

	mu   sync.Mutex
	l    periphgpio.Level
	pull periphgpio.Pull
	edge periphgpio.Edge
	ins  int
	outs []periphgpio.Level
	back bool // a bounce is due: the next debounce wait flips the level
}

type edge struct {
	level  periphgpio.Level
	at     time.Time
	bounce bool // the level goes back during the debounce wait
}

func newFakePin(name string, clock *fakeClock) *fakePin {
	return &fakePin{name: name, clock: clock, edges: make(chan edge), halt: make(chan struct{}, 1)}
}

func (p *fakePin) WaitForEdge(timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case e := <-p.edges:
		p.clock.set(e.at)
		p.mu.Lock()
		p.l, p.back = e.level, e.bounce
		p.mu.Unlock()
		return true
	case <-t.C:
	case <-p.halt:
	}
	return false
}

func (p *fakePin) Halt() error {
	select {
	case p.halt <- struct{}{}:
	default:
	}
	return nil
}

func (p *fakePin) setLevel(l periphgpio.Level) {
	p.mu.Lock()
	p.l = l
	p.mu.Unlock()
}

// bounceBack flips the level if the last edge bounces.
func (p *fakePin) bounceBack() {
	p.mu.Lock()
	if p.back {
		p.l, p.back = !p.l, false
	}
	p.mu.Unlock()
}

func (p *fakePin) Read() periphgpio.Level {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.l
}

func (p *fakePin) In(pull periphgpio.Pull, e periphgpio.Edge) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pull, p.edge = pull, e
	p.ins++
	return nil
}

func (p *fakePin) Out(l periphgpio.Level) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.l = l
	p.outs = append(p.outs, l)
	return nil
}

func (p *fakePin) driven() []periphgpio.Level {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]periphgpio.Level(nil), p.outs...)
}

func (p *fakePin) String() string                              { return p.name }
func (p *fakePin) Name() string                                { return p.name }
func (p *fakePin) Number() int                                 { return 0 }
func (p *fakePin) Function() string                            { return "" }
func (p *fakePin) Func() pin.Func                              { return periphgpio.IN }
func (p *fakePin) SupportedFuncs() []pin.Func                  { return []pin.Func{periphgpio.IN, periphgpio.OUT} }
func (p *fakePin) SetFunc(pin.Func) error                      { return nil }
func (p *fakePin) Pull() periphgpio.Pull                       { return p.pull }
func (p *fakePin) DefaultPull() periphgpio.Pull                { return periphgpio.PullNoChange }
func (p *fakePin) PWM(periphgpio.Duty, physic.Frequency) error { return nil }

// fakeClock is the bus's clock; the pins move it as edges arrive.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}
