//go:build !linux

package modbussim

import (
	"os"
	"time"
)

// PTY is a pseudo-terminal pair; OpenPTY needs Linux.
type PTY struct {
	// Path is the client's end, /dev/pts/N.
	Path string
}

// OpenPTY returns ErrUnsupported: it needs Linux.
func OpenPTY() (*PTY, error) { return nil, ErrUnsupported }

// Read returns ErrUnsupported.
func (p *PTY) Read([]byte) (int, error) { return 0, ErrUnsupported }

// Write returns ErrUnsupported.
func (p *PTY) Write([]byte) (int, error) { return 0, ErrUnsupported }

// SetReadDeadline returns ErrUnsupported.
func (p *PTY) SetReadDeadline(time.Time) error { return ErrUnsupported }

// SetWriteDeadline returns ErrUnsupported.
func (p *PTY) SetWriteDeadline(time.Time) error { return ErrUnsupported }

// Close does nothing.
func (p *PTY) Close() error { return nil }

// OpenSerial returns ErrUnsupported: it needs Linux.
func OpenSerial(string, Line) (*os.File, error) { return nil, ErrUnsupported }
