package modbus

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/ferry-iot/ferry/configs"
)

// BusConfig is a Modbus line: a serial port (rtu://), a TCP endpoint
// (tcp://) or a serial line behind a TCP converter (rtuovertcp://). All
// requests to its units are serialized.
type BusConfig struct {
	URL      string `mapstructure:"url"`
	Baud     int    `mapstructure:"baud"`      // rtu: default 9600
	DataBits int    `mapstructure:"data_bits"` // rtu: default 8
	Parity   string `mapstructure:"parity"`    // rtu: N (default), E or O
	StopBits int    `mapstructure:"stop_bits"` // rtu: default 1
	// Timeout is how long a request waits for its answer (default 500ms
	// on a serial line, 1s over TCP).
	Timeout time.Duration `mapstructure:"timeout"`
	// DelayBetweenRequests is the silence kept after one request's answer
	// before the next request, for slow devices and converters.
	DelayBetweenRequests time.Duration `mapstructure:"delay_between_requests"`
	// ReconnectMax caps the backoff between reconnection attempts of a
	// line that is down (default 30s); attempts go on forever.
	ReconnectMax time.Duration `mapstructure:"reconnect_max"`
	// DegradeAfter failed cycles in a row put a unit aside for
	// DegradeFor, so the line's other units keep their periods (defaults
	// 3 and 30s).
	DegradeAfter int           `mapstructure:"degrade_after"`
	DegradeFor   time.Duration `mapstructure:"degrade_for"`
}

// Transport kinds of a BusConfig's URL.
const (
	SchemeTCP        = "tcp"
	SchemeRTU        = "rtu"
	SchemeRTUOverTCP = "rtuovertcp"
)

// Scheme is the URL's transport, "" when it has none.
func (c BusConfig) Scheme() string {
	scheme, _, ok := strings.Cut(c.URL, "://")
	if !ok {
		return ""
	}
	return scheme
}

// Serial reports whether the line is a serial line (RTU framing, on a
// port or behind a converter): one request on it at a time, at its baud.
func (c BusConfig) Serial() bool { return c.Scheme() != SchemeTCP }

// Port is the serial port of an rtu:// line ("/dev/ttyUSB0"), "" for
// a line over TCP.
func (c BusConfig) Port() string {
	if c.Scheme() != SchemeRTU {
		return ""
	}
	return strings.TrimPrefix(c.URL, SchemeRTU+"://")
}

// WithDefaults fills unset settings.
func (c BusConfig) WithDefaults() BusConfig {
	if c.Baud == 0 {
		c.Baud = 9600
	}
	if c.DataBits == 0 {
		c.DataBits = 8
	}
	if c.Parity == "" {
		c.Parity = "N"
	}
	if c.StopBits == 0 {
		c.StopBits = 1
	}
	if c.Timeout == 0 {
		c.Timeout = time.Second
		if c.Scheme() == SchemeRTU {
			c.Timeout = 500 * time.Millisecond
		}
	}
	if c.ReconnectMax == 0 {
		c.ReconnectMax = 30 * time.Second
	}
	return c
}

// Validate checks c, naming keys relative to the bus's modbus section.
func (c BusConfig) Validate() error {
	var p configs.Problems
	scheme, rest, ok := strings.Cut(c.URL, "://")
	switch {
	case c.URL == "":
		p.Add("url", "is required (tcp://host:502, rtu:///dev/ttyUSB0 or rtuovertcp://host:4001)")
	case !ok:
		p.Add("url", "%q has no scheme (tcp://, rtu:// or rtuovertcp://)", c.URL)
	case scheme == SchemeRTU:
		if !strings.HasPrefix(rest, "/") {
			p.Add("url", "%q: a serial port is a path (rtu:///dev/ttyUSB0)", c.URL)
		}
	case scheme == SchemeTCP, scheme == SchemeRTUOverTCP:
		u, err := url.Parse(c.URL)
		if err != nil {
			p.Add("url", "%q: %v", c.URL, err)
		} else if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" {
			p.Add("url", "%q: needs host:port (tcp://10.0.0.5:502)", c.URL)
		}
	default:
		p.Add("url", "%q: scheme %q is not tcp, rtu or rtuovertcp", c.URL, scheme)
	}
	if c.Baud < 0 || c.Baud > 4_000_000 {
		p.Add("baud", "%d is out of range", c.Baud)
	}
	if c.DataBits != 0 && (c.DataBits < 7 || c.DataBits > 8) {
		p.Add("data_bits", "%d is not 7 or 8", c.DataBits)
	}
	switch strings.ToUpper(c.Parity) {
	case "", "N", "E", "O":
	default:
		p.Add("parity", "%q is not N, E or O", c.Parity)
	}
	if c.StopBits != 0 && c.StopBits != 1 && c.StopBits != 2 {
		p.Add("stop_bits", "%d is not 1 or 2", c.StopBits)
	}
	for key, d := range map[string]time.Duration{"timeout": c.Timeout, "delay_between_requests": c.DelayBetweenRequests,
		"reconnect_max": c.ReconnectMax, "degrade_for": c.DegradeFor} {
		if d < 0 {
			p.Add(key, "%v is negative", d)
		}
	}
	if c.DegradeAfter < 0 {
		p.Add("degrade_after", "%d is negative", c.DegradeAfter)
	}
	return p.Err()
}

// DeviceConfig is a Modbus unit's part of a device's source section.
type DeviceConfig struct {
	Unit int `mapstructure:"unit"` // 1-247 on a serial line; 0-255 over TCP (255: the endpoint itself)
	// ByteOrder is the device's default order of multi-register values,
	// named as Telegraf does: ABCD (big-endian, the default), DCBA
	// (little-endian), BADC (bytes swapped in each register), CDAB
	// (registers swapped, bytes big-endian).
	ByteOrder string `mapstructure:"byte_order"`
	// MaxRegistersPerRequest caps a merged read for devices that take
	// less than the protocol's 125 registers (2000 bits for coils and
	// discrete inputs).
	MaxRegistersPerRequest int `mapstructure:"max_registers_per_request"`
	// MaxReadGap is how many unused registers a merged read may span
	// between two points (-1: none; 0: any, within the request limit).
	// Devices that answer illegal data address for unmapped registers
	// need -1.
	MaxReadGap       int     `mapstructure:"max_read_gap"`
	Timeseries       []Point `mapstructure:"timeseries"`
	Attributes       []Point `mapstructure:"attributes"`
	RPC              []Point `mapstructure:"rpc"`
	AttributeUpdates []Point `mapstructure:"attribute_updates"`
}

// Point is one value on a unit: a time series, an attribute, an RPC
// method or an attribute write.
type Point struct {
	Key      string  `mapstructure:"key"`    // timeseries, attributes, attribute_updates
	Method   string  `mapstructure:"method"` // rpc
	Register string  `mapstructure:"register"`
	Address  int     `mapstructure:"address"` // 0-based protocol address (the 40001 register is holding 0)
	Type     string  `mapstructure:"type"`
	Count    int     `mapstructure:"count"` // registers of a string
	Scale    float64 `mapstructure:"scale"` // value = raw × scale (0: 1)
	Bit      *int    `mapstructure:"bit"`   // a bool taken from one bit of a register
	// ByteOrder overrides the device's for this point.
	ByteOrder string `mapstructure:"byte_order"`
}

// IsModbus reports whether a device's source section is a Modbus unit's
// (it names registers or a unit).
func (c DeviceConfig) IsModbus() bool {
	return c.Unit != 0 || len(c.Timeseries)+len(c.Attributes)+len(c.RPC)+len(c.AttributeUpdates) > 0
}

// Validate checks c for a unit on bus (keys relative to the device's
// source section).
func (c DeviceConfig) Validate(bus BusConfig) error {
	var p configs.Problems
	maxUnit := 247
	if !bus.Serial() {
		maxUnit = 255
	}
	if c.Unit < 0 || c.Unit > maxUnit || (bus.Serial() && c.Unit == 0) {
		p.Add("unit", "%d is not a unit id (1-%d; 0 is the broadcast address, which never answers)", c.Unit, maxUnit)
	}
	if _, err := parseOrder(c.ByteOrder); err != nil {
		p.Add("byte_order", "%v", err)
	}
	if c.MaxRegistersPerRequest < 0 || c.MaxRegistersPerRequest > maxWords {
		p.Add("max_registers_per_request", "%d is not within 1-%d", c.MaxRegistersPerRequest, maxWords)
	}
	if c.MaxReadGap < -1 {
		p.Add("max_read_gap", "%d: use -1 (no gaps), 0 (any) or a register count", c.MaxReadGap)
	}
	if len(c.Timeseries)+len(c.Attributes) == 0 {
		p.Add("timeseries", "a Modbus device needs timeseries or attributes to poll")
	}
	seen := map[string]string{}
	check := func(section string, pts []Point, named string) {
		for i, pt := range pts {
			key := fmt.Sprintf("%s[%d]", section, i)
			name := pt.Key
			if named == "method" {
				name = pt.Method
			}
			switch {
			case name == "":
				p.Add(key+"."+named, "is required")
			case seen[section+"/"+name] != "":
				p.Add(key+"."+named, "%q repeats %s", name, seen[section+"/"+name])
			default:
				seen[section+"/"+name] = key
			}
			if named == "key" && pt.Method != "" {
				p.Add(key+".method", "belongs in rpc entries")
			}
			if cp, err := compilePoint(pt, c.ByteOrder); err != nil {
				p.Nest(key, err)
			} else if !cp.reg.bits() && c.MaxRegistersPerRequest > 0 && cp.n > c.MaxRegistersPerRequest {
				p.Add(key, "spans %d registers, more than max_registers_per_request %d", cp.n, c.MaxRegistersPerRequest)
			}
			if section == "attribute_updates" {
				if r, _ := parseRegister(pt.Register); r == Discrete || r == Input {
					p.Add(key+".register", "%s registers cannot be written", pt.Register)
				}
			}
		}
	}
	check("timeseries", c.Timeseries, "key")
	check("attributes", c.Attributes, "key")
	check("rpc", c.RPC, "method")
	check("attribute_updates", c.AttributeUpdates, "key")
	return p.Err()
}
