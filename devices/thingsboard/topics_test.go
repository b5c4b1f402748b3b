package thingsboard

import (
	"errors"
	"testing"
)

func TestParseTopic(t *testing.T) {
	tests := []struct {
		topic   string
		want    Topic
		wantErr bool
	}{
		{"v1/devices/me/telemetry", Topic{Kind: TopicTelemetry}, false},
		{"v2/t", Topic{Kind: TopicTelemetry, Short: true}, false},
		{"v2/t/j", Topic{Kind: TopicTelemetry, Short: true, JSON: true}, false},
		{"v2/t/p", Topic{}, true},
		{"v1/devices/me/attributes", Topic{Kind: TopicAttributes}, false},
		{"v2/a", Topic{Kind: TopicAttributes, Short: true}, false},
		{"v2/a/j", Topic{Kind: TopicAttributes, Short: true, JSON: true}, false},
		{"v2/a/p", Topic{}, true},
		{"v1/devices/me/attributes/request/17", Topic{Kind: TopicAttributesRequest, RequestID: 17}, false},
		{"v1/devices/me/attributes/request/+17", Topic{Kind: TopicAttributesRequest, RequestID: 17}, false},
		{"v1/devices/me/attributes/request/-3", Topic{Kind: TopicAttributesRequest, RequestID: -3}, false},
		{"v1/devices/me/attributes/request/2147483647", Topic{Kind: TopicAttributesRequest, RequestID: 2147483647}, false},
		{"v1/devices/me/attributes/request/2147483648", Topic{}, true},
		{"v1/devices/me/attributes/request/", Topic{}, true},
		{"v1/devices/me/attributes/request/1a", Topic{}, true},
		{"v1/devices/me/attributes/request/1/2", Topic{}, true},
		{"v2/a/req/5", Topic{Kind: TopicAttributesRequest, RequestID: 5, Short: true}, false},
		{"v2/a/req/j/5", Topic{Kind: TopicAttributesRequest, RequestID: 5, Short: true, JSON: true}, false},
		{"v2/a/req/p/5", Topic{}, true},
		{"v2/a/req/j", Topic{}, true}, // "j" is parsed as the id, as in ThingsBoard
		{"v1/devices/me/rpc/response/9", Topic{Kind: TopicRPCResponse, RequestID: 9}, false},
		{"v2/r/res/9", Topic{Kind: TopicRPCResponse, RequestID: 9, Short: true}, false},
		{"v2/r/res/j/9", Topic{Kind: TopicRPCResponse, RequestID: 9, Short: true, JSON: true}, false},
		{"v2/r/res/p/9", Topic{}, true},
		{"v1/devices/me/rpc/request/1", Topic{Kind: TopicRPCRequest, RequestID: 1}, false},
		{"v2/r/req/1", Topic{Kind: TopicRPCRequest, RequestID: 1, Short: true}, false},
		{"v2/r/req/j/1", Topic{Kind: TopicRPCRequest, RequestID: 1, Short: true, JSON: true}, false},
		{"v2/r/req/p/1", Topic{}, true},
		{"v1/devices/me/claim", Topic{Kind: TopicClaim}, false},
		{"/provision/request", Topic{Kind: TopicProvisionRequest}, false},
		{"/provision", Topic{}, false},
		{"v1/gateway/connect", Topic{Kind: TopicGatewayConnect}, false},
		{"v1/gateway/disconnect", Topic{Kind: TopicGatewayDisconnect}, false},
		{"v1/gateway/telemetry", Topic{Kind: TopicGatewayTelemetry}, false},
		{"v1/gateway/attributes", Topic{Kind: TopicGatewayAttributes}, false},
		{"v1/gateway/attributes/request", Topic{Kind: TopicGatewayAttributesRequest}, false},
		{"v1/gateway/rpc", Topic{Kind: TopicGatewayRPC}, false},
		{"v1/gateway/claim", Topic{Kind: TopicGatewayClaim}, false},
		{"v1/gateway/other", Topic{}, false},
		{"v1/devices/me/telemetry/", Topic{}, false},
		{"v2/fw/request/1/chunk/0", Topic{}, false},
		{"", Topic{}, false},
		{"sensors/+/temp", Topic{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.topic, func(t *testing.T) {
			got, err := ParseTopic(tt.topic)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidPayload) {
					t.Fatalf("got %+v, %v; want an ErrInvalidPayload error", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestTopicKind(t *testing.T) {
	for k := TopicUnknown; k <= TopicGatewayClaim; k++ {
		if k.String() == "" || k.String()[0] == 'T' {
			t.Errorf("kind %d has no name", k)
		}
		want := k >= TopicGatewayConnect
		if k.IsGateway() != want {
			t.Errorf("%v.IsGateway() = %v", k, !want)
		}
	}
	if got := TopicKind(200).String(); got != "TopicKind(200)" {
		t.Errorf("String of an unknown kind = %q", got)
	}
}

func TestResponseTopic(t *testing.T) {
	tests := []struct {
		topic, want string
	}{
		{"v1/devices/me/attributes/request/3", "v1/devices/me/attributes/response/3"},
		{"v2/a/req/3", "v2/a/res/3"},
		{"v2/a/req/j/3", "v2/a/res/j/3"},
		{"v1/devices/me/rpc/request/-4", "v1/devices/me/rpc/response/-4"},
		{"v2/r/req/4", "v2/r/res/4"},
		{"v2/r/req/j/4", "v2/r/res/j/4"},
		{"v1/devices/me/rpc/response/4", ""},
		{"v1/devices/me/telemetry", ""},
	}
	for _, tt := range tests {
		top, err := ParseTopic(tt.topic)
		if err != nil {
			t.Fatal(err)
		}
		if got := ResponseTopic(top); got != tt.want {
			t.Errorf("ResponseTopic(%s) = %q, want %q", tt.topic, got, tt.want)
		}
	}
}

func TestDownlinkTopics(t *testing.T) {
	tests := []struct{ got, want string }{
		{RPCRequestTopic(42, false), "v1/devices/me/rpc/request/42"},
		{RPCRequestTopic(42, true), "v2/r/req/42"},
		{DownlinkTopic("v2/r/req/j/+", 7), "v2/r/req/j/7"},
		{DownlinkTopic("v1/devices/me/attributes/response/+", 8), "v1/devices/me/attributes/response/8"},
		{DownlinkTopic("v2/a/j", 9), "v2/a/j"},
		{DownlinkTopic(TopicDeviceAttributes, 9), "v1/devices/me/attributes"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestCheckSubscription(t *testing.T) {
	tests := []struct {
		filter             string
		gateway, provision bool
		want               SubscriptionKind
		ok                 bool
	}{
		{"v1/devices/me/attributes", false, false, SubAttributes, true},
		{"v2/a", false, false, SubAttributes, true},
		{"v2/a/j", false, false, SubAttributes, true},
		{"v2/a/p", false, false, SubUnknown, false},
		{"v1/devices/me/attributes/response/+", false, false, SubAttributesResponse, true},
		{"v2/a/res/+", false, false, SubAttributesResponse, true},
		{"v2/a/res/j/+", false, false, SubAttributesResponse, true},
		{"v2/a/res/p/+", false, false, SubUnknown, false},
		{"v1/devices/me/rpc/request/+", false, false, SubRPCRequest, true},
		{"v2/r/req/+", false, false, SubRPCRequest, true},
		{"v2/r/req/j/+", false, false, SubRPCRequest, true},
		{"v1/devices/me/rpc/response/+", false, false, SubRPCResponse, true},
		{"v2/r/res/+", false, false, SubRPCResponse, true},
		{"v2/r/res/j/+", false, false, SubRPCResponse, true},
		{"v2/fw/response/+/chunk/+", false, false, SubFirmware, true},
		{"v2/fw/error", false, false, SubFirmware, true},
		{"v2/sw/response/+/chunk/+", false, false, SubFirmware, true},
		{"v2/sw/error", false, false, SubFirmware, true},
		{"v1/gateway/attributes", false, false, SubUnknown, false},
		{"v1/gateway/attributes", true, false, SubGatewayAttributes, true},
		{"v1/gateway/rpc", true, false, SubGatewayRPC, true},
		{"v1/gateway/rpc", false, false, SubUnknown, false},
		{"v1/gateway/attributes/response", true, false, SubGatewayAttributesResponse, true},
		{"v1/devices/me/attributes", true, false, SubAttributes, true}, // a gateway is a device too
		{"/provision/response", false, true, SubProvisionResponse, true},
		{"/provision/response", false, false, SubUnknown, false},
		{"v1/devices/me/attributes", false, true, SubUnknown, false},
		{"v1/devices/me/rpc/request/#", false, false, SubUnknown, false},
		{"v1/devices/me/#", false, false, SubUnknown, false},
		{"#", true, false, SubUnknown, false},
		{"$share/g/v1/devices/me/attributes", false, false, SubUnknown, false},
	}
	for _, tt := range tests {
		got, ok := CheckSubscription(tt.filter, tt.gateway, tt.provision)
		if got != tt.want || ok != tt.ok {
			t.Errorf("CheckSubscription(%q, gateway=%v, provision=%v) = %v, %v; want %v, %v",
				tt.filter, tt.gateway, tt.provision, got, ok, tt.want, tt.ok)
		}
	}
	for k := SubUnknown; k <= SubFirmware; k++ {
		if k.String() == "" || k.String()[0] == 'S' {
			t.Errorf("subscription kind %d has no name", k)
		}
	}
}
