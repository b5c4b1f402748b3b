package registry

import (
	"encoding/json"
	"testing"
)

// benchAttributes is a device's typical client attributes report, values
// as the ThingsBoard codec writes them (compact).
var benchAttributes = []Attribute{
	{Key: "firmware_version", Value: json.RawMessage(`"1.4.2-rc1"`)},
	{Key: "model", Value: json.RawMessage(`"TH-200"`)},
	{Key: "serial", Value: json.RawMessage(`"A1B2C3D4E5"`)},
	{Key: "battery", Value: json.RawMessage(`97`)},
	{Key: "rssi", Value: json.RawMessage(`-71.5`)},
	{Key: "enabled", Value: json.RawMessage(`true`)},
	{Key: "location", Value: json.RawMessage(`{"lat":52.5200,"lon":13.4050,"alt":34.0}`)},
	{Key: "sensors", Value: json.RawMessage(`["temperature","humidity","pressure"]`)},
}

// BenchmarkPrepareAttributes is the registry's validation and encoding of
// one attributes report, store keys included: what SetAttributesAsync
// does once per device publish, and a gateway publish once per named
// device (the check before storing and the store share it).
func BenchmarkPrepareAttributes(b *testing.B) {
	r, _ := openTest(b)
	for _, path := range []string{"device", "gateway"} {
		b.Run("path="+path, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				pa, err := r.PrepareAttributes(benchAttributes)
				if err != nil {
					b.Fatal(err)
				}
				prefix, _ := attrPrefix("dev", ScopeClient)
				_ = pa.keys(prefix)
			}
		})
	}
}
