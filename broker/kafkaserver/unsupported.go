package kafkaserver

// Requests for an API or a version Ferry does not serve.
//
// Kafka closes the connection on such a request (all but ApiVersions,
// which falls back to v0). Ferry answers instead, so a client that asks
// for something it did not check in ApiVersions learns why, and the
// connection keeps its framing: the answer is the request's own response
// type at the request's version, with UNSUPPORTED_VERSION in every error
// code it can carry — the top-level one where the version has it, and one
// per resource the request named (topic, partition, group, config
// resource…), mirrored from the request with the fields that identify
// each resource (name, id, partition index) copied over. A response that,
// at its version, has no place for the code for what was asked (say Fetch
// v0-3 with no topics) cannot tell the client anything: the connection is
// closed, as Kafka does. A key or version kmsg does not know cannot be
// decoded: it gets a bare error frame (correlation id and the code).

import (
	"encoding/binary"
	"reflect"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// unsupported answers a key or version Ferry does not serve; nil closes
// the connection (an undecodable body, or no place for the error code).
func (c *conn) unsupported(key, version int16, corr int32, body []byte, start time.Time) *outbound {
	c.s.metrics.Unsupported.WithLabelValues(kmsg.NameForKey(key)).Inc()
	kreq := kmsg.RequestForKey(key)
	if kreq == nil || version < 0 || version > kreq.MaxVersion() {
		b := binary.BigEndian.AppendUint16(nil, uint16(kerr.UnsupportedVersion.Code))
		return &outbound{corr: corr, key: key, raw: b, errc: kerr.UnsupportedVersion.Code, start: start}
	}
	kreq.SetVersion(version)
	rd := kbin.Reader{Src: body}
	if kreq.IsFlexible() {
		kmsg.SkipTags(&rd)
	}
	if rd.Complete() != nil || kreq.ReadFrom(rd.Src) != nil {
		c.s.metrics.Malformed.WithLabelValues("body").Inc()
		return nil
	}
	resp, ok := unsupportedAnswer(kreq, kerr.UnsupportedVersion.Code)
	if !ok {
		c.s.metrics.Malformed.WithLabelValues("unsupported").Inc()
		c.s.limiter.Warn(c.s.logger, c.remote+"unsupported", "kafkaserver: unsupported request with no room for an error code, closing",
			"remote", c.remote, "api", kmsg.NameForKey(key), "version", version)
		return nil
	}
	return &outbound{corr: corr, key: key, resp: resp, start: start}
}

// unsupportedAnswer builds req's response with code in every error code
// field (see the file comment). ok reports whether the encoded answer
// carries code anywhere at the request's version.
func unsupportedAnswer(req kmsg.Request, code int16) (kmsg.Response, bool) {
	resp := req.ResponseKind()
	mirror(reflect.ValueOf(resp).Elem(), reflect.ValueOf(req).Elem(), code)
	back := req.ResponseKind()
	if err := back.ReadFrom(resp.AppendTo(nil)); err != nil {
		return resp, false
	}
	// mirror writes no code but code, so the first one the walk finds is
	// code exactly when the version has a place for it.
	return resp, firstErrorCode(back) == code
}

// mirror fills the response struct dst from the request struct src: every
// ErrorCode field gets code, and every slice of structs in dst gets one
// element per element of src's slice of the same name (or, for dst's one
// slice without a namesake, per element of src's other slices:
// FindCoordinator's CoordinatorKeys answered in Coordinators), recursively, with its identifying fields copied (the
// message's own scalars, version and timeouts, are left alone).
func mirror(dst, src reflect.Value, code int16) {
	t := dst.Type()
	var lone []int // dst slices with no namesake in src
	used := map[string]bool{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		switch {
		case !f.IsExported():
		case f.Name == "ErrorCode" && f.Type.Kind() == reflect.Int16:
			dst.Field(i).SetInt(int64(code))
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct && src.IsValid():
			if s := src.FieldByName(f.Name); s.IsValid() && isResourceSlice(s.Type()) {
				used[f.Name] = true
				mirrorSlice(dst.Field(i), s, f.Name, code)
			} else {
				lone = append(lone, i)
			}
		}
	}
	if len(lone) != 1 {
		return
	}
	var other []int
	for i := 0; i < src.NumField(); i++ {
		if f := src.Type().Field(i); f.IsExported() && !used[f.Name] && isResourceSlice(f.Type) {
			other = append(other, i)
		}
	}
	for _, i := range other { // AlterUserSCRAMCredentials: a result per deletion and per upsertion
		mirrorSlice(dst.Field(lone[0]), src.Field(i), src.Type().Field(i).Name, code)
	}
}

// isResourceSlice: a request slice naming resources (structs, names or
// partition numbers; not bytes).
func isResourceSlice(t reflect.Type) bool {
	if t.Kind() != reflect.Slice {
		return false
	}
	switch t.Elem().Kind() {
	case reflect.Struct, reflect.String, reflect.Int32, reflect.Int64:
		return true
	}
	return false
}

// mirrorSlice appends to d (a response slice of structs) one element per
// element of the request slice s, named name.
func mirrorSlice(d, s reflect.Value, name string, code int16) {
	out := reflect.MakeSlice(d.Type(), s.Len(), s.Len())
	for j := 0; j < s.Len(); j++ {
		el := out.Index(j)
		if def := el.Addr().MethodByName("Default"); def.IsValid() {
			def.Call(nil)
		}
		se := s.Index(j)
		if se.Kind() == reflect.Struct {
			copyIdentity(el, se)
			mirror(el, se, code)
			continue
		}
		// []int32 partitions, []string groups: the element's field of the
		// singular name, else its first field of that type.
		id := el.FieldByName(strings.TrimSuffix(name, "s"))
		if !id.IsValid() || id.Type() != se.Type() {
			id = reflect.Value{}
			for k := 0; k < el.NumField(); k++ {
				if el.Type().Field(k).IsExported() && el.Field(k).Type() == se.Type() {
					id = el.Field(k)
					break
				}
			}
		}
		if id.IsValid() {
			id.Set(se)
		}
		mirror(el, reflect.Value{}, code)
	}
	d.Set(reflect.AppendSlice(d, out))
}

// copyIdentity copies the scalar fields dst and src share by name and type
// (topic name, topic id, partition index, group, resource type and name).
func copyIdentity(dst, src reflect.Value) {
	t := src.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() || f.Name == "ErrorCode" || f.Name == "UnknownTags" {
			continue
		}
		switch k := f.Type.Kind(); {
		case k == reflect.String, k == reflect.Int8, k == reflect.Int16, k == reflect.Int32, k == reflect.Int64,
			k == reflect.Array, k == reflect.Pointer && f.Type.Elem().Kind() == reflect.String:
			if d := dst.FieldByName(f.Name); d.IsValid() && d.Type() == f.Type && d.CanSet() {
				d.Set(src.Field(i))
			}
		}
	}
}
