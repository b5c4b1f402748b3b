package modbussim

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// PTY is a pseudo-terminal pair for the RTU slave: serve the PTY itself
// (its master side) with ServeRTU, and point a client at Path.
type PTY struct {
	// Path is the client's end, /dev/pts/N.
	Path   string
	master *os.File
	// peer is the slave side, held open so that the master's reads wait
	// instead of failing with EIO while no client has Path open.
	peer *os.File
}

// OpenPTY opens a pty pair (posix_openpt: /dev/ptmx, TIOCSPTLCK,
// TIOCGPTN) and puts it in raw mode, so that bytes pass unchanged
// before a client sets its own line settings.
func OpenPTY() (*PTY, error) {
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("modbussim: open pty: %w", err)
	}
	var n uint32
	err = control(master, func(fd int) error {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
			return fmt.Errorf("unlock: %w", err)
		}
		var err error
		n, err = unix.IoctlGetUint32(fd, unix.TIOCGPTN)
		return err
	})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("modbussim: open pty: %w", err), master.Close())
	}
	p := &PTY{Path: fmt.Sprintf("/dev/pts/%d", n), master: master}
	p.peer, err = os.OpenFile(p.Path, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("modbussim: open pty: %w", err), master.Close())
	}
	if err := setTermios(p.peer, Line{Baud: DefaultBaud, Parity: "N", StopBits: 1}); err != nil {
		return nil, errors.Join(fmt.Errorf("modbussim: open pty: %w", err), p.Close())
	}
	return p, nil
}

// Read reads from the master side: what clients wrote to Path.
func (p *PTY) Read(b []byte) (int, error) { return p.master.Read(b) }

// Write writes to the master side: clients read it from Path.
func (p *PTY) Write(b []byte) (int, error) { return p.master.Write(b) }

// SetReadDeadline sets the master side's read deadline.
func (p *PTY) SetReadDeadline(t time.Time) error { return p.master.SetReadDeadline(t) }

// SetWriteDeadline sets the master side's write deadline.
func (p *PTY) SetWriteDeadline(t time.Time) error { return p.master.SetWriteDeadline(t) }

// Close closes both sides; Path disappears.
func (p *PTY) Close() error {
	return errors.Join(p.master.Close(), p.peer.Close())
}

// OpenSerial opens the tty at path for ServeRTU: raw, 8 data bits, with
// line's baud rate, parity and stop bits, ignoring modem control lines.
func OpenSerial(path string, line Line) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("modbussim: open serial port: %w", err)
	}
	if err := setTermios(f, line); err != nil {
		return nil, errors.Join(fmt.Errorf("modbussim: serial port %s: %w", path, err), f.Close())
	}
	return f, nil
}

var baudRates = map[int]uint32{
	1200: unix.B1200, 2400: unix.B2400, 4800: unix.B4800, 9600: unix.B9600, 19200: unix.B19200,
	38400: unix.B38400, 57600: unix.B57600, 115200: unix.B115200, 230400: unix.B230400,
	460800: unix.B460800, 921600: unix.B921600,
}

// setTermios puts f in raw mode (cfmakeraw) with line's framing.
func setTermios(f *os.File, line Line) error {
	speed, ok := baudRates[line.Baud]
	if !ok {
		return fmt.Errorf("baud rate %d is not a standard one", line.Baud)
	}
	return control(f, func(fd int) error {
		t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		if err != nil {
			return fmt.Errorf("get termios: %w", err)
		}
		t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF
		t.Oflag &^= unix.OPOST
		t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		t.Cflag &^= unix.CSIZE | unix.PARENB | unix.PARODD | unix.CSTOPB | unix.CBAUD | unix.CRTSCTS
		t.Cflag |= unix.CS8 | unix.CREAD | unix.CLOCAL | speed
		switch line.Parity {
		case "E":
			t.Cflag |= unix.PARENB
		case "O":
			t.Cflag |= unix.PARENB | unix.PARODD
		}
		if line.StopBits == 2 {
			t.Cflag |= unix.CSTOPB
		}
		t.Ispeed, t.Ospeed = speed, speed
		t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
		if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
			return fmt.Errorf("set termios: %w", err)
		}
		return nil
	})
}

// control runs f on the file's descriptor without putting it in blocking
// mode (as Fd would).
func control(file *os.File, f func(fd int) error) error {
	rc, err := file.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}
