package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

// adminTokenFile is where a generated admin token is kept, in the data
// directory.
const adminTokenFile = "admin-token"

// resolveAdminToken returns the HTTP API's bearer token: http.admin_token when
// set; otherwise the one kept in <data_dir>/admin-token, generated (256
// random bits, hex) and written there with mode 0600 on first start. The
// token is never logged; its file's path is printed at start-up.
func resolveAdminToken(cfgToken, dataDir string) (token, file string, generated bool, err error) {
	if cfgToken != "" {
		return cfgToken, "", false, nil
	}
	file = filepath.Join(dataDir, adminTokenFile)
	raw, err := os.ReadFile(file)
	switch {
	case err == nil:
		token = strings.TrimSpace(string(raw))
		if token == "" {
			return "", file, false, fmt.Errorf("http.admin_token: %s is empty: delete it to have a new token generated", file)
		}
		if fi, err := os.Stat(file); err == nil && fi.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(file, 0o600); err != nil {
				return "", file, false, fmt.Errorf("http.admin_token: %s is readable by others and cannot be made private: %w", file, err)
			}
		}
		return token, file, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", file, false, fmt.Errorf("http.admin_token: read %s: %w", file, err)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", file, false, fmt.Errorf("http.admin_token: generate: %w", err)
	}
	token = hex.EncodeToString(b)
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return "", file, false, fmt.Errorf("http.admin_token: %w", err)
	}
	if err := vfs.WriteFileAtomicMode(vfs.OS, file, []byte(token+"\n"), 0o600); err != nil {
		return "", file, false, fmt.Errorf("http.admin_token: write %s: %w", file, err)
	}
	return token, file, true, nil
}

// warnExposed warns, once at start, about every listener that anyone on
// the network can use without a credential.
func (d *Daemon) warnExposed() {
	var kafkaAddr net.Addr
	if d.kafka != nil {
		kafkaAddr = d.kafka.Addr()
	}
	for _, w := range exposed(d.cfg, d.mqttAddrs(), kafkaAddr, d.httpLn.Addr()) {
		d.logger.Warn(w.msg, "addr", w.addr.String())
	}
}

type exposure struct {
	msg  string
	addr net.Addr
}

// exposed lists the bound listeners reachable beyond loopback that need no
// credential under cfg (kafka nil: off).
func exposed(cfg *Config, mqttAddrs []net.Addr, kafka, httpAddr net.Addr) []exposure {
	var out []exposure
	if cfg.MQTT.AllowAnonymous {
		for _, a := range mqttAddrs {
			if !isLoopback(a) {
				out = append(out, exposure{"mqtt: the listener accepts clients without credentials from the network (mqtt.allow_anonymous): anyone who can connect becomes a device and can publish; turn it off or bind the listener to 127.0.0.1", a})
			}
		}
	}
	if cfg.HTTP.AllowAnonymousReads && !isLoopback(httpAddr) {
		out = append(out, exposure{"http: topics and their records can be read from the network without a token (http.allow_anonymous_reads): anyone who can connect reads every device's data; turn it off or bind http.listen to 127.0.0.1", httpAddr})
	}
	if kafka != nil && !isLoopback(kafka) && len(cfg.Kafka.SASLUsers) == 0 {
		out = append(out, exposure{"kafka: the listener is reachable from the network without authentication: anyone who can connect can read every topic and send device commands; set kafka.sasl_users (and kafka.tls_cert) or bind kafka.listen to 127.0.0.1", kafka})
	}
	return out
}

// mqttAddrs lists the bound MQTT listeners.
func (d *Daemon) mqttAddrs() []net.Addr {
	out := []net.Addr{d.mqtt.Addr()}
	if a := d.mqtt.TLSAddr(); a != nil {
		out = append(out, a)
	}
	if a := d.mqtt.WSAddr(); a != nil {
		out = append(out, a)
	}
	return out
}

// raiseFileLimit raises the soft limit on open files to the hard limit
// (Go's runtime does the same on Linux since Go 1.19; doing it here makes
// it explicit and lets the daemon read the result) and returns the limit
// in force.
func raiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("get RLIMIT_NOFILE: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return lim.Cur, fmt.Errorf("raise RLIMIT_NOFILE to %d: %w", lim.Max, err)
		}
	}
	return uint64(lim.Cur), nil
}

// fileBudget is how many descriptors the configured caps allow the
// daemon to hold at most: every socket the listeners may hold, one file
// per partition (its active segment) and the sealed segment files kept
// open, and a reserve for the state store, index lookups, the bridges' and
// clients' own sockets and the runtime.
func (c *Config) fileBudget() int {
	const reserve = 256
	mqttListeners := 1
	if c.MQTT.TLSListen != "" {
		mqttListeners++
	}
	if c.MQTT.WSListen != "" {
		mqttListeners++
	}
	n := reserve + c.HTTP.MaxConnections + mqttListeners*c.MQTT.MaxPending
	n += max(c.MQTT.MaxConnections, 0)
	if c.Kafka.Listen != "" {
		n += c.Kafka.MaxConnections
	}
	n += max(c.Log.MaxPartitions, c.Log.Partitions())
	n += c.Log.MaxOpenSegments // 0 (unbounded) is not counted: the warning cannot see it
	return n
}

// banner tells the person who just started Ferry where everything is and
// how to connect a first device.
func (d *Daemon) banner(w io.Writer) {
	fmt.Fprintf(w, "ferry: node %q, data in %s\n", d.cfg.NodeID, d.dataDir)
	fmt.Fprintln(w, "ferry: listening on")
	line := func(what string, a net.Addr, suffix string) {
		fmt.Fprintf(w, "  %-15s %s%s\n", what, a, suffix)
	}
	line("MQTT", d.mqtt.Addr(), "")
	if a := d.mqtt.TLSAddr(); a != nil {
		line("MQTT over TLS", a, "")
	}
	if a := d.mqtt.WSAddr(); a != nil {
		line("MQTT WebSocket", a, " (ws://…/mqtt)")
	}
	if a := d.KafkaAddr(); a != nil {
		line("Kafka", a, "")
	}
	line("HTTP API", d.HTTPAddr(), " (/healthz, /metrics, /api/v1/…, described at /api/v1/openapi.json)")
	auth := `-H "Authorization: Bearer <http.admin_token>"`
	if d.tokenAt != "" {
		how := "kept from an earlier start"
		if d.newToken {
			how = "generated now"
		}
		fmt.Fprintf(w, "ferry: the HTTP API token is in %s (%s)\n", d.tokenAt, how)
		auth = fmt.Sprintf(`-H "Authorization: Bearer $(cat %s)"`, d.tokenAt)
	}
	fmt.Fprintln(w, "ferry: add a device (the answer holds its access token), then publish with that token:")
	fmt.Fprintf(w, "  curl %s -d '{\"name\":\"my-sensor\"}' http://%s/api/v1/devices\n", auth, dialable(d.HTTPAddr()))
	host, port, _ := net.SplitHostPort(dialable(d.mqtt.Addr()))
	fmt.Fprintf(w, "  mosquitto_pub -h %s -p %s -u <token> -t v1/devices/me/telemetry -m '{\"temperature\":21.5}'\n", host, port)
}

// dialable is addr as a client on this machine would dial it: a wildcard
// host becomes localhost.
func dialable(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}
