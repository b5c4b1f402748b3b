package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// ThingsBoard device provisioning over MQTT: a session that logs in with
// user name "provision" may only publish the request and subscribe the
// response topic.
const (
	provisionUsername      = "provision"
	topicProvisionRequest  = "/provision/request"
	topicProvisionResponse = "/provision/response"
	provisionAttempts      = 3
)

// provision asks the server for an access token, retrying transient
// failures up to provisionAttempts times.
func (d *device) provision(ctx context.Context) (string, error) {
	backoff := jitter(time.Second)
	for attempt := 1; ; attempt++ {
		token, err := d.provisionOnce(ctx)
		if err == nil {
			d.st.provisioned.Add(1)
			d.log.Debug("provisioned")
			return token, nil
		}
		if !provisionRetryable(ctx, err) || attempt == provisionAttempts {
			return "", err
		}
		d.log.Warn("provisioning failed, will retry", "attempt", attempt, "err", err)
		if !sleepCtx(ctx, backoff) {
			return "", ctx.Err()
		}
		backoff *= 2
	}
}

// provisionRetryable decides whether a failed provisioning is worth
// another attempt.
func provisionRetryable(ctx context.Context, err error) bool {
	var pe *ProvisionError
	switch {
	case ctx.Err() != nil:
		// The run is over.
		return false
	case errors.As(err, &pe):
		// The server answered with a failure, or nonsense: asking again
		// gets the same answer. Only a missing answer may have been lost
		// with a dropped connection.
		return pe.Status == statusTimeout
	case errors.Is(err, ErrRefused):
		// The provisioning login itself was refused.
		return false
	default:
		// Subscribe or publish failed with the connection: try again.
		return true
	}
}

// Statuses of a ProvisionError that the simulator, not the server, chose.
const (
	statusTimeout     = "TIMEOUT"     // no answer within ackTimeout
	statusInvalid     = "INVALID"     // the answer could not be understood
	statusUnsupported = "UNSUPPORTED" // credentials other than an access token
)

// provisionOnce runs one provisioning session.
func (d *device) provisionOnce(ctx context.Context) (string, error) {
	client, err := d.connect(ctx, d.options(provisionUsername), nil)
	if err != nil {
		return "", err
	}
	defer stopClient(client, d.log)

	answers := make(chan []byte, 1)
	sub := client.Subscribe(topicProvisionResponse, 1, func(_ mqtt.Client, m mqtt.Message) {
		select {
		case answers <- bytes.Clone(m.Payload()):
		default: // only the first answer counts
		}
	})
	if err := waitToken(ctx, sub, ackTimeout); err != nil {
		return "", fmt.Errorf("sim: device %d: provisioning: subscribe %s: %w", d.idx, topicProvisionResponse, err)
	}
	request, err := json.Marshal(struct {
		DeviceName string `json:"deviceName"`
		Key        string `json:"provisionDeviceKey"`
		Secret     string `json:"provisionDeviceSecret"`
	}{d.name, d.cfg.ProvisionKey, d.cfg.ProvisionSecret})
	if err != nil { // three strings: cannot happen
		return "", fmt.Errorf("sim: device %d: provisioning: encode request: %w", d.idx, err)
	}
	pub := client.Publish(topicProvisionRequest, 1, false, request)
	if err := waitToken(ctx, pub, ackTimeout); err != nil {
		return "", fmt.Errorf("sim: device %d: provisioning: publish %s: %w", d.idx, topicProvisionRequest, err)
	}
	t := time.NewTimer(ackTimeout)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case <-t.C:
		return "", &ProvisionError{Device: d.idx, Status: statusTimeout,
			Message: fmt.Sprintf("no answer on %s within %v", topicProvisionResponse, ackTimeout)}
	case answer := <-answers:
		return parseProvisionResponse(d.idx, answer)
	}
}

// parseProvisionResponse extracts the access token from a ThingsBoard
// provisioning answer:
//
//	{"credentialsType":"ACCESS_TOKEN","credentialsValue":"<token>","status":"SUCCESS"}
//	{"errorMsg":"Provision data was not found!","status":"NOT_FOUND"}
func parseProvisionResponse(device int, answer []byte) (string, error) {
	var r struct {
		Status           string          `json:"status"`
		ErrorMsg         string          `json:"errorMsg"`
		CredentialsType  string          `json:"credentialsType"`
		CredentialsValue json.RawMessage `json:"credentialsValue"`
	}
	if err := json.Unmarshal(answer, &r); err != nil {
		return "", &ProvisionError{Device: device, Status: statusInvalid, Message: fmt.Sprintf("answer is not JSON: %v", err)}
	}
	switch {
	case r.Status == "":
		return "", &ProvisionError{Device: device, Status: statusInvalid, Message: "answer has no status"}
	case r.Status != "SUCCESS":
		msg := r.ErrorMsg
		if msg == "" {
			msg = "no errorMsg given"
		}
		return "", &ProvisionError{Device: device, Status: r.Status, Message: msg}
	case r.CredentialsType != "ACCESS_TOKEN":
		return "", &ProvisionError{Device: device, Status: statusUnsupported,
			Message: fmt.Sprintf("credentialsType %q: the simulator logs in with access tokens only", r.CredentialsType)}
	}
	var token string
	if err := json.Unmarshal(r.CredentialsValue, &token); err != nil || token == "" {
		return "", &ProvisionError{Device: device, Status: statusInvalid, Message: "credentialsValue is not a non-empty string"}
	}
	return token, nil
}
