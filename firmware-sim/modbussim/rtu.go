package modbussim

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// minPartialGap is the least silence after which a partial frame is
// dropped. The spec's t3.5 is 4 ms at 9600 baud and 1.75 ms above 19200,
// but USB serial adapters and ptys deliver bytes in bursts with longer
// gaps, so frames end by their length (requestLength) and silence only
// clears out what cannot be a frame.
const minPartialGap = 20 * time.Millisecond

// readDeadliner is what ServeRTU needs from a port to stop on its context
// and to notice silence: *os.File (ttys, ptys) and net.Conn have it.
type readDeadliner interface {
	SetReadDeadline(t time.Time) error
}

// writeDeadliner lets ServeRTU stop while a write blocks.
type writeDeadliner interface {
	SetWriteDeadline(t time.Time) error
}

// ServeRTU serves Modbus RTU on port, a serial line or the master side
// of a pty, until ctx ends or the slave closes (it returns nil then) or
// reading or writing port fails. It does not close port.
//
// Frames end by the length their function code implies; for a function
// code it does not serve, where the first CRC matches. Frames with a bad
// CRC, for units not served, for dead units, with an exception function
// code (0x80 and up), and reads broadcast to unit 0 get no answer, as on
// a real bus; writes broadcast to unit 0 are
// executed by every live unit. If port has SetReadDeadline, ServeRTU
// returns promptly when ctx ends and drops a partial frame after
// max(t3.5, 20 ms) of silence; otherwise it returns at the next read.
func (s *Slave) ServeRTU(ctx context.Context, port io.ReadWriter) error {
	if err := s.begin(); err != nil {
		return err
	}
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)()
	r := &frameReader{port: port, gap: max(T35(s.cfg.Line.Baud, s.cfg.Line.BitsPerChar()), minPartialGap), stats: &s.stats}
	if dl, ok := port.(readDeadliner); ok {
		r.dl = dl
		// A deadline in the past wakes the read in progress.
		defer context.AfterFunc(ctx, func() { _ = dl.SetReadDeadline(time.Unix(1, 0)) })()
		defer func() { _ = dl.SetReadDeadline(time.Time{}) }()
	}
	if wd, ok := port.(writeDeadliner); ok {
		// And the write in progress, on a line that does not drain.
		defer context.AfterFunc(ctx, func() { _ = wd.SetWriteDeadline(time.Unix(1, 0)) })()
		defer func() { _ = wd.SetWriteDeadline(time.Time{}) }()
	}
	var lineFree time.Time // under Line.Emulate: when the last answer and its t3.5 end
	s.cfg.Logger.Info("modbussim: serving Modbus RTU", "units", s.unitList(), "line", s.cfg.Line)
	for {
		frame, start, err := r.next(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("modbussim: rtu read: %w", err)
		}
		answer, delay := s.answerRTU(ctx, frame)
		if answer == nil || ctx.Err() != nil {
			continue
		}
		if l := s.cfg.Line; l.Emulate {
			// The emulated line carries the request from when it arrived,
			// or from when the last transaction left the line quiet; a
			// delay fault is the slave's processing time between the
			// frames.
			start = later(start, lineFree)
			period := LineTime(l.Baud, l.BitsPerChar(), len(frame), len(answer))
			lineFree = start.Add(period + delay)
			if !s.sleep(ctx, time.Until(lineFree.Add(-T35(l.Baud, l.BitsPerChar())))) {
				return nil
			}
		}
		if _, err := port.Write(answer); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("modbussim: rtu write: %w", err)
		}
	}
}

// answerRTU executes a request frame whose CRC is valid and returns the
// answer frame, or nil when nothing answers, and the delay fault it
// waited.
func (s *Slave) answerRTU(ctx context.Context, frame []byte) ([]byte, time.Duration) {
	unit := frame[0]
	if frame[1]&exceptionFlag != 0 {
		// Not a request: function codes from 0x80 are exception answers
		// (another slave's, on a shared bus).
		s.stats.ignored.Add(1)
		return nil, 0
	}
	req, exc := decodeRequest(unit, frame[1:len(frame)-2])
	if unit == 0 {
		if exc == 0 && req.write {
			s.stats.requests.Add(1)
			s.broadcast(&req)
		}
		return nil, 0
	}
	st := s.state(unit)
	if !st.served {
		s.stats.ignored.Add(1)
		return nil, 0
	}
	s.stats.requests.Add(1)
	if st.dead {
		s.stats.silent.Add(1)
		return nil, 0
	}
	if !s.sleep(ctx, st.delay) {
		return nil, 0
	}
	if exc != 0 {
		s.stats.exceptions.Add(1)
		return encodeResponse(&req, result{exc: exc}), st.delay
	}
	return encodeResponse(&req, s.apply(&req)), st.delay
}

// frameReader splits the bytes of a serial line into request frames.
type frameReader struct {
	port  io.Reader
	dl    readDeadliner // nil: no silence detection
	gap   time.Duration // silence that ends a partial frame
	stats *counters

	buf     []byte    // received, not yet part of a returned frame
	start   time.Time // when buf[0] arrived
	resync  bool      // dropping bytes until a silence
	scratch [maxFrame]byte
}

// next returns the next frame with a valid CRC and when its first byte
// arrived.
func (r *frameReader) next(ctx context.Context) ([]byte, time.Time, error) {
	for {
		if n := r.complete(); n > 0 {
			frame := append([]byte(nil), r.buf[:n]...)
			r.buf = r.buf[:copy(r.buf, r.buf[n:])]
			start := r.start
			r.start = time.Now()
			return frame, start, nil
		}
		if err := r.fill(ctx); err != nil {
			return nil, time.Time{}, err
		}
	}
}

// complete returns the length of the frame at the start of buf, or 0.
// A frame that cannot be valid is dropped with everything after it up to
// the next silence, as a slave that lost sync waits for t3.5.
func (r *frameReader) complete() int {
	switch n := requestLength(r.buf); {
	case n == 0:
		return 0
	case n > maxFrame:
		r.drop()
	case n > 0:
		if len(r.buf) < n {
			return 0
		}
		if crcOK(r.buf[:n]) {
			return n
		}
		r.drop()
	default: // unknown function code: the shortest prefix with a valid CRC
		crc := crcAdd(crcAdd(0xFFFF, r.buf[0]), r.buf[1])
		for n := 4; n <= len(r.buf) && n <= maxFrame; n++ {
			if crc == binary.LittleEndian.Uint16(r.buf[n-2:]) {
				return n
			}
			crc = crcAdd(crc, r.buf[n-2])
		}
		if len(r.buf) >= maxFrame {
			r.drop()
		}
	}
	return 0
}

// drop discards buf and, if silence can be detected, what follows until
// the next silence.
func (r *frameReader) drop() {
	r.stats.badFrames.Add(1)
	r.buf = r.buf[:0]
	r.resync = r.dl != nil
}

// fill reads once from the port into buf.
func (r *frameReader) fill(ctx context.Context) error {
	if r.dl != nil {
		var deadline time.Time // none: wait for the next frame
		if len(r.buf) > 0 || r.resync {
			deadline = time.Now().Add(r.gap)
		}
		if err := r.dl.SetReadDeadline(deadline); err != nil {
			return err
		}
		// Set, then check: a cancellation after this check moves the
		// deadline into the past (see ServeRTU).
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	n, err := r.port.Read(r.scratch[:])
	now := time.Now()
	if n > 0 && !r.resync {
		if len(r.buf) == 0 {
			r.start = now
		}
		r.buf = append(r.buf, r.scratch[:n]...)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil {
		// Silence: the line is in sync again, and a partial frame is dead.
		if len(r.buf) > 0 {
			r.stats.badFrames.Add(1)
			r.buf = r.buf[:0]
		}
		r.resync = false
		return nil
	}
	return err
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
