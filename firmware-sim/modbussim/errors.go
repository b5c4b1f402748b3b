package modbussim

import (
	"errors"

	"github.com/simonvetter/modbus"
)

// Sentinel errors.
var (
	// ErrInvalidConfig wraps every configuration problem (each a
	// *configs.FieldError naming its Config field).
	ErrInvalidConfig = errors.New("modbussim: invalid config")
	// ErrClosed is returned by the serving methods of a closed Slave.
	ErrClosed = errors.New("modbussim: slave closed")
	// ErrUnsupported is returned by OpenPTY and OpenSerial where there is
	// no termios support (anything but Linux). It wraps
	// errors.ErrUnsupported.
	ErrUnsupported = errUnsupported{}
)

type errUnsupported struct{}

func (errUnsupported) Error() string { return "modbussim: serial ports and ptys need Linux" }

func (errUnsupported) Unwrap() error { return errors.ErrUnsupported }

// Modbus exception codes (Modbus Application Protocol v1.1b3, 7).
const (
	ExIllegalFunction         byte = 0x01
	ExIllegalDataAddress      byte = 0x02
	ExIllegalDataValue        byte = 0x03
	ExServerDeviceFailure     byte = 0x04
	ExAcknowledge             byte = 0x05
	ExServerDeviceBusy        byte = 0x06
	ExMemoryParityError       byte = 0x08
	ExGatewayPathUnavailable  byte = 0x0A
	ExGatewayTargetNoResponse byte = 0x0B
)

// exceptionErrors maps the exception codes a unit can be told to answer
// to the errors simonvetter's TCP server turns back into them. The server
// compares with ==, so handlers return these values unwrapped.
var exceptionErrors = map[byte]error{
	ExIllegalFunction:         modbus.ErrIllegalFunction,
	ExIllegalDataAddress:      modbus.ErrIllegalDataAddress,
	ExIllegalDataValue:        modbus.ErrIllegalDataValue,
	ExServerDeviceFailure:     modbus.ErrServerDeviceFailure,
	ExAcknowledge:             modbus.ErrAcknowledge,
	ExServerDeviceBusy:        modbus.ErrServerDeviceBusy,
	ExMemoryParityError:       modbus.ErrMemoryParityError,
	ExGatewayPathUnavailable:  modbus.ErrGWPathUnavailable,
	ExGatewayTargetNoResponse: modbus.ErrGWTargetFailedToRespond,
}
