package i2c

import (
	"context"

	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/mcp9808"

	"github.com/ferry-iot/ferry/devices/adapter"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// openMCP9808 sets up a Microchip MCP9808 through periph's mcp9808: the
// resolution register (0x08) to 0.0625 °C, then the configuration
// register (0x01) to continuous conversion; each read reads the ambient
// temperature register (0x05).
func openMCP9808(_ context.Context, b *Bus, addr uint16, _ adapter.SensorConfig) (driver, error) {
	dev, err := mcp9808.New(b.bus, &mcp9808.Opts{Addr: int(addr), Res: mcp9808.Maximum})
	if err != nil {
		return nil, err
	}
	return mcp{dev}, nil
}

type mcp struct{ dev *mcp9808.Dev }

func (d mcp) read(context.Context) ([]tb.KV, error) {
	var e physic.Env
	if err := d.dev.Sense(&e); err != nil {
		return nil, err
	}
	return []tb.KV{adapter.Double(KeyTemperature, Celsius(e.Temperature))}, nil
}
