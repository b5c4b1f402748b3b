package kafkaserver

import (
	"encoding/binary"
	"fmt"
	"reflect"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// errorCodes collects every ErrorCode field of a decoded response, with
// its path.
func errorCodes(v reflect.Value, path string, out map[string]int16) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			errorCodes(v.Elem(), path, out)
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			f := v.Type().Field(i)
			switch {
			case f.Name == "ErrorCode" && f.Type.Kind() == reflect.Int16:
				out[path+"ErrorCode"] = int16(v.Field(i).Int())
			case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
				errorCodes(v.Field(i), path+f.Name, out)
			}
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			errorCodes(v.Index(i), fmt.Sprintf("%s[%d].", path, i), out)
		}
	}
}

// fillRequest gives every string field "x" and every slice one element,
// recursively, so a request names at least one resource of each kind.
func fillRequest(v reflect.Value, depth int) {
	if depth > 6 {
		return
	}
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		if !f.IsExported() || f.Name == "Version" {
			continue
		}
		d := v.Field(i)
		switch f.Type.Kind() {
		case reflect.String:
			d.SetString("x")
		case reflect.Pointer:
			if f.Type.Elem().Kind() == reflect.String {
				d.Set(reflect.ValueOf(kmsg.StringPtr("x")))
			}
		case reflect.Slice:
			el := reflect.New(f.Type.Elem()).Elem()
			switch f.Type.Elem().Kind() {
			case reflect.Struct:
				if def := el.Addr().MethodByName("Default"); def.IsValid() {
					def.Call(nil)
				}
				fillRequest(el, depth+1)
			case reflect.String:
				el.SetString("x")
			case reflect.Int32, reflect.Int64:
			default:
				continue
			}
			d.Set(reflect.Append(reflect.MakeSlice(f.Type, 0, 1), el))
		}
	}
}

// TestUnsupported: requests for an API Ferry does not serve, or for a
// version outside the served range, are answered with their own response
// type and UNSUPPORTED_VERSION in the error code of every resource they
// name (the top-level code alone says nothing to a client that looks per
// partition, and responses without one came back empty, as if fine); the
// connection stays open. Nothing is stored.
func TestUnsupported(t *testing.T) {
	e := newEnv(t)
	tp := e.topic("u", flagsTopic(2))
	rc := e.raw()
	uv := kerr.UnsupportedVersion.Code
	want := func(what string, got int16) {
		t.Helper()
		if got != uv {
			t.Errorf("%s: error %d, want UNSUPPORTED_VERSION", what, got)
		}
	}

	dc := kmsg.NewPtrDescribeConfigsRequest() // key 32: not served
	dc.Version = 1
	dc.Resources = []kmsg.DescribeConfigsRequestResource{{ResourceType: kmsg.ConfigResourceTypeTopic, ResourceName: "u"}}
	dcr := rc.roundTrip(dc).(*kmsg.DescribeConfigsResponse)
	if len(dcr.Resources) != 1 || dcr.Resources[0].ResourceName != "u" || dcr.Resources[0].ResourceType != kmsg.ConfigResourceTypeTopic {
		t.Fatalf("describe configs: %+v", dcr.Resources)
	}
	want("DescribeConfigs resource", dcr.Resources[0].ErrorCode)

	md := kmsg.NewPtrMetadataRequest() // v13: above the served range
	md.Version = 13
	md.Topics = []kmsg.MetadataRequestTopic{{Topic: kmsg.StringPtr("u")}}
	mdr := rc.roundTrip(md).(*kmsg.MetadataResponse)
	want("Metadata v13", mdr.ErrorCode)
	if len(mdr.Topics) != 1 || mdr.Topics[0].Topic == nil || *mdr.Topics[0].Topic != "u" {
		t.Fatalf("metadata v13 topics: %+v", mdr.Topics)
	}
	want("Metadata v13 topic", mdr.Topics[0].ErrorCode)

	lo := kmsg.NewPtrListOffsetsRequest()
	lo.Version = 8
	lo.Topics = []kmsg.ListOffsetsRequestTopic{{Topic: "u", Partitions: []kmsg.ListOffsetsRequestTopicPartition{{Partition: 1, Timestamp: -1}}}}
	lor := rc.roundTrip(lo).(*kmsg.ListOffsetsResponse)
	if len(lor.Topics) != 1 || lor.Topics[0].Topic != "u" || len(lor.Topics[0].Partitions) != 1 || lor.Topics[0].Partitions[0].Partition != 1 {
		t.Fatalf("list offsets v8: %+v", lor.Topics)
	}
	want("ListOffsets v8 partition", lor.Topics[0].Partitions[0].ErrorCode)

	for _, v := range []int16{2, 10} { // below (old message sets) and above the range
		pr := produceReq("u", 1, batch(-1, -1, -1, 2, "x"))
		pr.Version = v
		prr := rc.roundTrip(pr).(*kmsg.ProduceResponse)
		if len(prr.Topics) != 1 || prr.Topics[0].Topic != "u" || len(prr.Topics[0].Partitions) != 1 || prr.Topics[0].Partitions[0].Partition != 1 {
			t.Fatalf("produce v%d: %+v", v, prr.Topics)
		}
		want(fmt.Sprintf("Produce v%d partition", v), prr.Topics[0].Partitions[0].ErrorCode)
	}
	for _, v := range []int16{3, 13} { // below the range (no top-level code before v7), and topic ids
		f := fetchAt("u", 0, 0, 0)
		f.Version = v
		f.Topics[0].Partitions[0].Partition = 1
		fr := rc.roundTrip(f).(*kmsg.FetchResponse)
		if v >= 7 {
			want(fmt.Sprintf("Fetch v%d", v), fr.ErrorCode)
		}
		if len(fr.Topics) != 1 || len(fr.Topics[0].Partitions) != 1 || fr.Topics[0].Partitions[0].Partition != 1 {
			t.Fatalf("fetch v%d: %+v", v, fr.Topics)
		}
		if v < 13 && fr.Topics[0].Topic != "u" {
			t.Fatalf("fetch v%d answers topic %q", v, fr.Topics[0].Topic)
		}
		want(fmt.Sprintf("Fetch v%d partition", v), fr.Topics[0].Partitions[0].ErrorCode)
	}
	for _, p := range tp.Partitions() {
		if p.HighWatermark() != 0 {
			t.Fatalf("an unsupported Produce stored records in partition %d", p.ID())
		}
	}

	// Key 999: no such API; a bare error frame.
	frame := binary.BigEndian.AppendUint32(nil, 0)
	frame = binary.BigEndian.AppendUint16(frame, 999)
	frame = binary.BigEndian.AppendUint16(frame, 0)
	frame = binary.BigEndian.AppendUint32(frame, 77)
	frame = binary.BigEndian.AppendUint16(frame, 0xffff) // null client id
	binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
	rc.writeFrame(frame)
	b, err := rc.readFrame()
	if err != nil {
		t.Fatal(err)
	}
	if int32(binary.BigEndian.Uint32(b)) != 77 || int16(binary.BigEndian.Uint16(b[4:])) != uv {
		t.Fatalf("unknown key answer % x", b)
	}
	md = kmsg.NewPtrMetadataRequest()
	md.Version = 12
	md.Topics = []kmsg.MetadataRequestTopic{}
	rc.roundTrip(md)

	// A request whose answer has no place for the code (Fetch v3 naming no
	// topic) tells the client nothing: closed, as Kafka does.
	rc = e.raw()
	f := kmsg.NewPtrFetchRequest()
	f.Version = 3
	rc.send(f)
	rc.expectClosed()
}

// TestUnsupportedEveryAPI: every key and version kmsg knows that Ferry
// does not serve, asked about one resource of each kind, is answered on
// the same connection with UNSUPPORTED_VERSION and no other code.
func TestUnsupportedEveryAPI(t *testing.T) {
	e := newEnv(t)
	rc := e.raw()
	n := 0
	for key := int16(0); key <= kmsg.MaxKey; key++ {
		proto := kmsg.RequestForKey(key)
		if proto == nil || key == kmsg.ApiVersions.Int16() {
			continue
		}
		for v := int16(0); v <= proto.MaxVersion(); v++ {
			if a, ok := apiFor(key); ok && v >= a.min && v <= a.max {
				continue
			}
			if !hasClientID(key, v) {
				continue // kmsg frames ControlledShutdown v0 (header v0) without its size
			}
			req := kmsg.RequestForKey(key)
			if def := reflect.ValueOf(req).MethodByName("Default"); def.IsValid() {
				def.Call(nil)
			}
			fillRequest(reflect.ValueOf(req).Elem(), 0)
			req.SetVersion(v)
			resp := rc.roundTrip(req)
			codes := map[string]int16{}
			errorCodes(reflect.ValueOf(resp), "", codes)
			found := false
			for path, c := range codes {
				switch c {
				case kerr.UnsupportedVersion.Code:
					found = true
				case 0:
				default:
					t.Errorf("%s v%d: %s = %d", kmsg.NameForKey(key), v, path, c)
				}
			}
			if !found {
				t.Errorf("%s v%d: no UNSUPPORTED_VERSION in the answer: %v", kmsg.NameForKey(key), v, codes)
			}
			n++
		}
	}
	t.Logf("%d unsupported keys and versions answered", n)
}
