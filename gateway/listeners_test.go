package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// selfSigned writes a throwaway certificate and key for 127.0.0.1.
func selfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ferry-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: nil,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}

// TestE2ETLSAndWebSocketListeners: devices publish through the TLS and
// WebSocket listeners, and the records land in the log.
func TestE2ETLSAndWebSocketListeners(t *testing.T) {
	cert, key := selfSigned(t)
	d := startDaemonEnv(t, "", "", []string{"FERRY_MQTT_TLS_LISTEN=127.0.0.1:0", "FERRY_MQTT_TLS_CERT=" + cert,
		"FERRY_MQTT_TLS_KEY=" + key, "FERRY_MQTT_WS_LISTEN=127.0.0.1:0"})
	tlsAddr, wsAddr := d.mqtt.TLSAddr().String(), d.mqtt.WSAddr().String()
	for _, broker := range []string{"ssl://" + tlsAddr, "ws://" + wsAddr + "/mqtt"} {
		opts := paho.NewClientOptions().AddBroker(broker).SetClientID("c-" + broker).SetUsername("TOKEN1").
			SetAutoReconnect(false).SetProtocolVersion(4).SetConnectTimeout(5 * time.Second).
			SetTLSConfig(&tls.Config{InsecureSkipVerify: true}) // the throwaway certificate
		c := paho.NewClient(opts)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("%s: connect: %v", broker, tok.Error())
		}
		publish(t, c, "v1/devices/me/telemetry", fmt.Sprintf(`{"via":%q}`, broker))
		c.Disconnect(100)
	}
	if n := len(d.records("telemetry")); n != 2 {
		t.Fatalf("%d records through TLS and WebSocket, want 2", n)
	}
}

// TestWebSocketPortBusy: a WebSocket port already in use stops start-up
// with an error naming it (mochi's own listener would only log it).
func TestWebSocketPortBusy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	file := filepath.Join(t.TempDir(), "ferry.yaml")
	os.WriteFile(file, []byte(fmt.Sprintf(baseConfig, t.TempDir())), 0o644)
	cfg, err := LoadConfig(file, []string{"FERRY_MQTT_WS_LISTEN=" + ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	d, err := Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		d.Close()
		t.Fatal("started with the WebSocket port taken")
	}
	if !strings.Contains(err.Error(), "websocket "+ln.Addr().String()) {
		t.Fatalf("error does not name the listener: %v", err)
	}
}
