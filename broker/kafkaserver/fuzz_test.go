package kafkaserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"reflect"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
	"github.com/ferry-iot/ferry/broker/state"
)

// FuzzRequest feeds request bytes to a live listener over loopback TCP.
//
// With framed, data is one request frame without its size (the harness
// adds the size, then a Metadata request), so mutations reach the body
// decoders; without, data is the raw byte stream, so sizes, truncation and
// pipelining are fuzzed too.
//
// Invariants: no panic (a panic in a connection goroutine kills the
// process); every answer is a whole size-prefixed frame carrying the
// correlation id of the next unanswered request, in order, and decodes as
// that request's response; every request the listener can decode is
// answered, and the connection closes only after a frame it refuses (bad
// size, header or body) or after SaslAuthenticate, which ends it by
// design; the listener still answers Metadata on a new connection
// afterwards. Frames are capped at fuzzMaxRequest, so a declared size
// cannot blow memory up. A request that blocks (a Fetch long poll, a
// JoinGroup waiting for its group) is ended by closing the server after
// fuzzGrace, which must still write every answer it owes.
//
// One in-memory log and state store serve the whole run. Each input gets
// its own listener and its own real group.Coordinator (newTestGroups, as
// the daemon wires it), so the group APIs are fuzzed for real: joins,
// syncs, commits and deletions change state that lives only as long as
// the input, and afterwards the log is put back to its starting topics and
// the committed offsets are dropped from the store, so inputs do not
// depend on one another.
//
// Requests for APIs and versions the listener does not serve are decoded
// too: each must be answered with its own response type carrying
// UNSUPPORTED_VERSION, or close the connection when that answer has no
// place for the code (unsupported.go); unknown keys and versions get a
// bare error code.
func FuzzRequest(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s.frame, true)
		f.Add(s.raw, false)
	}
	for _, s := range hostileSeeds() {
		f.Add(s, false)
	}
	fx := newFuzzFixture(f)
	f.Fuzz(func(t *testing.T, data []byte, framed bool) {
		fx.run(t, data, framed)
	})
}

const (
	fuzzMaxRequest = 1 << 20
	fuzzGrace      = 250 * time.Millisecond
	fuzzTopic      = "fuzz" // 3 partitions, fuzzRecords records in partition 0; protected from DeleteTopics
	fuzzRecords    = 20
	fuzzLastCorr   = 0x7fff_fff0 // the harness's Metadata after a framed input
	// fuzzMaxNewPartitions bounds the partitions an input may ask to
	// create, so no input runs into the fuzz worker's 10 s limit.
	fuzzMaxNewPartitions = 8192
)

type fuzzFixture struct {
	st   *state.Store
	log  *commitlog.Log
	addr string // every input's listener binds the first one's port
}

func newFuzzFixture(f *testing.F) *fuzzFixture {
	st, err := state.Open("", state.WithInMemory(), state.WithLogger(quiet()))
	if err != nil {
		f.Fatal(err)
	}
	lg, err := commitlog.Open("/log", commitlog.WithFS(vfs.NewMem()), commitlog.WithLogger(quiet()), commitlog.WithMinFreeRatio(0))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		if err := lg.Close(); err != nil {
			f.Error(err)
		}
		if err := st.Close(); err != nil {
			f.Error(err)
		}
	})
	fx := &fuzzFixture{st: st, log: lg}
	if err := fx.reset(); err != nil {
		f.Fatal(err)
	}
	return fx
}

// reset deletes every topic but fuzzTopic, recreates fuzzTopic when an
// input grew or removed it, and drops committed group offsets.
func (fx *fuzzFixture) reset() error {
	for _, t := range fx.log.Topics() {
		if t.Name() == fuzzTopic && t.NumPartitions() == 3 && topicBytes(t) < 1<<20 {
			continue
		}
		if err := fx.log.DeleteTopic(t.Name()); err != nil {
			return err
		}
	}
	if _, err := fx.log.Topic(fuzzTopic); err != nil {
		tp, err := fx.log.CreateTopic(fuzzTopic, commitlog.TopicConfig{Partitions: 3})
		if err != nil {
			return err
		}
		p, _ := tp.Partition(0)
		recs := make([]commitlog.Record, fuzzRecords)
		for i := range recs {
			recs[i] = commitlog.Record{Key: []byte("k"), Value: fmt.Appendf(nil, "value %d", i)}
		}
		if _, err := p.Append(context.Background(), recs).Wait(context.Background()); err != nil {
			return err
		}
	}
	var keys [][]byte
	if err := fx.st.Scan([]byte("off/"), func(k, _ []byte) error { keys = append(keys, k); return nil }); err != nil {
		return err
	}
	for _, k := range keys {
		if err := fx.st.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func topicBytes(t *commitlog.Topic) int64 {
	var n int64
	for _, p := range t.Partitions() {
		n += p.Size()
	}
	return n
}

func (fx *fuzzFixture) run(t *testing.T, data []byte, framed bool) {
	stream := data
	if framed {
		stream = binary.BigEndian.AppendUint32(nil, uint32(len(data)))
		stream = append(stream, data...)
		md := kmsg.NewPtrMetadataRequest()
		md.Version = 1
		md.Topics = []kmsg.MetadataRequestTopic{{Topic: kmsg.StringPtr(fuzzTopic)}}
		// AppendRequest writes the size at dst[0]: encode on its own.
		stream = append(stream, kmsg.NewRequestFormatter(kmsg.FormatterClientID("fuzz")).AppendRequest(nil, md, fuzzLastCorr)...)
	}
	sent := splitFrames(stream, fuzzMaxRequest)
	if n := newPartitions(sent); n > fuzzMaxNewPartitions {
		// Creating topics costs the log time in proportion to what is
		// asked, which is not what this fuzzes (about 55 ms per 1,024
		// partitions here; see the Kafka listener notes in BENCHMARKS.md).
		t.Skipf("asks for %d new partitions", n)
	}

	// One port for the whole run: a fresh port per input would soon find
	// every ephemeral port held by TIME_WAIT sockets (SO_REUSEADDR lets the
	// listener take its old port back at once).
	if fx.addr == "" {
		fx.addr = "127.0.0.1:0"
	}
	groups := newTestGroups(t, fx.st, fx.log)
	srv, err := New(Config{
		Listen: fx.addr, Logger: quiet(), MaxRequestBytes: fuzzMaxRequest,
		AutoCreateTopics: true, TopicDefaults: commitlog.TopicConfig{Partitions: 3},
		ProtectedTopics: []string{fuzzTopic},
	}, fx.log, groups, fx.st)
	if err != nil {
		t.Fatal(err)
	}
	fx.addr = srv.Addr().String()
	srv.Start()
	closeSrv := sync.OnceValue(srv.Close)
	defer func() {
		if err := closeSrv(); err != nil {
			t.Error(err)
		}
		closeTestGroups(t, groups)
		if err := fx.reset(); err != nil {
			t.Fatal(err)
		}
	}()

	c, err := net.DialTimeout("tcp", srv.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		// The server may close first: write errors are expected.
		c.SetWriteDeadline(time.Now().Add(20 * time.Second))
		c.Write(stream)
		c.(*net.TCPConn).CloseWrite()
	})

	forced := make(chan struct{})
	grace := time.AfterFunc(fuzzGrace, func() { close(forced); closeSrv() })
	answers, err := readAnswers(c, 20*time.Second)
	if err != nil {
		t.Fatalf("%v (after %d answers to %d frames)", err, len(answers), len(sent))
	}
	complete := grace.Stop() // false: the server was closed under a blocked request
	if !complete {
		<-forced
	}
	if err := checkAnswers(sent, answers, complete); err != nil {
		t.Fatal(err)
	}
	if complete && !(framed && len(answers) > 0 && int32(binary.BigEndian.Uint32(answers[len(answers)-1])) == fuzzLastCorr) {
		// Not answered on this connection: the listener must still
		// serve a new one.
		rc := rawOver(t, dial(t, srv.Addr().String()))
		md := kmsg.NewPtrMetadataRequest()
		md.Version = 12
		if resp := rc.roundTrip(md).(*kmsg.MetadataResponse); len(resp.Brokers) != 1 {
			t.Fatalf("metadata after the input: %d brokers", len(resp.Brokers))
		}
	}
}

func dial(t *testing.T, addr string) net.Conn {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sentFrame is a request frame as the client sent it, decoded the way the
// listener decodes it.
type sentFrame struct {
	key, version int16
	corr         int32
	headerOK     bool
	served       bool         // an API and version the listener serves
	known        bool         // not served, but a key and version kmsg decodes (answered with its own response type)
	req          kmsg.Request // decoded body (served, known, and ApiVersions 0-3), nil when undecodable
	noRoom       bool         // known, but its answer has no place for UNSUPPORTED_VERSION: closed
}

// closes reports whether the listener ends the connection at this frame:
// one it cannot parse, an unsupported request whose answer could not say
// so, or SaslAuthenticate without a handshake (answered, then closed). No
// SASL is configured in the fuzz, so no frame is a bare SASL token.
func (f *sentFrame) closes() bool {
	switch {
	case !f.headerOK:
		return true
	case f.served:
		return f.req == nil || f.key == kmsg.SASLAuthenticate.Int16()
	case f.known:
		return f.req == nil || f.noRoom
	}
	return false
}

// answered reports whether the listener answers this frame.
func (f *sentFrame) answered() bool {
	if !f.headerOK || ((f.served || f.known) && (f.req == nil || f.noRoom)) {
		return false
	}
	if p, ok := f.req.(*kmsg.ProduceRequest); ok && f.served && p.Acks == 0 {
		return false
	}
	return true
}

// newPartitions is how many partitions the frames may create at most:
// CreateTopics, and Metadata with auto-creation (3 partitions a topic in
// the fuzz).
func newPartitions(frames []sentFrame) int {
	n := 0
	for _, f := range frames {
		if !f.served {
			continue
		}
		switch r := f.req.(type) {
		case *kmsg.CreateTopicsRequest:
			for _, t := range r.Topics {
				switch p := int(t.NumPartitions); {
				case r.ValidateOnly:
				case p == -1:
					n += 3
				case p >= 1 && p <= maxPartitions:
					n += p
				}
			}
		case *kmsg.MetadataRequest:
			if r.Version < 4 || r.AllowAutoTopicCreation {
				n += 3 * len(r.Topics)
			}
		}
	}
	return n
}

// splitFrames cuts stream into the frames the listener will read: up to a
// refused size or a partial frame, which end the connection.
func splitFrames(stream []byte, maxBytes int) []sentFrame {
	var out []sentFrame
	for len(stream) >= 4 {
		n := int32(binary.BigEndian.Uint32(stream))
		if n < 0 || int(n) > maxBytes || len(stream)-4 < int(n) {
			break
		}
		frame := stream[4 : 4+n]
		stream = stream[4+n:]
		rd := kbin.Reader{Src: frame}
		f := sentFrame{key: rd.Int16(), version: rd.Int16(), corr: rd.Int32()}
		if hasClientID(f.key, f.version) {
			rd.NullableString()
		}
		f.headerOK = rd.Complete() == nil
		if f.headerOK {
			f.decode(rd)
		}
		out = append(out, f)
		if f.closes() {
			break
		}
	}
	return out
}

func (f *sentFrame) decode(rd kbin.Reader) {
	req := kmsg.RequestForKey(f.key)
	if f.key == kmsg.ApiVersions.Int16() {
		if f.version < 0 || f.version > apiVersionsMax {
			return
		}
	} else {
		a, ok := apiFor(f.key)
		f.served = ok && f.version >= a.min && f.version <= a.max
		f.known = !f.served && req != nil && f.version >= 0 && f.version <= req.MaxVersion()
		if !f.served && !f.known {
			return
		}
	}
	req.SetVersion(f.version)
	if req.IsFlexible() {
		kmsg.SkipTags(&rd)
		if rd.Complete() != nil {
			return
		}
	}
	if req.ReadFrom(rd.Src) == nil {
		f.req = req
		if f.known {
			_, ok := unsupportedAnswer(req, kerr.UnsupportedVersion.Code)
			f.noRoom = !ok
		}
	}
}

// readAnswers reads answer frames until the server closes the connection.
// An answer cut short, or one longer than 256 MiB, is an error, and so is
// a connection still open after timeout.
func readAnswers(c net.Conn, timeout time.Duration) ([][]byte, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	br := bufio.NewReader(c)
	var out [][]byte
	for {
		var size [4]byte
		if _, err := io.ReadFull(br, size[:]); err != nil {
			switch {
			case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET):
				return out, nil
			case isTimeout(err):
				return out, fmt.Errorf("connection neither answered nor closed within %v", timeout)
			}
			return out, fmt.Errorf("read answer size: %w", err)
		}
		n := binary.BigEndian.Uint32(size[:])
		if n < 4 || n > 256<<20 {
			return out, fmt.Errorf("answer of %d bytes", n)
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return out, fmt.Errorf("answer of %d bytes cut short: %w", n, err)
		}
		out = append(out, b)
	}
}

// checkAnswers matches answers to the frames sent, in order. With
// complete (the server was not closed under the client), every frame the
// listener can decode must have been answered.
func checkAnswers(sent []sentFrame, answers [][]byte, complete bool) error {
	j := 0
	for i, a := range answers {
		for j < len(sent) && sent[j].headerOK && !sent[j].answered() && !sent[j].closes() {
			j++ // acks=0 Produce: no answer
		}
		if j == len(sent) || !sent[j].answered() {
			return fmt.Errorf("answer %d (correlation id %d) answers nothing: %d frames sent", i, int32(binary.BigEndian.Uint32(a)), len(sent))
		}
		f := &sent[j]
		if corr := int32(binary.BigEndian.Uint32(a)); corr != f.corr {
			return fmt.Errorf("answer %d has correlation id %d, want %d (%s v%d)", i, corr, f.corr, kmsg.NameForKey(f.key), f.version)
		}
		if err := checkAnswer(f, a[4:]); err != nil {
			return fmt.Errorf("answer %d to %s v%d: %w", i, kmsg.NameForKey(f.key), f.version, err)
		}
		j++
	}
	if !complete {
		return nil
	}
	for ; j < len(sent); j++ {
		if sent[j].answered() {
			return fmt.Errorf("%s v%d (correlation id %d) was decodable but got no answer before the connection closed",
				kmsg.NameForKey(sent[j].key), sent[j].version, sent[j].corr)
		}
		if sent[j].closes() {
			break
		}
	}
	return nil
}

// checkAnswer decodes an answer body (after the correlation id) as the
// response its request calls for.
func checkAnswer(f *sentFrame, body []byte) error {
	switch {
	case f.key == kmsg.ApiVersions.Int16():
		// At the request's version, or v0 when that was unsupported or
		// the body undecodable; never a flexible header.
		v := f.version
		if f.req == nil {
			v = 0
		}
		resp := kmsg.NewPtrApiVersionsResponse()
		resp.Version = v
		if err := resp.ReadFrom(body); err != nil {
			return err
		}
		if f.req == nil && resp.ErrorCode == 0 {
			return errors.New("unsupported or undecodable ApiVersions answered without an error")
		}
		return nil
	case f.served:
		return decodeResponse(f.req.ResponseKind(), body)
	case f.known:
		// The API's own response, saying UNSUPPORTED_VERSION somewhere.
		resp := f.req.ResponseKind()
		if err := decodeResponse(resp, body); err != nil {
			return err
		}
		codes := map[string]int16{} // the test's own walk, not the server's
		errorCodes(reflect.ValueOf(resp), "", codes)
		if !slices.Contains(slices.Collect(maps.Values(codes)), kerr.UnsupportedVersion.Code) {
			return errors.New("unsupported request answered without UNSUPPORTED_VERSION")
		}
		return nil
	}
	// Unknown key or version: a bare UNSUPPORTED_VERSION.
	if len(body) != 2 {
		return fmt.Errorf("%d-byte answer to an unknown API or version, want a bare error code", len(body))
	}
	if code := int16(binary.BigEndian.Uint16(body)); code != kerr.UnsupportedVersion.Code {
		return fmt.Errorf("error code %d, want UNSUPPORTED_VERSION", code)
	}
	return nil
}

func decodeResponse(resp kmsg.Response, body []byte) error {
	if resp.IsFlexible() {
		if len(body) == 0 || body[0] != 0 {
			return errors.New("flexible response without an empty header tag buffer")
		}
		body = body[1:]
	}
	return resp.ReadFrom(body)
}

// ---- Seeds ----

type fuzzSeed struct {
	key, version int16
	frame        []byte // one frame without its size
	raw          []byte // the same frame with its size
}

func fuzzSeeds() []fuzzSeed {
	var out []fuzzSeed
	fm := kmsg.NewRequestFormatter(kmsg.FormatterClientID("fuzz"))
	add := func(req kmsg.Request, v int16) {
		req.SetVersion(v)
		raw := fm.AppendRequest(nil, req, int32(len(out)+1))
		out = append(out, fuzzSeed{key: req.Key(), version: v, frame: raw[4:], raw: raw})
	}
	for v := int16(0); v <= 4; v++ { // 4: above the served range
		r := kmsg.NewPtrApiVersionsRequest()
		r.ClientSoftwareName, r.ClientSoftwareVersion = "fuzz", "1"
		add(r, v)
	}
	for _, v := range []int16{0, 1, 4, 12} {
		r := kmsg.NewPtrMetadataRequest()
		if v > 0 {
			r.Topics = []kmsg.MetadataRequestTopic{{Topic: kmsg.StringPtr(fuzzTopic)}, {Topic: kmsg.StringPtr("auto")}}
			r.AllowAutoTopicCreation = true
		}
		add(r, v)
	}
	for _, v := range []int16{3, 7, 9} {
		add(produceReq(fuzzTopic, 0, batch(-1, -1, -1, 3, "x")), v)
	}
	idem := produceReq(fuzzTopic, 1, batch(1, 0, 0, 2, "i"))
	add(idem, 8)
	acks0 := produceReq(fuzzTopic, 2, batch(-1, -1, -1, 1, "z"))
	acks0.Acks = 0
	add(acks0, 7)
	for _, v := range []int16{4, 11, 12, 13} { // 13: topic ids, not served
		r := kmsg.NewPtrFetchRequest()
		r.ReplicaID, r.MaxBytes, r.SessionEpoch = -1, 1<<20, -1
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = fuzzTopic
		for p := int32(0); p < 4; p++ {
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = p, 2, 1<<20
			rt.Partitions = append(rt.Partitions, rp)
		}
		r.Topics = []kmsg.FetchRequestTopic{rt}
		add(r, v)
	}
	for _, v := range []int16{0, 7} {
		r := kmsg.NewPtrListOffsetsRequest()
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = fuzzTopic
		for i, ts := range []int64{-1, -2, -3, 0} {
			rp := kmsg.NewListOffsetsRequestTopicPartition()
			rp.Partition, rp.Timestamp = int32(i), ts
			rt.Partitions = append(rt.Partitions, rp)
		}
		r.Topics = []kmsg.ListOffsetsRequestTopic{rt}
		add(r, v)
	}
	for _, v := range []int16{0, 3, 4} {
		r := kmsg.NewPtrFindCoordinatorRequest()
		r.CoordinatorKey, r.CoordinatorKeys = "g", []string{"g", "h"}
		add(r, v)
	}
	for _, v := range []int16{1, 5} {
		r := kmsg.NewPtrJoinGroupRequest()
		r.Group, r.SessionTimeoutMillis, r.RebalanceTimeoutMillis, r.ProtocolType = "g", 6000, 1000, "consumer"
		r.Protocols = []kmsg.JoinGroupRequestProtocol{{Name: "range", Metadata: []byte{0, 1, 0, 0, 0, 1, 0, 4, 'f', 'u', 'z', 'z'}}}
		add(r, v)
	}
	for _, v := range []int16{0, 5} {
		r := kmsg.NewPtrSyncGroupRequest()
		r.Group, r.Generation, r.MemberID = "g", 1, "m"
		r.ProtocolType, r.Protocol = kmsg.StringPtr("consumer"), kmsg.StringPtr("range")
		r.GroupAssignment = []kmsg.SyncGroupRequestGroupAssignment{{MemberID: "m", MemberAssignment: []byte{0, 1}}}
		add(r, v)
	}
	hb := kmsg.NewPtrHeartbeatRequest()
	hb.Group, hb.Generation, hb.MemberID = "g", 1, "m"
	add(hb, 4)
	for _, v := range []int16{0, 3} {
		r := kmsg.NewPtrLeaveGroupRequest()
		r.Group, r.MemberID = "g", "m"
		r.Members = []kmsg.LeaveGroupRequestMember{{MemberID: "m"}}
		add(r, v)
	}
	for _, v := range []int16{2, 8} {
		r := kmsg.NewPtrOffsetCommitRequest()
		r.Group, r.Generation, r.MemberID = "g", -1, ""
		rt := kmsg.NewOffsetCommitRequestTopic()
		rt.Topic = fuzzTopic
		rt.Partitions = []kmsg.OffsetCommitRequestTopicPartition{{Partition: 0, Offset: 5, Metadata: kmsg.StringPtr("m")}}
		r.Topics = []kmsg.OffsetCommitRequestTopic{rt}
		add(r, v)
	}
	for _, v := range []int16{1, 8} {
		r := kmsg.NewPtrOffsetFetchRequest()
		r.Group = "g"
		r.Topics = []kmsg.OffsetFetchRequestTopic{{Topic: fuzzTopic, Partitions: []int32{0, 1}}}
		r.Groups = []kmsg.OffsetFetchRequestGroup{{Group: "g", Topics: []kmsg.OffsetFetchRequestGroupTopic{{Topic: fuzzTopic, Partitions: []int32{0}}}}}
		add(r, v)
	}
	dg := kmsg.NewPtrDescribeGroupsRequest()
	dg.Groups = []string{"g"}
	add(dg, 5)
	add(kmsg.NewPtrListGroupsRequest(), 4)
	del := kmsg.NewPtrDeleteGroupsRequest()
	del.Groups = []string{"g"}
	add(del, 2)
	for _, v := range []int16{0, 4} {
		add(kmsg.NewPtrInitProducerIDRequest(), v)
	}
	for _, v := range []int16{0, 5} {
		r := kmsg.NewPtrCreateTopicsRequest()
		r.TimeoutMillis = 5000
		good := kmsg.NewCreateTopicsRequestTopic()
		good.Topic, good.NumPartitions, good.ReplicationFactor = "created", 2, 1
		good.Configs = []kmsg.CreateTopicsRequestTopicConfig{{Name: "retention.ms", Value: kmsg.StringPtr("60000")}}
		bad := kmsg.NewCreateTopicsRequestTopic()
		bad.Topic, bad.NumPartitions, bad.ReplicationFactor = "bad", 1, 1
		bad.Configs = []kmsg.CreateTopicsRequestTopicConfig{{Name: "ferry.flush", Value: kmsg.StringPtr("sometimes")}}
		r.Topics = []kmsg.CreateTopicsRequestTopic{good, bad}
		add(r, v)
	}
	for _, v := range []int16{0, 5} {
		r := kmsg.NewPtrDeleteTopicsRequest()
		r.TopicNames = []string{fuzzTopic, "nope"}
		add(r, v)
	}
	for _, v := range []int16{0, 1} {
		r := kmsg.NewPtrSASLHandshakeRequest()
		r.Mechanism = "PLAIN"
		add(r, v)
	}
	au := kmsg.NewPtrSASLAuthenticateRequest()
	au.SASLAuthBytes = []byte("\x00u\x00p")
	add(au, 1)
	add(kmsg.NewPtrDescribeConfigsRequest(), 1) // not served
	return out
}

// hostileSeeds are raw streams: pipelines, truncations, bad sizes, unknown keys.
func hostileSeeds() [][]byte {
	seeds := fuzzSeeds()
	find := func(key kmsg.Key, v int16) []byte {
		for _, s := range seeds {
			if s.key == key.Int16() && s.version == v {
				return s.raw
			}
		}
		panic(fmt.Sprintf("no seed for %s v%d", kmsg.NameForKey(key.Int16()), v))
	}
	var pipeline []byte
	for _, kv := range []struct {
		key kmsg.Key
		v   int16
	}{{kmsg.ApiVersions, 3}, {kmsg.Metadata, 12}, {kmsg.Produce, 7}, {kmsg.Produce, 8}, {kmsg.Fetch, 11}, {kmsg.ListOffsets, 7}} {
		pipeline = append(pipeline, find(kv.key, kv.v)...)
	}
	// A group's life in one stream: join (v1 joins at once), describe,
	// list, commit, fetch the commit, leave, delete.
	var groupLife []byte
	for _, kv := range []struct {
		key kmsg.Key
		v   int16
	}{{kmsg.JoinGroup, 1}, {kmsg.DescribeGroups, 5}, {kmsg.ListGroups, 4}, {kmsg.OffsetCommit, 2}, {kmsg.OffsetFetch, 1},
		{kmsg.Heartbeat, 4}, {kmsg.LeaveGroup, 3}, {kmsg.DeleteGroups, 2}, {kmsg.OffsetFetch, 8}} {
		groupLife = append(groupLife, find(kv.key, kv.v)...)
	}
	md := find(kmsg.Metadata, 12)
	unknown := []byte{0, 0, 0, 10, 0x03, 0xe7, 0, 0, 0, 0, 0, 77, 0xff, 0xff} // key 999
	huge := binary.BigEndian.AppendUint32(nil, fuzzMaxRequest+1)
	return [][]byte{
		pipeline,
		groupLife,
		md[:len(md)/2],                        // truncated frame
		append(bytes.Clone(md), md[:7]...),    // a frame, then a partial one
		append(huge, md[4:14]...),             // a declared size over the limit
		{0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 12}, // 2 GiB declared
		{0xff, 0xff, 0xff, 0xf0},              // negative size
		{0, 0, 0, 3, 0, 18, 0},                // header cut short
		unknown,
		append(bytes.Clone(unknown), md...),     // unknown key, then Metadata
		append(bytes.Clone(md), 0, 0, 0, 0),     // a frame, then an empty one
		append([]byte{0, 0, 0, 8}, md[4:12]...), // header without a client id
	}
}
