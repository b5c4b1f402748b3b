package kafkaserver

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"golang.org/x/sys/unix"

	"github.com/twmb/franz-go/pkg/kbin"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

// The Fetch response, written by hand because kmsg cannot stream record
// data (versions 4-12; "c" marks the compact, flexible encodings of v12):
//
//	size                 int32   bytes after this field
//	correlation id       int32
//	[v12] header tags    uvarint 0
//	throttle ms          int32
//	[v7+] error code     int16
//	[v7+] session id     int32   always 0: no fetch sessions
//	topics               array (c: uvarint n+1)
//	  name               string (c: uvarint len+1, bytes)
//	  partitions         array
//	    partition        int32
//	    error code       int16
//	    high watermark   int64
//	    last stable      int64   = high watermark
//	    [v5+] log start  int64
//	    aborted txns     nullable array: null (int32 -1; c: uvarint 0)
//	    [v11+] preferred read replica int32 -1
//	    records          bytes (int32 len; c: uvarint len+1) ── the segment bytes, sent with sendfile
//	    [v12] partition tags uvarint 0
//	  [v12] topic tags   uvarint 0
//	[v12] response tags  uvarint 0
//
// sendfileMin is the smallest record run sent with sendfile; shorter runs
// are copied into the write buffer, which is cheaper than a flush and a
// system call.
const sendfileMin = 16 << 10

// fetchPiece is a run of encoded bytes followed, optionally, by a
// partition's record run.
type fetchPiece struct {
	head []byte
	part *fetchPart
}

// encodeFetch lays the response out as pieces and returns the total size
// after the size field.
func encodeFetch(corr int32, a *fetchAnswer) ([]fetchPiece, int64) {
	flex := a.version >= 12
	var pieces []fetchPiece
	buf := make([]byte, 0, 256)
	buf = kbin.AppendInt32(buf, corr)
	if flex {
		buf = append(buf, 0)
	}
	buf = kbin.AppendInt32(buf, 0) // throttle
	if a.version >= 7 {
		buf = kbin.AppendInt16(buf, a.errCode)
		buf = kbin.AppendInt32(buf, 0)
	}
	arrayLen := func(n int) {
		if flex {
			buf = kbin.AppendCompactArrayLen(buf, n)
		} else {
			buf = kbin.AppendArrayLen(buf, n)
		}
	}
	arrayLen(len(a.topics))
	for ti := range a.topics {
		t := &a.topics[ti]
		if flex {
			buf = kbin.AppendCompactString(buf, t.name)
		} else {
			buf = kbin.AppendString(buf, t.name)
		}
		arrayLen(len(t.parts))
		for pi := range t.parts {
			p := &t.parts[pi]
			buf = kbin.AppendInt32(buf, p.id)
			buf = kbin.AppendInt16(buf, p.errCode)
			buf = kbin.AppendInt64(buf, p.hwm)
			buf = kbin.AppendInt64(buf, p.hwm) // last stable offset
			if a.version >= 5 {
				buf = kbin.AppendInt64(buf, p.logStart)
			}
			if flex {
				buf = kbin.AppendCompactNullableArrayLen(buf, 0, true)
			} else {
				buf = kbin.AppendNullableArrayLen(buf, 0, true)
			}
			if a.version >= 11 {
				buf = kbin.AppendInt32(buf, -1)
			}
			var n int64
			if p.slice != nil {
				n = p.slice.Len
			}
			if flex {
				buf = kbin.AppendUvarint(buf, uint32(n)+1)
			} else {
				buf = kbin.AppendInt32(buf, int32(n))
			}
			if n > 0 {
				pieces = append(pieces, fetchPiece{head: buf, part: p})
				buf = make([]byte, 0, 64)
			}
			if flex {
				buf = append(buf, 0)
			}
		}
		if flex {
			buf = append(buf, 0)
		}
	}
	if flex {
		buf = append(buf, 0)
	}
	pieces = append(pieces, fetchPiece{head: buf})
	var total int64
	for _, pc := range pieces {
		total += int64(len(pc.head))
		if pc.part != nil {
			total += pc.part.slice.Len
		}
	}
	return pieces, total
}

// writeFetch writes a Fetch answer and releases its slices.
func (c *conn) writeFetch(w *bufio.Writer, o *outbound) (int, error) {
	a := o.fetch
	defer a.release()
	pieces, total := encodeFetch(o.corr, a)
	if total > 1<<31-1 {
		return 0, fmt.Errorf("kafkaserver: fetch response of %d bytes", total)
	}
	written := 0
	var size [4]byte
	binary.BigEndian.PutUint32(size[:], uint32(total))
	if _, err := w.Write(size[:]); err != nil {
		return 0, err
	}
	written += 4
	for _, pc := range pieces {
		if _, err := w.Write(pc.head); err != nil {
			return written, err
		}
		written += len(pc.head)
		if pc.part == nil {
			continue
		}
		n, err := c.writeRecords(w, pc.part)
		written += int(n)
		if err != nil {
			return written, err
		}
	}
	for ti := range a.topics {
		var n int64
		for _, p := range a.topics[ti].parts {
			if p.slice != nil {
				n += p.slice.Len
			}
		}
		if n > 0 {
			c.s.metrics.FetchBytes.WithLabelValues(a.topics[ti].name).Add(float64(n))
		}
	}
	return written, nil
}

// writeRecords writes a partition's record run: with sendfile from the
// segment file on plain TCP when it is long enough, else through w.
func (c *conn) writeRecords(w *bufio.Writer, p *fetchPart) (int64, error) {
	sl := p.slice
	f := sl.File()
	fder, ok := f.(vfs.Fder)
	if c.tcp == nil || !ok || sl.Len < sendfileMin || c.s.cfg.DisableSendfile {
		// Copy in chunks through the write buffer.
		var chunk [32 << 10]byte
		pos, end := sl.Pos, sl.Pos+sl.Len
		for pos < end {
			n := min(int64(len(chunk)), end-pos)
			m, err := f.ReadAt(chunk[:n], pos)
			if int64(m) < n && err == nil {
				err = io.ErrUnexpectedEOF
			}
			if m > 0 {
				if _, werr := w.Write(chunk[:m]); werr != nil {
					return pos - sl.Pos, werr
				}
			}
			if err != nil && !(errors.Is(err, io.EOF) && int64(m) == n) {
				return pos - sl.Pos, fmt.Errorf("kafkaserver: read segment: %w", err)
			}
			pos += int64(m)
		}
		return sl.Len, nil
	}
	if err := w.Flush(); err != nil {
		return 0, err
	}
	n, err := sendfile(c.tcp, int(fder.Fd()), sl.Pos, sl.Len)
	c.s.metrics.SendfileBytes.Add(float64(n))
	return n, err
}

// sendfile copies n bytes of the file at off to the socket without
// moving them through user space, waiting for the socket to drain when
// its buffer is full (the write deadline applies). An explicit offset is
// used, so concurrent readers of one segment never share a file position.
func sendfile(tcp *net.TCPConn, src int, off, n int64) (int64, error) {
	rc, err := tcp.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("kafkaserver: sendfile: %w", err)
	}
	var sent int64
	var serr error
	err = rc.Write(func(fd uintptr) bool {
		for sent < n {
			m, err := unix.Sendfile(int(fd), src, &off, int(min(n-sent, 1<<30)))
			if m > 0 {
				sent += int64(m)
			}
			switch {
			case errors.Is(err, unix.EAGAIN):
				return false // wait until the socket is writable
			case errors.Is(err, unix.EINTR):
				continue
			case err != nil:
				serr = err
				return true
			case m == 0:
				serr = io.ErrUnexpectedEOF // the file is shorter than the slice
				return true
			}
		}
		return true
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return sent, fmt.Errorf("kafkaserver: sendfile: %w", err)
	}
	return sent, nil
}
