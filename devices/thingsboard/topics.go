package thingsboard

import (
	"strconv"
	"strings"
)

// Topic names follow MqttTopics.java; the publish dispatch and the order
// of its prefix checks follow MqttTransportHandler.processDevicePublish and
// handleGatewayPublishMsg; the subscription list follows processSubscribe.

// TopicKind is what a device publish is for.
type TopicKind uint8

const (
	TopicUnknown                  TopicKind = iota
	TopicTelemetry                          // v1/devices/me/telemetry, v2/t, v2/t/j
	TopicAttributes                         // v1/devices/me/attributes, v2/a, v2/a/j
	TopicAttributesRequest                  // v1/devices/me/attributes/request/{id}, v2/a/req/{id}, v2/a/req/j/{id}
	TopicRPCResponse                        // v1/devices/me/rpc/response/{id}, v2/r/res/{id}, v2/r/res/j/{id}: the device answers a server RPC
	TopicRPCRequest                         // v1/devices/me/rpc/request/{id}, v2/r/req/{id}, v2/r/req/j/{id}: client-side RPC
	TopicClaim                              // v1/devices/me/claim
	TopicProvisionRequest                   // /provision/request
	TopicGatewayConnect                     // v1/gateway/connect
	TopicGatewayDisconnect                  // v1/gateway/disconnect
	TopicGatewayTelemetry                   // v1/gateway/telemetry
	TopicGatewayAttributes                  // v1/gateway/attributes
	TopicGatewayAttributesRequest           // v1/gateway/attributes/request
	TopicGatewayRPC                         // v1/gateway/rpc: the gateway answers an RPC for a device behind it
	TopicGatewayClaim                       // v1/gateway/claim
)

var topicKindNames = [...]string{
	"unknown", "telemetry", "attributes", "attributes-request", "rpc-response", "rpc-request",
	"claim", "provision-request", "gateway-connect", "gateway-disconnect", "gateway-telemetry",
	"gateway-attributes", "gateway-attributes-request", "gateway-rpc", "gateway-claim",
}

// String returns a short lower-case name, for logs and metrics labels.
func (k TopicKind) String() string {
	if int(k) < len(topicKindNames) {
		return topicKindNames[k]
	}
	return "TopicKind(" + strconv.Itoa(int(k)) + ")"
}

// IsGateway reports whether the topic is part of the gateway API, which
// only sessions of gateway devices may use.
func (k TopicKind) IsGateway() bool {
	return k >= TopicGatewayConnect && k <= TopicGatewayClaim
}

// Topic is a classified publish topic.
type Topic struct {
	Kind      TopicKind
	RequestID int64 // for the {id} topics; a Java int, so within the int32 range
	Short     bool  // v2 short form: replies go to the matching v2 topic
	JSON      bool  // the v2 ".../j" form (with Short): replies go to the ".../j" topic
}

// Topics the server publishes to devices.
const (
	TopicDeviceAttributes          = "v1/devices/me/attributes" // shared attribute pushes
	TopicProvisionResponse         = "/provision/response"
	TopicGatewayAttributesPush     = "v1/gateway/attributes"
	TopicGatewayAttributesResponse = "v1/gateway/attributes/response"
	TopicGatewayRPCDown            = "v1/gateway/rpc"
)

const (
	v1AttrRequest = "v1/devices/me/attributes/request/"
	v1AttrResp    = "v1/devices/me/attributes/response/"
	v1RPCRequest  = "v1/devices/me/rpc/request/"
	v1RPCResponse = "v1/devices/me/rpc/response/"
)

// prefixTopics are the {id} topics in the order ThingsBoard tests them
// (startsWith, so the /j and /p forms come before the plain short form).
var prefixTopics = [...]struct {
	prefix      string
	kind        TopicKind
	short, json bool
	proto       bool
}{
	{v1AttrRequest, TopicAttributesRequest, false, false, false},
	{v1RPCResponse, TopicRPCResponse, false, false, false},
	{v1RPCRequest, TopicRPCRequest, false, false, false},
	{"v2/r/res/j/", TopicRPCResponse, true, true, false},
	{"v2/r/res/p/", TopicRPCResponse, true, false, true},
	{"v2/r/res/", TopicRPCResponse, true, false, false},
	{"v2/r/req/j/", TopicRPCRequest, true, true, false},
	{"v2/r/req/p/", TopicRPCRequest, true, false, true},
	{"v2/r/req/", TopicRPCRequest, true, false, false},
	{"v2/a/req/j/", TopicAttributesRequest, true, true, false},
	{"v2/a/req/p/", TopicAttributesRequest, true, false, true},
	{"v2/a/req/", TopicAttributesRequest, true, false, false},
}

// ParseTopic classifies a publish topic. Protobuf topics (v2/t/p, v2/a/p,
// .../p/{id}) and an {id} that is not a decimal Java int return an error
// wrapping ErrInvalidPayload (ThingsBoard raises an adaptor error for a bad
// id; protobuf payloads are not supported here). Unknown topics return
// Topic{Kind: TopicUnknown} and nil: ThingsBoard answers them with PUBACK
// 0x90 (topic name invalid) and keeps the session. The firmware chunk
// topics (v2/fw/request/..., v2/sw/request/...) are unknown here, and so
// are custom topics set in a device profile.
func ParseTopic(topic string) (Topic, error) {
	switch topic {
	case "v1/devices/me/telemetry":
		return Topic{Kind: TopicTelemetry}, nil
	case "v2/t":
		return Topic{Kind: TopicTelemetry, Short: true}, nil
	case "v2/t/j":
		return Topic{Kind: TopicTelemetry, Short: true, JSON: true}, nil
	case TopicDeviceAttributes:
		return Topic{Kind: TopicAttributes}, nil
	case "v2/a":
		return Topic{Kind: TopicAttributes, Short: true}, nil
	case "v2/a/j":
		return Topic{Kind: TopicAttributes, Short: true, JSON: true}, nil
	case "v2/t/p", "v2/a/p":
		return Topic{}, protoTopic(topic)
	case "v1/devices/me/claim":
		return Topic{Kind: TopicClaim}, nil
	case "/provision/request":
		return Topic{Kind: TopicProvisionRequest}, nil
	case "v1/gateway/connect":
		return Topic{Kind: TopicGatewayConnect}, nil
	case "v1/gateway/disconnect":
		return Topic{Kind: TopicGatewayDisconnect}, nil
	case "v1/gateway/telemetry":
		return Topic{Kind: TopicGatewayTelemetry}, nil
	case "v1/gateway/attributes":
		return Topic{Kind: TopicGatewayAttributes}, nil
	case "v1/gateway/attributes/request":
		return Topic{Kind: TopicGatewayAttributesRequest}, nil
	case "v1/gateway/rpc":
		return Topic{Kind: TopicGatewayRPC}, nil
	case "v1/gateway/claim":
		return Topic{Kind: TopicGatewayClaim}, nil
	}
	for _, pt := range prefixTopics {
		if !strings.HasPrefix(topic, pt.prefix) {
			continue
		}
		if pt.proto {
			return Topic{}, protoTopic(topic)
		}
		id, err := requestID(topic[len(pt.prefix):])
		if err != nil {
			return Topic{}, &PayloadError{Offset: len(pt.prefix), Reason: "request id in topic " + strconv.Quote(topic) + ": " + err.Error()}
		}
		return Topic{Kind: pt.kind, RequestID: id, Short: pt.short, JSON: pt.json}, nil
	}
	return Topic{}, nil
}

func protoTopic(topic string) error {
	return invalid("protobuf topic %q is not supported", topic)
}

// requestID parses like Integer.parseInt: an optional sign and decimal
// digits within the int32 range.
func requestID(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return 0, err.(*strconv.NumError).Err
	}
	return n, nil
}

// ResponseTopic returns where the reply to a request topic goes, in the
// family the request used (TopicType in ThingsBoard):
//
//	attributes request → v1/devices/me/attributes/response/{id}, v2/a/res/{id} or v2/a/res/j/{id}
//	client RPC request → v1/devices/me/rpc/response/{id}, v2/r/res/{id} or v2/r/res/j/{id}
//
// Other kinds have no reply topic and return "".
func ResponseTopic(t Topic) string {
	var base string
	switch t.Kind {
	case TopicAttributesRequest:
		base = family(t, v1AttrResp, "v2/a/res/", "v2/a/res/j/")
	case TopicRPCRequest:
		base = family(t, v1RPCResponse, "v2/r/res/", "v2/r/res/j/")
	default:
		return ""
	}
	return base + strconv.FormatInt(t.RequestID, 10)
}

func family(t Topic, v1, v2, v2json string) string {
	switch {
	case !t.Short:
		return v1
	case t.JSON:
		return v2json
	}
	return v2
}

// RPCRequestTopic returns the topic of server-side RPC request id:
// v1/devices/me/rpc/request/{id}, or v2/r/req/{id} when short. A session
// subscribed to v2/r/req/j/+ gets DownlinkTopic("v2/r/req/j/+", id).
func RPCRequestTopic(id int64, short bool) string {
	if short {
		return "v2/r/req/" + strconv.FormatInt(id, 10)
	}
	return v1RPCRequest + strconv.FormatInt(id, 10)
}

// DownlinkTopic returns the topic of a server publish for a session
// subscribed with filter: the filter with its final "+" level replaced by
// id (RPC requests and responses, attribute responses), or the filter
// itself when it has no wildcard (attribute pushes to v1/devices/me/attributes,
// v2/a or v2/a/j).
func DownlinkTopic(filter string, id int64) string {
	if strings.HasSuffix(filter, "/+") {
		return filter[:len(filter)-1] + strconv.FormatInt(id, 10)
	}
	return filter
}

// SubscriptionKind is what a subscription receives.
type SubscriptionKind uint8

const (
	SubUnknown                   SubscriptionKind = iota // refused
	SubAttributes                                        // shared attribute pushes: v1/devices/me/attributes, v2/a, v2/a/j
	SubAttributesResponse                                // v1/devices/me/attributes/response/+, v2/a/res/+, v2/a/res/j/+
	SubRPCRequest                                        // server RPC: v1/devices/me/rpc/request/+, v2/r/req/+, v2/r/req/j/+
	SubRPCResponse                                       // client RPC answers: v1/devices/me/rpc/response/+, v2/r/res/+, v2/r/res/j/+
	SubGatewayAttributes                                 // v1/gateway/attributes
	SubGatewayRPC                                        // v1/gateway/rpc
	SubGatewayAttributesResponse                         // v1/gateway/attributes/response
	SubProvisionResponse                                 // /provision/response
	SubFirmware                                          // v2/fw/response/+/chunk/+, v2/fw/error, v2/sw/response/+/chunk/+, v2/sw/error
)

var subKindNames = [...]string{
	"unknown", "attributes", "attributes-response", "rpc-request", "rpc-response",
	"gateway-attributes", "gateway-rpc", "gateway-attributes-response", "provision-response", "firmware",
}

// String returns a short lower-case name.
func (k SubscriptionKind) String() string {
	if int(k) < len(subKindNames) {
		return subKindNames[k]
	}
	return "SubscriptionKind(" + strconv.Itoa(int(k)) + ")"
}

// IsGateway reports whether the subscription belongs to the gateway API.
func (k SubscriptionKind) IsGateway() bool {
	return k >= SubGatewayAttributes && k <= SubGatewayAttributesResponse
}

var subscriptions = map[string]SubscriptionKind{
	"v1/devices/me/attributes":            SubAttributes,
	"v2/a":                                SubAttributes,
	"v2/a/j":                              SubAttributes,
	"v1/devices/me/attributes/response/+": SubAttributesResponse,
	"v2/a/res/+":                          SubAttributesResponse,
	"v2/a/res/j/+":                        SubAttributesResponse,
	"v1/devices/me/rpc/request/+":         SubRPCRequest,
	"v2/r/req/+":                          SubRPCRequest,
	"v2/r/req/j/+":                        SubRPCRequest,
	"v1/devices/me/rpc/response/+":        SubRPCResponse,
	"v2/r/res/+":                          SubRPCResponse,
	"v2/r/res/j/+":                        SubRPCResponse,
	"v1/gateway/attributes":               SubGatewayAttributes,
	"v1/gateway/rpc":                      SubGatewayRPC,
	"v1/gateway/attributes/response":      SubGatewayAttributesResponse,
	"v2/fw/response/+/chunk/+":            SubFirmware,
	"v2/fw/error":                         SubFirmware,
	"v2/sw/response/+/chunk/+":            SubFirmware,
	"v2/sw/error":                         SubFirmware,
}

// CheckSubscription reports whether a session may subscribe to filter,
// which must be one of ThingsBoard's filters exactly (no other wildcard
// or shared-subscription form). Gateway filters are granted only to
// gateway devices. A provision-only session (username or client id
// "provision") may subscribe to /provision/response and nothing else, and
// other sessions may not subscribe to it. The protobuf filters (v2/a/p,
// .../p/+) are refused, since this package cannot encode protobuf.
func CheckSubscription(filter string, gateway, provisionSession bool) (SubscriptionKind, bool) {
	if provisionSession {
		if filter == TopicProvisionResponse {
			return SubProvisionResponse, true
		}
		return SubUnknown, false
	}
	k, ok := subscriptions[filter]
	if !ok || (k.IsGateway() && !gateway) {
		return SubUnknown, false
	}
	return k, true
}
