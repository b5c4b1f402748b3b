package kafka

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSettingsTLSLoaded: the TLS settings Validate checks are what the
// target dials with (one loader for both): the CA pool, the client
// certificate and insecure_skip_verify; TLS off gives no config, and a
// file gone since validation fails Configs under its key.
func TestSettingsTLSLoaded(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.server.Certificate[0]})
	kb, err := x509.MarshalECPrivateKey(ca.server.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	s := Settings{TLS: TLSSettings{Enabled: true, CAFile: certFile, CertFile: certFile, KeyFile: keyFile, InsecureSkipVerify: true}}
	tc, _, err := s.Configs("node")
	if err != nil {
		t.Fatal(err)
	}
	if tc.TLS == nil || tc.TLS.RootCAs == nil || len(tc.TLS.Certificates) != 1 || !tc.TLS.InsecureSkipVerify || tc.TLS.MinVersion != tls.VersionTLS12 {
		t.Fatalf("loaded TLS config %+v", tc.TLS)
	}
	want := x509.NewCertPool()
	want.AppendCertsFromPEM(certPEM)
	if !tc.TLS.RootCAs.Equal(want) {
		t.Fatal("the CA pool is not ca_file's certificate")
	}
	if tc, _, err := (&Settings{}).Configs("node"); tc.TLS != nil || err != nil {
		t.Fatalf("TLS off: %+v, %v", tc.TLS, err)
	}
	if err := os.Remove(certFile); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.Configs("node")
	if err == nil || !strings.HasPrefix(err.Error(), "tls.ca_file: open "+certFile) ||
		!strings.Contains(err.Error(), "tls.cert_file: with tls.key_file: open "+certFile) {
		t.Fatalf("Configs with the files gone: %v", err)
	}
}
