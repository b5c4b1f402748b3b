package mqtt

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"time"

	"github.com/ferry-iot/ferry/broker/registry"
	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// provisionLinger is how long a provisioning session stays open after the
// response, as ThingsBoard closes it 60 s after answering, and, without a
// request, after connecting.
const provisionLinger = 60 * time.Second

// handleProvision answers /provision/request on a provisioning session
// (docs/thingsboard.md#provisioning): the configured key and secret must match;
// the device is created with the credentials it asked for, or a generated
// access token.
func (srv *Server) handleProvision(s *session, pk *pub) {
	req, err := tb.ParseProvisionRequest(pk.payload)
	if err != nil {
		srv.reject(s, pk, reasonInvalidPayload, true, err.Error())
		return
	}
	resp := srv.provision(req)
	srv.reply(s, tb.TopicProvisionResponse, resp)
	s.enqueue(ackItem{packetID: pk.id, qos: pk.qos})
	s.startTimer(provisionLinger)
}

// provisioningEnabled: a provisioning key is configured. Without one,
// provisioning clients are refused at CONNECT.
func (srv *Server) provisioningEnabled() bool { return srv.cfg.Provisioning.Key != "" }

func (srv *Server) provision(req tb.ProvisionRequest) []byte {
	key, secret := srv.cfg.Provisioning.Key, srv.cfg.Provisioning.Secret
	if key == "" || subtle.ConstantTimeCompare([]byte(req.Key), []byte(key)) != 1 ||
		subtle.ConstantTimeCompare([]byte(req.Secret), []byte(secret)) != 1 {
		srv.metrics.Provisioned.WithLabelValues("not_found").Inc()
		return tb.EncodeProvisionFailure("NOT_FOUND", "Provision data was not found!")
	}
	name := req.DeviceName
	if name == "" {
		name = "device-" + randomHex(8)
	}
	fail := func(why string, err error) []byte {
		srv.metrics.Provisioned.WithLabelValues("failure").Inc()
		srv.logLimited(name, "provisioning", "provisioning failed", "why", why, "err", err)
		return tb.EncodeProvisionFailure("FAILURE", "Failed to provision device!")
	}
	dev := registry.Device{Name: name, Type: "default", Gateway: req.Gateway, Source: "provision"}
	var creds registry.Credentials
	ctype := req.CredentialsType
	switch ctype {
	case "", "ACCESS_TOKEN":
		ctype = "ACCESS_TOKEN"
		creds.Token = req.Token
		if creds.Token == "" {
			creds.Token = randomHex(10)
		}
	case "MQTT_BASIC":
		creds = registry.Credentials{ClientID: req.ClientID, Username: req.Username, Password: req.Password}
	default:
		return fail("unsupported credentials type "+ctype, nil)
	}
	if err := srv.reg.Create(dev, creds); err != nil { // Create, not Put: never replace an existing device
		why := "registry"
		switch {
		case errors.Is(err, registry.ErrExists):
			why = "device exists"
		case errors.Is(err, registry.ErrCredentialsTaken):
			why = "credentials taken"
		}
		return fail(why, err)
	}
	srv.metrics.Provisioned.WithLabelValues("success").Inc()
	srv.logger.Info("mqtt: device provisioned", "device", name, "credentials", ctype, "gateway", req.Gateway)
	return tb.EncodeProvisionSuccess(ctype, creds.Token, creds.ClientID, creds.Username, creds.Password)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
