package mqtt

import (
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Reason codes: which ones Ferry sends, and where MQTT 5 allows them.
//
// Every code a hook or the acker puts into a packet comes from one of the
// tables below, so TestReasonCodesLegal can hold each against the packet
// types the MQTT 5 specification allows it on (OASIS MQTT Version 5.0,
// section 2.4, table 2-6). mochi's own answers (to malformed packets, for
// instance) are checked when they are encoded: an illegal code is replaced
// by Unspecified error (0x80) where that is allowed, and counted.

// Reasons a publish or a connection is refused: the label of
// ferry_mqtt_rejected_total.
const (
	reasonInvalidPayload = "invalid_payload"
	reasonOversize       = "oversize"
	reasonUnknownTopic   = "unknown_topic"
	reasonNotGateway     = "not_gateway"
	reasonNotAllowed     = "topic_not_allowed"
	reasonUnsupported    = "unsupported_rpc"
	reasonForeignDevice  = "foreign_device" // a gateway named a device it does not own
	reasonPacketTooLarge = "packet_too_large"
	reasonQoS2           = "qos2_not_supported"
	reasonStorage        = "storage"
	reasonLogFull        = "log_full"
)

// pubackCodes is the MQTT 5 PUBACK reason code for each refusal.
var pubackCodes = map[string]packets.Code{
	reasonInvalidPayload: packets.ErrPayloadFormatInvalid, // 0x99, as ThingsBoard answers
	reasonOversize:       packets.ErrQuotaExceeded,        // 0x97: a payload over mqtt.max_payload
	reasonUnknownTopic:   packets.ErrTopicNameInvalid,     // 0x90, as ThingsBoard answers
	reasonNotAllowed:     packets.ErrTopicNameInvalid,     // 0x90: provisioning session off its topic
	reasonNotGateway:     packets.ErrNotAuthorized,        // 0x87
	reasonForeignDevice:  packets.ErrNotAuthorized,        // 0x87
	reasonStorage:        packets.ErrUnspecifiedError,     // 0x80: the log or registry failed
	reasonLogFull:        packets.ErrQuotaExceeded,        // 0x97: a reject_new topic is full
}

// connackCodes is the MQTT 5 CONNACK reason code for each refusal (MQTT
// 3.x gets v3Connack of it).
var connackCodes = map[string]packets.Code{
	"auth_bad_credentials":  packets.ErrBadUsernameOrPassword,    // 0x86
	"auth_client_id":        packets.ErrClientIdentifierNotValid, // 0x85
	"auth_not_authorized":   packets.ErrNotAuthorized,            // 0x87
	"provisioning_disabled": packets.ErrNotAuthorized,            // 0x87
	"anonymous_device":      packets.ErrServerUnavailable,        // 0x88
	"shutting_down":         packets.ErrServerUnavailable,        // 0x88
	"disk_full":             packets.ErrServerUnavailable,        // 0x88: the log cannot store (MQTT 3.x: 3)
	"max_connections":       packets.ErrServerBusy,               // 0x89
}

// disconnectCodes is the MQTT 5 DISCONNECT reason code for each way Ferry
// closes an MQTT 5 connection.
var disconnectCodes = map[string]packets.Code{
	reasonNotAllowed:     packets.ErrTopicNameInvalid,   // 0x90: provisioning session off its topic
	reasonPacketTooLarge: packets.ErrPacketTooLarge,     // 0x95
	reasonQoS2:           packets.ErrQosNotSupported,    // 0x9B: QoS 2 after CONNACK said Maximum QoS 1
	"provisioned":        packets.CodeDisconnect,        // 0x00: the provisioning session's time is up
	"shutting_down":      packets.ErrServerShuttingDown, // 0x8B
}

// v3Connack maps an MQTT 5 CONNACK code to MQTT 3.x's return codes, as
// ThingsBoard's ReturnCodeResolver does (docs/thingsboard.md#connack-codes):
// bad user name or password and not authorized both become 0x05.
func v3Connack(c packets.Code) byte {
	switch c {
	case packets.ErrClientIdentifierNotValid:
		return packets.Err3ClientIdentifierNotValid.Code // 2
	case packets.ErrServerUnavailable, packets.ErrServerBusy:
		return packets.Err3ServerUnavailable.Code // 3
	default:
		return packets.Err3NotAuthorized.Code // 5
	}
}

// MQTT 5 packet types a reason code may be sent on (spec table 2-6).
const (
	onConnack = 1 << iota
	onPuback
	onPubrec
	onPubrel
	onPubcomp
	onSuback
	onUnsuback
	onDisconnect
	onAuth
)

var legalOn = map[byte]int{
	0x00: onConnack | onPuback | onPubrec | onPubrel | onPubcomp | onSuback | onUnsuback | onDisconnect | onAuth,
	0x01: onSuback, 0x02: onSuback,
	0x04: onDisconnect,
	0x10: onPuback | onPubrec,
	0x11: onUnsuback,
	0x18: onAuth, 0x19: onAuth,
	0x80: onConnack | onPuback | onPubrec | onSuback | onUnsuback | onDisconnect,
	0x81: onConnack | onDisconnect,
	0x82: onConnack | onDisconnect,
	0x83: onConnack | onPuback | onPubrec | onSuback | onUnsuback | onDisconnect,
	0x84: onConnack,
	0x85: onConnack,
	0x86: onConnack,
	0x87: onConnack | onPuback | onPubrec | onSuback | onUnsuback | onDisconnect,
	0x88: onConnack,
	0x89: onConnack | onDisconnect,
	0x8A: onConnack,
	0x8B: onDisconnect,
	0x8C: onConnack | onDisconnect,
	0x8D: onDisconnect,
	0x8E: onDisconnect,
	0x8F: onSuback | onUnsuback | onDisconnect,
	0x90: onConnack | onPuback | onPubrec | onDisconnect,
	0x91: onPuback | onPubrec | onSuback | onUnsuback,
	0x92: onPubrel | onPubcomp,
	0x93: onDisconnect,
	0x94: onDisconnect,
	0x95: onConnack | onDisconnect,
	0x96: onDisconnect,
	0x97: onConnack | onPuback | onPubrec | onSuback | onDisconnect,
	0x98: onDisconnect,
	0x99: onConnack | onPuback | onPubrec | onDisconnect,
	0x9A: onConnack | onDisconnect,
	0x9B: onConnack | onDisconnect,
	0x9C: onConnack | onDisconnect,
	0x9D: onConnack | onDisconnect,
	0x9E: onSuback | onDisconnect,
	0x9F: onConnack | onDisconnect,
	0xA0: onDisconnect,
	0xA1: onSuback | onDisconnect,
	0xA2: onSuback | onDisconnect,
}

// packetBit is the table's bit for an MQTT packet type (0: no reason code).
func packetBit(typ byte) int {
	switch typ {
	case packets.Connack:
		return onConnack
	case packets.Puback:
		return onPuback
	case packets.Pubrec:
		return onPubrec
	case packets.Pubrel:
		return onPubrel
	case packets.Pubcomp:
		return onPubcomp
	case packets.Suback:
		return onSuback
	case packets.Unsuback:
		return onUnsuback
	case packets.Disconnect:
		return onDisconnect
	case packets.Auth:
		return onAuth
	}
	return 0
}

// legalReason reports whether MQTT 5 allows code on packet type typ.
func legalReason(typ, code byte) bool {
	return legalOn[code]&packetBit(typ) != 0
}

// guardReason returns code when MQTT 5 allows it on typ, and otherwise
// Unspecified error (allowed wherever an error is), counting the mistake.
func (srv *Server) guardReason(typ, code byte) byte {
	if legalReason(typ, code) {
		return code
	}
	srv.metrics.IllegalReasons.Inc()
	srv.limiter.Warn(srv.logger, "illegal_reason", "mqtt: a reason code not allowed on its packet type was replaced by 0x80",
		"packet", packets.PacketNames[typ], "code", code)
	return packets.ErrUnspecifiedError.Code
}

// OnPacketEncode checks the reason codes of every MQTT 5 packet mochi
// writes, completes the CONNACK with the limits clients must respect, and
// keeps DISCONNECT (which MQTT 3.1.1 does not have for servers) from
// MQTT 3.x clients: their connection is just closed.
func (h *hook) OnPacketEncode(cl *mochi.Client, pk packets.Packet) packets.Packet {
	typ := pk.FixedHeader.Type
	if cl.Properties.ProtocolVersion < 5 {
		if typ == packets.Disconnect {
			h.srv.metrics.ClosedV3.Inc()
			pk.FixedHeader.Type = packets.Reserved // mochi writes nothing for it; the caller closes
		}
		return pk
	}
	if packetBit(typ) != 0 {
		pk.ReasonCode = h.srv.guardReason(typ, pk.ReasonCode)
		for i, c := range pk.ReasonCodes {
			pk.ReasonCodes[i] = h.srv.guardReason(typ, c)
		}
	}
	if typ == packets.Connack && pk.ReasonCode == packets.CodeSuccess.Code {
		caps := h.srv.mochi.Options.Capabilities
		pk.Properties.MaximumPacketSize = caps.MaximumPacketSize
		pk.Properties.TopicAliasMaximum = caps.TopicAliasMaximum
		pk.Properties.MaximumQos, pk.Properties.MaximumQosFlag = 1, true // ThingsBoard's maximum
		pk.Properties.SharedSubAvailable, pk.Properties.SharedSubAvailableFlag = 0, true
		pk.Properties.SubIDAvailable, pk.Properties.SubIDAvailableFlag = 0, true
	}
	return pk
}

// closeClient ends a connection for reason code c: MQTT 5 gets a
// DISCONNECT with c; MQTT 3.x, which has no server DISCONNECT, is closed
// (as ThingsBoard closes the channel), counted in ferry_mqtt_closed_v3_total.
func (srv *Server) closeClient(cl *mochi.Client, c packets.Code) {
	_ = srv.mochi.DisconnectClient(cl, c) // OnPacketEncode drops the packet for MQTT 3.x
}
