package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/broker/testkit"
)

// TestMQTTJSReasonCodes drives Ferry with mqtt.js, the client that found
// an illegal PUBACK reason code: a payload over mqtt.max_payload must end
// with a PUBACK code MQTT 5 allows (0x97, Quota exceeded) that mqtt.js
// reports as the publish's error, not "Invalid puback reason code", and
// the CONNACK must tell the client the broker's limits.
func TestMQTTJSReasonCodes(t *testing.T) {
	node := testkit.NeedTool(t, "node", "nodejs")
	dir, err := filepath.Abs("testdata/mqttjs")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "mqtt")); err != nil {
		testkit.Missing(t, "mqtt.js not installed in %s: scripts/test.sh runs npm ci there", dir)
	}
	d := startDaemon(t, "", "")
	run := func(size int) map[string]any {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, node, filepath.Join(dir, "publish.js"), d.broker(), "TOKEN1", strconv.Itoa(size)).Output()
		if err != nil {
			t.Fatalf("mqtt.js: %v\n%s", err, out)
		}
		var res map[string]any
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("mqtt.js printed %q: %v", out, err)
		}
		return res
	}
	ok := run(100)
	if ok["code"] != float64(0) || ok["error"] != nil {
		t.Fatalf("a small publish: %v", ok)
	}
	connack, _ := ok["connack"].(map[string]any)
	if connack["maximumPacketSize"] != float64(65536+64<<10) || connack["topicAliasMaximum"] != float64(16) || connack["maximumQoS"] != float64(1) {
		t.Fatalf("CONNACK properties %v", connack)
	}
	big := run(70000)
	if big["code"] != float64(0x97) {
		t.Fatalf("a payload over mqtt.max_payload: %v, want the publish to fail with reason code 0x97", big)
	}
	if n := d.metric(`ferry_mqtt_rejected_total{reason="oversize"}`); n != 1 {
		t.Fatalf("oversize refusals counted %v, want 1", n)
	}
}
