package kafka

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/ferry-iot/ferry/bridge"
	"github.com/ferry-iot/ferry/broker/testkit"
)

// testCA is a self-signed CA and a server certificate it signed for
// 127.0.0.1, made for one test.
type testCA struct {
	pool   *x509.CertPool
	server tls.Certificate
}

func newTestCA(t *testing.T) testCA {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ferry test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kfake"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return testCA{pool: pool, server: tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}}
}

// flowThrough drains 3000 records exactly once to c with tg and checks
// the upstream, read with the same client options.
func flowThrough(t *testing.T, c *kfake.Cluster, tg *Target, readOpts ...kgo.Opt) {
	t.Helper()
	e := newEdge(t, "")
	defer e.close()
	e.produce("telemetry", 0, 3000, 50)
	en := engineFor(t, e, tg, bridge.Config{MaxBatchBytes: 64 << 10})
	en.Start()
	waitLag(t, en, 30*time.Second)
	st := en.Status()
	if err := en.Close(); err != nil {
		t.Fatal(err)
	}
	if st.RecordsSent != 3000 || st.Reconnects != 0 {
		t.Fatalf("status: %+v", st)
	}
	u := readUpstream(t, c.ListenAddrs(), "site1.telemetry", 3000, 20*time.Second, readOpts...)
	u.check(t, e, "telemetry", false)
	if len(u.recs) != 3000 {
		t.Fatalf("upstream holds %d records, want 3000", len(u.recs))
	}
}

// TestTLS: the bridge reaches a TLS-only upstream whose certificate a
// test CA signed, exactly once. Without that CA the certificate is not
// trusted, and a TLS client whose peer answers in plaintext (a plain HTTP
// service on that port) meets no TLS at all: both are misconfigurations
// (retried at max backoff), stated in Status. A plaintext client against
// the TLS listener sees the connection closed (kgo suggests TLS is
// missing): a link failure, since a broker restarting does the same.
func TestTLS(t *testing.T) {
	ca := newTestCA(t)
	c := cluster(t, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{ca.server}, MinVersion: tls.VersionTLS12}))
	client := &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS12}
	flowThrough(t, c, targetWith(t, Config{Brokers: c.ListenAddrs(), TLS: client}), kgo.DialTLSConfig(client.Clone()))

	plainHTTP := httptest.NewServer(http.NotFoundHandler())
	defer plainHTTP.Close()
	for _, tc := range []struct {
		name          string
		brokers       []string
		tls           *tls.Config
		want          string // in Status.LastError
		misconfigured bool
	}{
		{"untrusted", c.ListenAddrs(), &tls.Config{MinVersion: tls.VersionTLS12}, "the upstream's TLS certificate is not trusted", true}, // system roots: the test CA is not among them
		{"plaintext client", c.ListenAddrs(), nil, "is TLS missing?", false},
		{"plaintext peer", []string{plainHTTP.Listener.Addr().String()}, client, "the upstream does not speak TLS on this port", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, m := failingStatus(t, targetWith(t, Config{Brokers: tc.brokers, TLS: tc.tls}))
			mis, conn := failures(m, "misconfigured"), failures(m, "connect")
			if !strings.Contains(st.LastError, tc.want) || (tc.misconfigured && (mis < 3 || conn != 0)) || (!tc.misconfigured && (mis != 0 || conn < 3)) {
				t.Fatalf("last error %q (want %q); failures: misconfigured %v, connect %v (misconfiguration expected: %v)",
					st.LastError, tc.want, mis, conn, tc.misconfigured)
			}
			t.Logf("%s: %s", tc.name, st.LastError)
		})
	}
}

// failingStatus runs an engine with tg until it failed to connect three
// times and returns its status then.
func failingStatus(t *testing.T, tg *Target) (bridge.Status, *bridge.Metrics) {
	t.Helper()
	e := newEdge(t, "")
	defer e.close()
	e.produce("telemetry", 0, 10, 5)
	m := bridge.NewMetrics(prometheus.NewRegistry())
	en := engineFor(t, e, tg, bridge.Config{StallTimeout: 2 * time.Second, Backoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Metrics: m})
	en.Start()
	testkit.Eventually(t, 30*time.Second, func() bool { return en.Status().Reconnects >= 3 }, "three failed connects")
	st := en.Status()
	if err := en.Close(); err != nil {
		t.Fatal(err)
	}
	if st.RecordsSent != 0 || st.LastError == "" || (st.State != bridge.StateBackingOff && st.State != bridge.StateConnecting) {
		t.Fatalf("status of a bridge that cannot connect: %+v", st)
	}
	return st, m
}

// TestSASL: PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 towards an upstream
// that requires SASL, exactly once through each.
func TestSASL(t *testing.T) {
	for _, mech := range []struct {
		name string
		m    sasl.Mechanism
	}{
		{"PLAIN", plain.Auth{User: "ferry", Pass: "s3cret"}.AsMechanism()},
		{"SCRAM-SHA-256", scram.Auth{User: "ferry", Pass: "s3cret"}.AsSha256Mechanism()},
		{"SCRAM-SHA-512", scram.Auth{User: "ferry", Pass: "s3cret"}.AsSha512Mechanism()},
	} {
		t.Run(mech.name, func(t *testing.T) {
			c := cluster(t, kfake.EnableSASL(), kfake.Superuser(mech.name, "ferry", "s3cret"))
			var auths atomic.Int64
			c.ControlKey(int16(kmsg.SASLAuthenticate), func(kmsg.Request) (kmsg.Response, error, bool) {
				auths.Add(1)
				return nil, nil, false
			})
			flowThrough(t, c, targetWith(t, Config{Brokers: c.ListenAddrs(), SASL: mech.m}), kgo.SASL(mech.m))
			if auths.Load() == 0 {
				t.Fatal("the upstream saw no SASL authentication")
			}
		})
	}
}

// TestSASLWrongPassword: refused credentials are a clear failure in
// Status (state backing_off, the mechanism and the upstream's refusal in
// last_error), counted as a misconfiguration, and no retry storm: each
// engine attempt costs the upstream a bounded number of authentications.
func TestSASLWrongPassword(t *testing.T) {
	for _, mech := range []struct {
		name   string
		m      sasl.Mechanism
		rounds int64 // SASLAuthenticate round trips per authentication
	}{
		{"PLAIN", plain.Auth{User: "ferry", Pass: "wrong"}.AsMechanism(), 1},
		{"SCRAM-SHA-512", scram.Auth{User: "ferry", Pass: "wrong"}.AsSha512Mechanism(), 2},
	} {
		t.Run(mech.name, func(t *testing.T) {
			c := cluster(t, kfake.EnableSASL(), kfake.Superuser(mech.name, "ferry", "s3cret"))
			var auths atomic.Int64
			c.ControlKey(int16(kmsg.SASLAuthenticate), func(kmsg.Request) (kmsg.Response, error, bool) {
				auths.Add(1)
				return nil, nil, false
			})
			st, m := failingStatus(t, targetWith(t, Config{Brokers: c.ListenAddrs(), SASL: mech.m}))
			if !strings.Contains(st.LastError, "SASL "+mech.name+" authentication refused") || !strings.Contains(st.LastError, "SASL_AUTHENTICATION_FAILED") {
				t.Fatalf("last error %q does not say the credentials were refused", st.LastError)
			}
			fails := failures(m, "misconfigured")
			if fails < 3 || failures(m, "connect") != 0 {
				t.Fatalf("misconfigured failures %v, connect failures %v", fails, failures(m, "connect"))
			}
			// Per engine attempt kgo tries the connection twice at most
			// (one retry on a closed connection); one more attempt may
			// have been under way at Close.
			if bound := mech.rounds * 2 * (int64(fails) + 1); auths.Load() > bound {
				t.Fatalf("%d SASLAuthenticate requests for %v failed connects (bound %d): a retry storm", auths.Load(), fails, bound)
			}
			t.Logf("%v failed connects, %d authentications; last error: %s", fails, auths.Load(), st.LastError)
		})
	}
}

// TestClassify: which errors need an operator.
func TestClassify(t *testing.T) {
	tg := targetWith(t, Config{Brokers: []string{"127.0.0.1:1"}, SASL: plain.Auth{User: "u", Pass: "p"}.AsMechanism()})
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("sasl: %w", kerr.SaslAuthenticationFailed), true},
		{fmt.Errorf("fence: %w", kerr.TransactionalIDAuthorizationFailed), true},
		{kerr.NotLeaderForPartition, false},
		{x509.UnknownAuthorityError{}, true},
		{tls.AlertError(42), true},
		{fmt.Errorf("dial: %w", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}), true},
		{tls.AlertError(80), false}, // internal_error: the upstream's problem, maybe passing
		{errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), false},
		{errLinkDown, false},
	} {
		got := errors.Is(tg.classify(tc.err), bridge.ErrMisconfigured)
		if got != tc.want {
			t.Errorf("classify(%v) misconfigured = %v, want %v", tc.err, got, tc.want)
		}
	}
}
