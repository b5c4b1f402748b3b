// publish.js URL TOKEN BYTES: connects as an MQTT 5 device with mqtt.js,
// publishes a QoS 1 telemetry message whose payload is BYTES long, and
// prints one JSON line: the CONNACK's properties and how the publish ended
// (the PUBACK's reason code, or mqtt.js's error).
const mqtt = require("mqtt");
const [url, token, bytes] = process.argv.slice(2);
const client = mqtt.connect(url, { protocolVersion: 5, username: token, clientId: "mqttjs-" + process.pid, reconnectPeriod: 0, connectTimeout: 5000 });
const out = {};
const done = () => { console.log(JSON.stringify(out)); client.end(true); process.exit(0); };
setTimeout(() => { out.error = "timeout"; done(); }, 10000);
client.on("error", (err) => { out.error = String(err && err.message || err); done(); });
client.on("connect", (connack) => {
  out.connack = connack.properties || {};
  const payload = JSON.stringify({ big: "x".repeat(Math.max(0, Number(bytes) - 10)) });
  client.publish("v1/devices/me/telemetry", payload, { qos: 1 }, (err, packet) => {
    if (err) {
      out.error = String(err.message || err);
      out.code = err.code;
    } else {
      out.code = (packet && packet.reasonCode) || 0;
    }
    done();
  });
});
