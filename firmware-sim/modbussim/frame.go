package modbussim

import (
	"encoding/binary"
	"time"
)

// RTU framing (Modbus over Serial Line v1.02, 2.5):
//
//	+------+----------+----------------------+-----------+
//	| unit | function | data (0..252 bytes)  | CRC lo hi |
//	+------+----------+----------------------+-----------+
//	  1      1          ...                    2
//
// The CRC-16/MODBUS (polynomial 0xA001 reflected, initial 0xFFFF) covers
// unit, function and data, and is sent low byte first. A frame is at
// most 256 bytes.
const maxFrame = 256

// Function codes the slave serves.
const (
	fcReadCoils      byte = 0x01
	fcReadDiscrete   byte = 0x02
	fcReadHolding    byte = 0x03
	fcReadInput      byte = 0x04
	fcWriteCoil      byte = 0x05
	fcWriteRegister  byte = 0x06
	fcWriteCoils     byte = 0x0F
	fcWriteRegisters byte = 0x10
	exceptionFlag    byte = 0x80 // set in the function code of an exception answer
)

// Limits of the request fields (Modbus Application Protocol v1.1b3, 6).
const (
	maxReadBits       = 2000 // FC 1, 2
	maxReadRegisters  = 125  // FC 3, 4
	maxWriteBits      = 1968 // FC 15
	maxWriteRegisters = 123  // FC 16
	coilOn, coilOff   = 0xFF00, 0x0000
)

// crc16 is the CRC-16/MODBUS of b.
func crc16(b []byte) uint16 {
	crc := uint16(0xFFFF)
	for _, c := range b {
		crc = crcAdd(crc, c)
	}
	return crc
}

// crcAdd adds byte c to a running CRC-16/MODBUS.
func crcAdd(crc uint16, c byte) uint16 {
	crc ^= uint16(c)
	for range 8 {
		if crc&1 != 0 {
			crc = crc>>1 ^ 0xA001
		} else {
			crc >>= 1
		}
	}
	return crc
}

// appendCRC appends the CRC of frame, low byte first.
func appendCRC(frame []byte) []byte {
	return binary.LittleEndian.AppendUint16(frame, crc16(frame))
}

// crcOK reports whether frame (at least 4 bytes) ends with its CRC.
func crcOK(frame []byte) bool {
	n := len(frame)
	return n >= 4 && crc16(frame[:n-2]) == binary.LittleEndian.Uint16(frame[n-2:])
}

// requestLength is the length of the request frame that starts buf,
// computed from its function code: > 0 when known, 0 when more bytes are
// needed to tell, -1 for a function code whose length the slave does not
// know (the frame then ends where a CRC matches).
func requestLength(buf []byte) int {
	if len(buf) < 2 {
		return 0
	}
	switch buf[1] {
	case fcReadCoils, fcReadDiscrete, fcReadHolding, fcReadInput, fcWriteCoil, fcWriteRegister:
		return 8 // unit, function, address, quantity or value, CRC
	case fcWriteCoils, fcWriteRegisters:
		if len(buf) < 7 {
			return 0
		}
		return 9 + int(buf[6]) // unit, function, address, quantity, byte count, data, CRC
	}
	return -1
}

// decodeRequest decodes the PDU (function code and data) of a request to
// unit. A non-zero exception is the answer the request earns before any
// register is touched: illegal function, then illegal data value for a
// quantity, byte count or coil value out of range, then illegal data
// address for a range past 0xFFFF (Modbus Application Protocol v1.1b3,
// 6.1-6.12).
func decodeRequest(unit uint8, pdu []byte) (req request, exc byte) {
	req = request{unit: unit, fc: pdu[0]}
	data := pdu[1:]
	u16 := func(i int) uint16 { return binary.BigEndian.Uint16(data[i:]) }
	var maxQty uint16
	switch req.fc {
	case fcReadCoils:
		req.table, maxQty = Coils, maxReadBits
	case fcReadDiscrete:
		req.table, maxQty = DiscreteInputs, maxReadBits
	case fcReadHolding:
		req.table, maxQty = HoldingRegisters, maxReadRegisters
	case fcReadInput:
		req.table, maxQty = InputRegisters, maxReadRegisters
	case fcWriteCoil:
		if len(data) != 4 {
			return req, ExIllegalDataValue
		}
		v := u16(2)
		if v != coilOn && v != coilOff {
			return req, ExIllegalDataValue
		}
		req.table, req.write, req.addr, req.qty, req.bools = Coils, true, u16(0), 1, []bool{v == coilOn}
		return req, 0
	case fcWriteRegister:
		if len(data) != 4 {
			return req, ExIllegalDataValue
		}
		req.table, req.write, req.addr, req.qty, req.regs = HoldingRegisters, true, u16(0), 1, []uint16{u16(2)}
		return req, 0
	case fcWriteCoils, fcWriteRegisters:
		return decodeWriteMultiple(req, data)
	default:
		return req, ExIllegalFunction
	}
	if len(data) != 4 {
		return req, ExIllegalDataValue
	}
	req.addr, req.qty = u16(0), u16(2)
	if req.qty < 1 || req.qty > maxQty {
		return req, ExIllegalDataValue
	}
	if int(req.addr)+int(req.qty) > tableSize {
		return req, ExIllegalDataAddress
	}
	return req, 0
}

// decodeWriteMultiple decodes FC 15 and 16: address, quantity, byte
// count, values.
func decodeWriteMultiple(req request, data []byte) (request, byte) {
	if len(data) < 5 {
		return req, ExIllegalDataValue
	}
	req.write, req.addr, req.qty = true, binary.BigEndian.Uint16(data), binary.BigEndian.Uint16(data[2:])
	count, values := int(data[4]), data[5:]
	q := int(req.qty)
	if req.fc == fcWriteCoils {
		req.table = Coils
		if q < 1 || q > maxWriteBits || count != (q+7)/8 || len(values) != count {
			return req, ExIllegalDataValue
		}
		req.bools = make([]bool, q)
		for i := range req.bools {
			req.bools[i] = values[i/8]>>(i%8)&1 == 1
		}
	} else {
		req.table = HoldingRegisters
		if q < 1 || q > maxWriteRegisters || count != 2*q || len(values) != count {
			return req, ExIllegalDataValue
		}
		req.regs = make([]uint16, q)
		for i := range req.regs {
			req.regs[i] = binary.BigEndian.Uint16(values[2*i:])
		}
	}
	if q+int(req.addr) > tableSize {
		return req, ExIllegalDataAddress
	}
	return req, 0
}

// encodeResponse is the RTU frame answering req with res.
func encodeResponse(req *request, res result) []byte {
	out := make([]byte, 0, maxFrame)
	out = append(out, req.unit)
	if res.exc != 0 {
		return appendCRC(append(out, req.fc|exceptionFlag, res.exc))
	}
	out = append(out, req.fc)
	switch req.fc {
	case fcReadCoils, fcReadDiscrete:
		packed := make([]byte, (len(res.bools)+7)/8)
		for i, b := range res.bools {
			if b {
				packed[i/8] |= 1 << (i % 8)
			}
		}
		out = append(out, byte(len(packed)))
		out = append(out, packed...)
	case fcReadHolding, fcReadInput:
		out = append(out, byte(2*len(res.regs)))
		for _, r := range res.regs {
			out = binary.BigEndian.AppendUint16(out, r)
		}
	case fcWriteCoil:
		v := uint16(coilOff)
		if req.bools[0] {
			v = coilOn
		}
		out = binary.BigEndian.AppendUint16(out, req.addr)
		out = binary.BigEndian.AppendUint16(out, v)
	case fcWriteRegister:
		out = binary.BigEndian.AppendUint16(out, req.addr)
		out = binary.BigEndian.AppendUint16(out, req.regs[0])
	case fcWriteCoils, fcWriteRegisters:
		out = binary.BigEndian.AppendUint16(out, req.addr)
		out = binary.BigEndian.AppendUint16(out, req.qty)
	}
	return appendCRC(out)
}

// CharTime is the time one character takes on a line at baud with
// bitsPerChar bits per character (Line.BitsPerChar: 11 for 8E1, 8O1 and
// 8N2, 10 for 8N1).
func CharTime(baud, bitsPerChar int) time.Duration {
	if baud <= 0 {
		return 0
	}
	return time.Duration(int64(bitsPerChar) * int64(time.Second) / int64(baud))
}

// T35 is the silence that ends an RTU frame: 3.5 character times, or a
// fixed 1750 µs above 19200 baud (Modbus over Serial Line v1.02, 2.5.1.1).
func T35(baud, bitsPerChar int) time.Duration {
	if baud <= 0 {
		return 0
	}
	if baud > 19200 {
		return 1750 * time.Microsecond
	}
	return time.Duration(35 * int64(bitsPerChar) * int64(time.Second) / (10 * int64(baud)))
}

// LineTime is how long one RTU transaction occupies a real half-duplex
// line at baud: the request's characters, the t3.5 silence that ends the
// request, the response's characters and the t3.5 silence that ends the
// response, before which the next request may not start. It ignores the
// slave's processing time and the master's turnaround delay, so 1/LineTime
// is the most transactions a second the line carries: a benchmark's
// theoretical limit. Under Line.Emulate the slave answers LineTime - T35
// after a request starts. Rounded down to the nanosecond.
func LineTime(baud, bitsPerChar, requestBytes, responseBytes int) time.Duration {
	if baud <= 0 {
		return 0
	}
	chars := int64(requestBytes + responseBytes)
	if baud > 19200 {
		return time.Duration(chars*int64(bitsPerChar)*int64(time.Second)/int64(baud)) + 2*T35(baud, bitsPerChar)
	}
	// One division for the characters and the two 3.5-character silences.
	return time.Duration((10*chars + 2*35) * int64(bitsPerChar) * int64(time.Second) / (10 * int64(baud)))
}
