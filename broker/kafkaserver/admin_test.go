package kafkaserver

import (
	"strconv"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

// TestAdvertisedAddress: Config.Advertised is the address Metadata and
// FindCoordinator hand out (clients connect there after bootstrapping),
// at every version; without it, the bound address.
func TestAdvertisedAddress(t *testing.T) {
	e := newEnv(t, withCfg(func(c *Config) { c.Advertised = "gateway.site.example:19092" }))
	rc := e.raw()
	for v := int16(0); v <= 12; v++ {
		md := kmsg.NewPtrMetadataRequest()
		md.Version = v
		resp := rc.roundTrip(md).(*kmsg.MetadataResponse)
		if len(resp.Brokers) != 1 || resp.Brokers[0].Host != "gateway.site.example" || resp.Brokers[0].Port != 19092 {
			t.Fatalf("metadata v%d brokers: %+v", v, resp.Brokers)
		}
	}
	for v := int16(0); v <= 4; v++ {
		fc := kmsg.NewPtrFindCoordinatorRequest()
		fc.Version, fc.CoordinatorKey, fc.CoordinatorKeys = v, "g", []string{"g"}
		resp := rc.roundTrip(fc).(*kmsg.FindCoordinatorResponse)
		host, port := resp.Host, resp.Port
		if v >= 4 {
			host, port = resp.Coordinators[0].Host, resp.Coordinators[0].Port
		}
		if host != "gateway.site.example" || port != 19092 {
			t.Fatalf("find coordinator v%d: %s:%d", v, host, port)
		}
	}

	bound := newEnv(t) // no Advertised: the bound loopback address and port
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 1
	b := bound.raw().roundTrip(md).(*kmsg.MetadataResponse).Brokers[0]
	if want := bound.srv.Addr().String(); b.Host+":"+itoa(b.Port) != want {
		t.Fatalf("without kafka.advertised: %s:%d, want %s", b.Host, b.Port, want)
	}
}

// TestDeleteTopicsProtected: DeleteTopics refuses the topics the daemon
// writes itself (POLICY_VIOLATION, topic kept) and deletes the others,
// one answer per topic.
func TestDeleteTopicsProtected(t *testing.T) {
	e := newEnv(t, withCfg(func(c *Config) { c.ProtectedTopics = []string{"telemetry", "commands"} }))
	e.topic("telemetry", commitlog.TopicConfig{Partitions: 1})
	e.topic("scratch", commitlog.TopicConfig{Partitions: 1})
	rc := e.raw()
	for _, v := range []int16{0, 5} {
		if v == 5 {
			e.topic("scratch", commitlog.TopicConfig{Partitions: 1})
		}
		req := kmsg.NewPtrDeleteTopicsRequest()
		req.Version, req.TimeoutMillis = v, 5000
		req.TopicNames = []string{"telemetry", "scratch", "nope", "commands"}
		resp := rc.roundTrip(req).(*kmsg.DeleteTopicsResponse)
		want := map[string]int16{
			"telemetry": kerr.PolicyViolation.Code,
			"scratch":   0,
			"nope":      kerr.UnknownTopicOrPartition.Code,
			"commands":  kerr.PolicyViolation.Code, // protected even before it exists
		}
		if len(resp.Topics) != len(want) {
			t.Fatalf("v%d: %d answers", v, len(resp.Topics))
		}
		for _, st := range resp.Topics {
			if st.Topic == nil || st.ErrorCode != want[*st.Topic] {
				t.Fatalf("v%d: %+v, want error %d", v, st, want[*st.Topic])
			}
		}
		if _, err := e.log.Topic("telemetry"); err != nil {
			t.Fatalf("v%d: protected topic gone: %v", v, err)
		}
		if _, err := e.log.Topic("scratch"); err == nil {
			t.Fatalf("v%d: scratch still there", v)
		}
	}
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }
