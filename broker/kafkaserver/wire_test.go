package kafkaserver

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// rawConn speaks the Kafka framing directly, for protocol edge cases.
type rawConn struct {
	t    *testing.T
	c    net.Conn
	br   *bufio.Reader
	corr int32
}

func (e *env) raw() *rawConn {
	e.t.Helper()
	c, err := net.DialTimeout("tcp", e.addr(), 5*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return &rawConn{t: e.t, c: c, br: bufio.NewReader(c)}
}

func rawOver(t *testing.T, c net.Conn) *rawConn {
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

// send writes req at its version and returns the correlation id.
func (r *rawConn) send(req kmsg.Request) int32 {
	r.t.Helper()
	r.corr++
	b := kmsg.NewRequestFormatter(kmsg.FormatterClientID("raw")).AppendRequest(nil, req, r.corr)
	r.writeFrame(b)
	return r.corr
}

func (r *rawConn) writeFrame(b []byte) {
	r.t.Helper()
	r.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// readFrame returns the next frame's body (after the size), or an error
// (io.EOF when the server closed).
func (r *rawConn) readFrame() ([]byte, error) {
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var size [4]byte
	if _, err := io.ReadFull(r.br, size[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint32(size[:]))
	_, err := io.ReadFull(r.br, b)
	return b, err
}

// roundTrip sends req and decodes the answer into its response type.
func (r *rawConn) roundTrip(req kmsg.Request) kmsg.Response {
	r.t.Helper()
	corr := r.send(req)
	b, err := r.readFrame()
	if err != nil {
		r.t.Fatalf("%s: read: %v", kmsg.NameForKey(req.Key()), err)
	}
	resp := req.ResponseKind()
	if got := int32(binary.BigEndian.Uint32(b)); got != corr {
		r.t.Fatalf("correlation id %d, want %d", got, corr)
	}
	b = b[4:]
	if resp.IsFlexible() && req.Key() != kmsg.ApiVersions.Int16() {
		rd := kbin.Reader{Src: b}
		kmsg.SkipTags(&rd)
		b = rd.Src
	}
	if err := resp.ReadFrom(b); err != nil {
		r.t.Fatalf("%s v%d: decode response: %v", kmsg.NameForKey(req.Key()), req.GetVersion(), err)
	}
	return resp
}

// expectClosed asserts the server closes the connection.
func (r *rawConn) expectClosed() {
	r.t.Helper()
	for {
		if _, err := r.readFrame(); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				r.t.Fatal("connection still open")
			}
			return
		}
	}
}

func TestAPIVersions(t *testing.T) {
	e := newEnv(t)
	rc := e.raw()
	for v := int16(0); v <= 3; v++ {
		req := kmsg.NewPtrApiVersionsRequest()
		req.Version = v
		req.ClientSoftwareName, req.ClientSoftwareVersion = "test", "1"
		resp := rc.roundTrip(req).(*kmsg.ApiVersionsResponse)
		if resp.ErrorCode != 0 || len(resp.ApiKeys) != len(apis) {
			t.Fatalf("v%d: error %d, %d keys", v, resp.ErrorCode, len(resp.ApiKeys))
		}
	}
	// Too high (franz-go starts at v5): a v0-encoded UNSUPPORTED_VERSION
	// answer that still lists the keys, on the same connection.
	req := kmsg.NewPtrApiVersionsRequest()
	req.Version = 5
	corr := rc.send(req)
	b, err := rc.readFrame()
	if err != nil {
		t.Fatal(err)
	}
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.Version = 0
	if int32(binary.BigEndian.Uint32(b)) != corr {
		t.Fatal("bad correlation id")
	}
	if err := resp.ReadFrom(b[4:]); err != nil {
		t.Fatal(err)
	}
	if resp.ErrorCode != kerr.UnsupportedVersion.Code || len(resp.ApiKeys) == 0 {
		t.Fatalf("error %d, %d keys", resp.ErrorCode, len(resp.ApiKeys))
	}
	var v18 int16 = -1
	for _, k := range resp.ApiKeys {
		if k.ApiKey == 18 {
			v18 = k.MaxVersion
		}
	}
	if v18 != 3 {
		t.Fatalf("ApiVersions max %d, want 3", v18)
	}
	// The connection is still usable.
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 1
	if mr := rc.roundTrip(md).(*kmsg.MetadataResponse); len(mr.Brokers) != 1 {
		t.Fatalf("metadata after fallback: %+v", mr)
	}
}

// TestHostileFrames: frames with huge declared sizes, truncated headers
// and undecodable bodies close the connection without harm; the listener
// keeps serving others.
func TestHostileFrames(t *testing.T) {
	e := newEnv(t)
	cases := map[string][]byte{
		"huge size":      {0x7f, 0xff, 0xff, 0xff, 0, 18, 0, 0},
		"negative size":  {0xff, 0xff, 0xff, 0xf0},
		"short header":   {0, 0, 0, 3, 0, 18, 0},
		"bad body":       append([]byte{0, 0, 0, 14, 0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff}, 0x7f, 0xff, 0xff, 0xff),
		"bad client id":  {0, 0, 0, 10, 0, 3, 0, 1, 0, 0, 0, 1, 0x7f, 0xff},
		"bad flexible":   {0, 0, 0, 11, 0, 3, 0, 12, 0, 0, 0, 1, 0xff, 0xff, 0xff},
		"bad array size": {0, 0, 0, 14, 0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff},
	}
	for name, frame := range cases {
		t.Run(name, func(t *testing.T) {
			rc := e.raw()
			rc.writeFrame(frame)
			rc.expectClosed()
		})
	}
	// Still serving.
	rc := e.raw()
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 5
	rc.roundTrip(md)
}

func TestFetchEncodingAllVersions(t *testing.T) {
	e := newEnv(t)
	tp := e.topic("enc", flagsTopic(1))
	appendN(t, tp, 50, 100)
	for v := int16(4); v <= 12; v++ {
		rc := e.raw()
		req := kmsg.NewPtrFetchRequest()
		req.Version = v
		req.ReplicaID = -1
		req.MaxBytes = 1 << 20
		req.SessionEpoch = -1
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = "enc"
		for _, p := range []int32{0, 7} {
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = p, 10, 1<<20
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
		resp := rc.roundTrip(req).(*kmsg.FetchResponse)
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 2 {
			t.Fatalf("v%d: %+v", v, resp)
		}
		p0, p7 := resp.Topics[0].Partitions[0], resp.Topics[0].Partitions[1]
		if p0.ErrorCode != 0 || p0.HighWatermark != 50 || (v >= 4 && p0.LastStableOffset != 50) {
			t.Fatalf("v%d: partition 0: %+v", v, p0)
		}
		if p7.ErrorCode != kerr.UnknownTopicOrPartition.Code {
			t.Fatalf("v%d: partition 7 error %d", v, p7.ErrorCode)
		}
		var fp kgoFetchPart
		n := fp.count(t, p0.RecordBatches)
		if n == 0 || fp.first > 10 || fp.last != 49 {
			t.Fatalf("v%d: %d records %d..%d", v, n, fp.first, fp.last)
		}
	}
}

func TestSASLPlain(t *testing.T) {
	e := newEnv(t, withCfg(func(c *Config) { c.SASLUsers = []SASLUser{{Username: "svc", Password: "s3cret"}} }))
	// A request before authenticating closes the connection.
	rc := e.raw()
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 1
	rc.send(md)
	rc.expectClosed()

	for _, hv := range []int16{0, 1} {
		for _, good := range []bool{true, false} {
			rc := e.raw()
			hs := kmsg.NewPtrSASLHandshakeRequest()
			hs.Version, hs.Mechanism = hv, "PLAIN"
			if r := rc.roundTrip(hs).(*kmsg.SASLHandshakeResponse); r.ErrorCode != 0 {
				t.Fatalf("handshake v%d: %d", hv, r.ErrorCode)
			}
			pw := "s3cret"
			if !good {
				pw = "wrong"
			}
			tok := []byte("\x00svc\x00" + pw)
			if hv == 0 {
				rc.writeFrame(binary.BigEndian.AppendUint32(nil, uint32(len(tok))))
				rc.writeFrame(tok)
				b, err := rc.readFrame()
				if !good {
					if err == nil {
						t.Fatalf("v0 bad password answered % x", b)
					}
					continue
				}
				if err != nil || len(b) != 0 {
					t.Fatalf("v0 token answer %x %v", b, err)
				}
			} else {
				au := kmsg.NewPtrSASLAuthenticateRequest()
				au.Version, au.SASLAuthBytes = 1, tok
				r := rc.roundTrip(au).(*kmsg.SASLAuthenticateResponse)
				if !good {
					if r.ErrorCode != kerr.SaslAuthenticationFailed.Code {
						t.Fatalf("bad password: error %d", r.ErrorCode)
					}
					rc.expectClosed()
					continue
				}
				if r.ErrorCode != 0 {
					t.Fatalf("authenticate: %d", r.ErrorCode)
				}
			}
			if r := rc.roundTrip(md).(*kmsg.MetadataResponse); len(r.Brokers) != 1 {
				t.Fatal("metadata after auth")
			}
		}
	}
}

func TestTLSListener(t *testing.T) {
	cert := selfSigned(t)
	e := newEnv(t, withCfg(func(c *Config) { c.TLS = &tls.Config{Certificates: []tls.Certificate{cert}} }))
	tp := e.topic("sec", flagsTopic(1))
	appendN(t, tp, 20, 40<<10) // large enough that plain TCP would use sendfile
	c, err := tls.Dial("tcp", e.addr(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	rc := rawOver(t, c)
	req := kmsg.NewPtrFetchRequest()
	req.Version, req.ReplicaID, req.MaxBytes = 11, -1, 1<<20
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = "sec"
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.PartitionMaxBytes = 1 << 20
	rt.Partitions = []kmsg.FetchRequestTopicPartition{rp}
	req.Topics = []kmsg.FetchRequestTopic{rt}
	resp := rc.roundTrip(req).(*kmsg.FetchResponse)
	var fp kgoFetchPart
	if n := fp.count(t, resp.Topics[0].Partitions[0].RecordBatches); n == 0 || fp.first != 0 {
		t.Fatalf("fetched %d records from %d", n, fp.first)
	}
}
