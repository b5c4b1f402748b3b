package modbussim

import (
	"fmt"
	"testing"
	"time"

	"github.com/simonvetter/modbus"
)

// BenchmarkRead reads two holding registers per transaction with
// simonvetter's client, over TCP and over RTU on a pty with the line
// emulated, and reports transactions a second beside the RTU line's
// theoretical limit, 1/LineTime. Fast RTU lines fall well short of the
// limit because of the client: its serial reads poll in 10 ms steps
// (goburrow/serial) and it sleeps t3.5 after every request.
func BenchmarkRead(b *testing.B) {
	b.Run("tcp", func(b *testing.B) {
		s := newSlave(b, Config{ManualClock: true})
		benchRead(b, newClient(b, startTCP(b, s), 1, time.Second))
	})
	for _, baud := range []int{9600, 115200} {
		b.Run(fmt.Sprintf("rtu-emulated-%d", baud), func(b *testing.B) {
			s := newSlave(b, Config{ManualClock: true, Line: Line{Baud: baud, Emulate: true}})
			benchRead(b, newClient(b, "rtu://"+startPTY(b, s), 1, time.Second))
			period := LineTime(baud, s.cfg.Line.BitsPerChar(), 8, 9)
			b.ReportMetric(1/period.Seconds(), "limit-txn/s")
		})
	}
}

func benchRead(b *testing.B, c *modbus.ModbusClient) {
	for b.Loop() {
		if _, err := c.ReadRegisters(0, 2, modbus.HOLDING_REGISTER); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "txn/s")
}
