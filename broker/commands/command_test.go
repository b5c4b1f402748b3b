package commands

import (
	"encoding/json"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

func TestParseCommand(t *testing.T) {
	for _, c := range []struct {
		name, key, value string
		want             spec
		reason           string
	}{
		{name: "minimal", key: "d", value: `{"method":"m"}`, want: spec{method: "m"}},
		{name: "thingsboard persistent", key: "d",
			value: `{"method":"setGpio","params":{"pin":7,"value":1},"persistent":true,"timeout":5000,"expirationTime":1700000000000,"retries":2,"additionalInfo":{}}`,
			want:  spec{method: "setGpio", params: json.RawMessage(`{"pin":7,"value":1}`), timeout: 5 * time.Second, expiresAt: time.UnixMilli(1700000000000)}},
		{name: "nulls are unset", key: "d", value: `{"method":"m","params":null,"timeout":null,"expirationTime":null,"oneway":null}`,
			want: spec{method: "m", params: json.RawMessage(`null`)}},
		{name: "expirationTime 0 is unset", key: "d", value: `{"method":"m","expirationTime":0}`, want: spec{method: "m"}},
		{name: "one-way", key: "d", value: `{"method":"m","oneway":true,"params":[1]}`, want: spec{method: "m", oneWay: true, params: json.RawMessage(`[1]`)}},
		{name: "fractional timeout", key: "d", value: `{"method":"m","timeout":1.5}`, want: spec{method: "m", timeout: 1500 * time.Microsecond}},
		{name: "no key", value: `{"method":"m"}`, reason: "no_key"},
		{name: "key not UTF-8", key: "\xff", value: `{"method":"m"}`, reason: "no_key"},
		{name: "empty value", key: "d", value: ``, reason: "not_object"},
		{name: "string", key: "d", value: `"m"`, reason: "not_object"},
		{name: "trailing garbage", key: "d", value: `{"method":"m"} x`, reason: "not_object"},
		{name: "method missing", key: "d", value: `{}`, reason: "bad_method"},
		{name: "method null", key: "d", value: `{"method":null}`, reason: "bad_method"},
		{name: "method object", key: "d", value: `{"method":{}}`, reason: "bad_method"},
		{name: "timeout zero", key: "d", value: `{"method":"m","timeout":0}`, reason: "bad_field"},
		{name: "timeout too long", key: "d", value: `{"method":"m","timeout":1e12}`, reason: "bad_field"},
		{name: "expirationTime negative", key: "d", value: `{"method":"m","expirationTime":-5}`, reason: "bad_field"},
		{name: "expirationTime huge", key: "d", value: `{"method":"m","expirationTime":1e300}`, reason: "bad_field"},
		{name: "too large", key: "d", value: `{"method":"m","params":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`, reason: "too_large"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var key []byte
			if c.key != "" {
				key = []byte(c.key)
			}
			got, err := parseCommand(key, []byte(c.value), 200)
			if c.reason != "" {
				if err == nil || err.Reason != c.reason {
					t.Fatalf("got %+v, %v; want reason %s", got, err, c.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestCheckpointCodec(t *testing.T) {
	cp := checkpoint{Next: 100, Pending: []int64{3, 17, 99}}
	got, err := decodeCheckpoint(encodeCheckpoint(cp))
	if err != nil || got.Next != 100 || !reflect.DeepEqual(got.Pending, cp.Pending) || got.low() != 3 {
		t.Fatalf("round trip %+v %v", got, err)
	}
	if (checkpoint{Next: 7}).low() != 7 {
		t.Fatal("low without pending")
	}
	for _, bad := range []string{`{}`, `{"v":2,"next":1}`, `{"v":1,"next":-1}`, `{"v":1,"next":5,"pending":[5]}`,
		`{"v":1,"next":5,"pending":[3,2]}`, `{"v":1,"next":5,"pending":[2,2]}`, `{"v":1,"next":5,"pending":[-1]}`, `[`} {
		if _, err := decodeCheckpoint([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if k := string(checkpointKey("commands", 12)); k != "cmd/commands/12" {
		t.Fatalf("key %s", k)
	}
}

// FuzzParseCommand: parsing never panics; an accepted command has a method
// and sane durations; and any command, accepted or not, with any device
// answer, makes a response record whose value is JSON that decodes back.
func FuzzParseCommand(f *testing.F) {
	f.Add([]byte("d1"), []byte(`{"method":"setGpio","params":{"pin":1},"timeout":500,"expirationTime":1700000000000}`), []byte(`{"ok":true}`))
	f.Add([]byte(""), []byte(`{"method":5}`), []byte(`not json`))
	f.Add([]byte("\xff"), []byte(`[]`), []byte(``))
	f.Add([]byte("d"), []byte(`{"method":"m","oneway":true,"params":null}`), []byte(`null`))
	f.Fuzz(func(t *testing.T, key, value, answer []byte) {
		s, inv := parseCommand(key, value, 4096)
		if inv == nil {
			if s.method == "" || s.timeout < 0 || s.timeout > maxTimeoutMs*time.Millisecond || len(key) == 0 {
				t.Fatalf("accepted %q %q as %+v", key, value, s)
			}
		} else if inv.Reason == "" || inv.Problem == "" {
			t.Fatalf("invalid without reason: %+v", inv)
		}
		c := &command{part: &partState{id: 2}, offset: 9, key: key, spec: s,
			headers: []commitlog.Header{{Key: "cid", Value: value}, {Key: HeaderRequestOffset, Value: []byte("forged")}}}
		rec := responseRecord("commands", c, result{status: StatusOK, response: answer}, time.UnixMilli(5))
		var r Response
		if err := json.Unmarshal(rec.Value, &r); err != nil {
			t.Fatalf("response value %q: %v", rec.Value, err)
		}
		if r.RequestOffset != 9 || r.RequestPartition != 2 || r.Status != StatusOK || rec.Timestamp != 5 {
			t.Fatalf("response %+v", r)
		}
		offsets := 0
		for _, h := range rec.Headers {
			if h.Key == HeaderRequestOffset {
				offsets++
				if string(h.Value) != strconv.Itoa(9) {
					t.Fatalf("offset header %q", h.Value)
				}
			}
		}
		if offsets != 1 {
			t.Fatalf("%d offset headers", offsets)
		}
	})
}

// FuzzDecodeCheckpoint: a checkpoint that decodes is consistent and
// survives a round trip.
func FuzzDecodeCheckpoint(f *testing.F) {
	f.Add([]byte(`{"v":1,"next":10,"pending":[1,5]}`))
	f.Add([]byte(`{"v":1,"next":0}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		cp, err := decodeCheckpoint(b)
		if err != nil {
			return
		}
		if cp.low() > cp.Next || cp.low() < 0 {
			t.Fatalf("low %d next %d", cp.low(), cp.Next)
		}
		again, err := decodeCheckpoint(encodeCheckpoint(cp))
		if err != nil || again.Next != cp.Next || len(again.Pending) != len(cp.Pending) {
			t.Fatalf("round trip %+v → %+v %v", cp, again, err)
		}
	})
}
