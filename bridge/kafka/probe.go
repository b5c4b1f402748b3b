package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/bridge"
)

// upstreamInfo is what a probe learnt about the cluster.
type upstreamInfo struct {
	missingIdempotence string // the API idempotent producing needs that a broker lacks; "" if none
	missingTxn         string // the API transactions need that a broker lacks; "" if none
	maxMessage         int    // the smallest max.message.bytes of the upstream topics; 0: unknown
}

// probe asks every broker for its API versions (idempotence needs
// InitProducerId; transactions also AddPartitionsToTxn and EndTxn) and the
// upstream for the largest batch its topics take. A failed config lookup
// (not authorized, not supported) leaves maxMessage unknown: the default
// batch limit then applies, and a refusal is handled as a rejection.
func (t *Target) probe(ctx context.Context, cl *kgo.Client) (upstreamInfo, error) {
	var up upstreamInfo
	adm := kadm.NewClient(cl)
	vs, err := adm.ApiVersions(ctx)
	if err != nil {
		return up, err
	}
	var nodes []int32
	for _, v := range vs.Sorted() {
		if v.Err != nil {
			return up, fmt.Errorf("api versions of broker %d: %w", v.NodeID, v.Err)
		}
		nodes = append(nodes, v.NodeID)
		for _, k := range []kmsg.Key{kmsg.InitProducerID, kmsg.AddPartitionsToTxn, kmsg.EndTxn} {
			if _, ok := v.KeyMaxVersion(int16(k)); ok {
				continue
			}
			what := fmt.Sprintf("%s on broker %d", k.Name(), v.NodeID)
			if up.missingTxn == "" {
				up.missingTxn = what
			}
			if k == kmsg.InitProducerID && up.missingIdempotence == "" {
				up.missingIdempotence = what
			}
		}
	}
	up.maxMessage = t.maxMessageBytes(ctx, adm, nodes)
	return up, nil
}

// maxMessageBytes is the smallest max.message.bytes of the upstream
// topics; a topic that does not exist yet takes a broker's
// message.max.bytes. 0 when the upstream does not say.
func (t *Target) maxMessageBytes(ctx context.Context, adm *kadm.Client, nodes []int32) int {
	topics := make([]string, 0, len(t.cfg.Topics))
	for _, up := range t.cfg.Topics {
		if !slices.Contains(topics, up) {
			topics = append(topics, up)
		}
	}
	slices.Sort(topics)
	smallest := 0
	take := func(v *string) {
		if v == nil {
			return
		}
		if n, err := strconv.Atoi(*v); err == nil && n > 0 && (smallest == 0 || n < smallest) {
			smallest = n
		}
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, topics...)
	missing := false
	for _, rc := range rcs {
		if rc.Err != nil {
			missing = true
			continue
		}
		for _, c := range rc.Configs {
			if c.Key == "max.message.bytes" {
				take(c.Value)
			}
		}
	}
	if (err != nil || missing || len(rcs) < len(topics)) && len(nodes) > 0 {
		if bcs, err := adm.DescribeBrokerConfigs(ctx, nodes[0]); err == nil {
			for _, rc := range bcs {
				for _, c := range rc.Configs {
					if c.Key == "message.max.bytes" && rc.Err == nil {
						take(c.Value)
					}
				}
			}
		}
	}
	return smallest
}

// classify marks the errors that retrying cannot cure as
// bridge.ErrMisconfigured (the engine then retries at its maximum backoff
// only and logs the cause once); every other error is a link failure.
func (t *Target) classify(err error) error {
	if err == nil || errors.Is(err, bridge.ErrMisconfigured) {
		return err
	}
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		alert     tls.AlertError
		notTLS    tls.RecordHeaderError
	)
	var why string
	switch {
	case errors.Is(err, kerr.SaslAuthenticationFailed), errors.Is(err, kerr.UnsupportedSaslMechanism), errors.Is(err, kerr.IllegalSaslState):
		// Credentials or mechanism refused: the same ones will be refused again.
		mech := "?"
		if t.cfg.SASL != nil {
			mech = t.cfg.SASL.Name()
		}
		why = "SASL " + mech + " authentication refused (check bridges.kafka.sasl)"
	case errors.As(err, &unknownCA), errors.As(err, &hostname), errors.As(err, &invalid):
		// The broker's certificate is not trusted for this address: only
		// a new CA bundle or certificate helps.
		why = "the upstream's TLS certificate is not trusted (check bridges.kafka.tls.ca_file)"
	case errors.As(err, &alert) && badCertAlert(alert):
		// The broker refused our client certificate (or its absence).
		why = "the upstream refused our TLS client certificate (check bridges.kafka.tls.cert_file)"
	case errors.As(err, &notTLS):
		// A plaintext listener answered the TLS handshake.
		why = "the upstream does not speak TLS on this port (check bridges.kafka.tls.enabled)"
	case errors.Is(err, kerr.ClusterAuthorizationFailed), errors.Is(err, kerr.TransactionalIDAuthorizationFailed),
		errors.Is(err, kerr.TopicAuthorizationFailed):
		// ACLs deny what the bridge needs: an administrator must grant it.
		why = "the upstream denies this principal what the bridge needs (ACLs)"
	default:
		return err // a link failure: back off and retry
	}
	return fmt.Errorf("%w: %s: %w", bridge.ErrMisconfigured, why, err)
}

// badCertAlert reports TLS alerts about our certificate: bad_certificate,
// unsupported_certificate, certificate_revoked, certificate_expired,
// certificate_unknown, unknown_ca, access_denied, certificate_required.
func badCertAlert(a tls.AlertError) bool {
	switch a {
	case 42, 43, 44, 45, 46, 48, 49, 116:
		return true
	}
	return false
}
