package commitlog

// Header is a record header.
type Header struct {
	Key   string
	Value []byte
}

// Record is one log record. On Append, Offset is ignored and a zero
// Timestamp means "now"; on reads every field is filled in.
type Record struct {
	Offset    int64
	Timestamp int64 // milliseconds since the Unix epoch
	Key       []byte
	Value     []byte // nil is a tombstone on compacted topics
	Headers   []Header
}

// encodedSizeHint is a cheap upper bound of r's encoded size, used for
// backpressure accounting before the record is encoded.
func (r *Record) encodedSizeHint() int {
	n := 21 + len(r.Key) + len(r.Value)
	for i := range r.Headers {
		n += 10 + len(r.Headers[i].Key) + len(r.Headers[i].Value)
	}
	return n
}

// murmur2 is the 32-bit MurmurHash2 that Kafka's Java client uses in its
// default partitioner (seed 0x9747b28c), byte for byte.
func murmur2(data []byte) int32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	length := len(data)
	h := seed ^ uint32(length)
	n := length / 4
	for i := 0; i < n; i++ {
		i4 := i * 4
		k := uint32(data[i4]) | uint32(data[i4+1])<<8 | uint32(data[i4+2])<<16 | uint32(data[i4+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := data[n*4:]
	switch len(tail) {
	case 3:
		h ^= uint32(tail[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(tail[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(tail[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return int32(h)
}

// KeyPartition returns the partition Kafka's default partitioner picks for
// key among n partitions: murmur2 of the key, made positive by masking the
// sign bit, modulo n.
func KeyPartition(key []byte, n int) int32 {
	if n <= 0 {
		return 0
	}
	return int32((uint32(murmur2(key)) & 0x7fffffff) % uint32(n))
}
