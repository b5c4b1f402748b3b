package modbussim

import (
	"context"
	"encoding/hex"
	"log"
	"strings"
	"testing"
	"time"

	"github.com/simonvetter/modbus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newSlave starts a slave closed at the end of the test.
func newSlave(t testing.TB, cfg Config) *Slave {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// units is a config entry per id, with default settings.
func units(ids ...uint8) []UnitConfig {
	u := make([]UnitConfig, len(ids))
	for i, id := range ids {
		u[i].ID = id
	}
	return u
}

// startTCP serves s on a free port until the end of the test.
func startTCP(t testing.TB, s *Slave) string {
	t.Helper()
	srv, err := s.StartTCP("tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	return srv.URL()
}

// startPTY serves s over RTU on a new pty until the end of the test and
// returns the pty's client path.
func startPTY(t testing.TB, s *Slave) string {
	t.Helper()
	p, err := OpenPTY()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeRTU(ctx, p) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p.Path
}

// newClient opens a simonvetter client (tcp:// or rtu://) talking to unit.
func newClient(t testing.TB, url string, unit uint8, timeout time.Duration) *modbus.ModbusClient {
	t.Helper()
	c, err := modbus.NewClient(&modbus.ClientConfiguration{
		URL: url, Speed: 9600, Timeout: timeout, Logger: log.New(testWriter{t}, "", 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Open(); err != nil {
		t.Fatal(err)
	}
	if err := c.SetUnitId(unit); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// testWriter sends a client's log lines to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// frame decodes hex bytes ("01 03 00 00") and appends their CRC.
func frame(t testing.TB, h string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(h, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return appendCRC(b)
}
