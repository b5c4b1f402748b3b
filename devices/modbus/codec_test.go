package modbus

import (
	"fmt"
	"strings"
	"testing"
)

func pts(t *testing.T, specs ...string) []*point {
	t.Helper()
	var out []*point
	for i, s := range specs { // "holding:10:uint32"
		parts := strings.Split(s, ":")
		var addr int
		fmt.Sscan(parts[1], &addr)
		c, err := compilePoint(Point{Key: fmt.Sprint("k", i), Register: parts[0], Address: addr, Type: parts[2]}, "")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, &c)
	}
	return out
}

func planString(rs []read) string {
	var b []string
	for _, r := range rs {
		b = append(b, fmt.Sprintf("%s%d+%d", r.reg, r.addr, r.count))
	}
	return strings.Join(b, " ")
}

// TestPlanReads: merged within the limit and the gap; tables apart.
func TestPlanReads(t *testing.T) {
	p := pts(t, "holding:0:int16", "holding:1:uint32", "holding:120:float32", "holding:124:int16",
		"input:5:int16", "coil:0:bool", "coil:1999:bool", "coil:2000:bool", "holding:3:int16")
	for _, c := range []struct {
		maxRegs, gap int
		want         string
	}{
		{0, 0, "coil0+2000 coil2000+1 holding0+125 input5+1"},
		{0, -1, "coil0+1 coil1999+2 holding0+4 holding120+2 holding124+1 input5+1"},
		{10, 0, "coil0+2000 coil2000+1 holding0+4 holding120+5 input5+1"},
		{0, 116, "coil0+1 coil1999+2 holding0+125 input5+1"},
		{0, 115, "coil0+1 coil1999+2 holding0+4 holding120+5 input5+1"},
	} {
		if got := planString(planReads(p, c.maxRegs, c.gap)); got != c.want {
			t.Errorf("max %d gap %d: %s, want %s", c.maxRegs, c.gap, got, c.want)
		}
	}
}

// TestPointErrorsNameKeys: each problem names its key.
func TestPointErrorsNameKeys(t *testing.T) {
	bit := 16
	for _, c := range []struct {
		p    Point
		want string
	}{
		{Point{Register: "holdings", Type: "int16"}, "register:"},
		{Point{Register: "holding", Type: "int17"}, "type:"},
		{Point{Register: "coil", Type: "int16"}, "type: coil registers hold bits"},
		{Point{Register: "holding", Type: "string"}, "count:"},
		{Point{Register: "holding", Type: "bool", Bit: &bit}, "bit: 16"},
		{Point{Register: "holding", Type: "int32", ByteOrder: "ABDC"}, "byte_order:"},
		{Point{Register: "holding", Type: "uint64", Address: 65533}, "address:"},
		{Point{Register: "input", Type: "float32", Scale: -1}, "scale:"},
	} {
		_, err := compilePoint(c.p, "")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.p, err, c.want)
		}
	}
}

// TestOrderRoundTrip: encode then decode gives the value back in every
// order (the decode direction is checked against pymodbus by hand-laid
// registers in TestPymodbusTCPEveryTypeAndOrder).
func TestOrderRoundTrip(t *testing.T) {
	for _, order := range []string{"ABCD", "DCBA", "BADC", "CDAB"} {
		for _, typ := range []string{"int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"} {
			c, err := compilePoint(Point{Key: "v", Register: "holding", Type: typ, ByteOrder: order}, "")
			if err != nil {
				t.Fatal(err)
			}
			v, _ := c.decode([]uint16{0x0102, 0x0304, 0x0506, 0x0708}[:c.n], nil)
			words, _, err := c.encode(v)
			if err != nil {
				t.Fatalf("%s %s: %v", order, typ, err)
			}
			back, _ := c.decode(words, nil)
			if string(back.AppendJSON(nil)) != string(v.AppendJSON(nil)) {
				t.Errorf("%s %s: %s → %04x → %s", order, typ, v.AppendJSON(nil), words, back.AppendJSON(nil))
			}
		}
	}
}
