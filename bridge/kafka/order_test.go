package kafka

import (
	"strconv"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/bridge"
	"github.com/ferry-iot/ferry/broker/testkit"
)

// TestLiveFirst: with a backlog present, live_first splits each partition
// and sends the records produced after the split before the backlog has
// drained; in the end every record is upstream exactly once, but a key's
// older records arrive after its newer ones (no per-key order).
func TestLiveFirst(t *testing.T) {
	c := cluster(t)
	e := newEdge(t, "")
	defer e.close()
	const backlog, live = 8000, 300
	e.produce("telemetry", 0, backlog, 100)
	tg := target(t, c.ListenAddrs(), ExactlyOnce)
	// The rate limit makes the backlog take seconds whatever the machine.
	en := engineFor(t, e, tg, bridge.Config{Order: bridge.LiveFirst, LiveThreshold: 500, MaxBatchBytes: 16 << 10, RateLimit: 200 << 10})
	en.Start()
	defer en.Close()
	testkit.Eventually(t, 30*time.Second, func() bool {
		for _, p := range en.Status().Partitions {
			if p.LiveFrom == 0 {
				return false
			}
		}
		return true
	}, "the backlog split")
	e.produce("telemetry", backlog, live, 100)
	total := int64(backlog + live)
	var st bridge.Status
	testkit.Eventually(t, 30*time.Second, func() bool {
		st = en.Status()
		for _, p := range st.Partitions {
			if p.LiveFrom != 0 && p.LiveNext < p.End {
				return false
			}
		}
		return true
	}, "the live records upstream")
	backlogLeft := st.Lag
	if backlogLeft == 0 {
		t.Fatalf("the backlog drained before the live records went: %+v", st)
	}
	waitLag(t, en, 60*time.Second)
	if err := en.Close(); err != nil {
		t.Fatal(err)
	}
	u := readUpstream(t, c.ListenAddrs(), "site1.telemetry", int(total), 30*time.Second)
	u.checkUnordered(t, e, "telemetry", false)
	if int64(len(u.recs)) != total {
		t.Fatalf("upstream %d records, edge %d", len(u.recs), total)
	}
	// Upstream order: how many keys have a newer (live) record before an
	// older (backlog) one.
	newest := map[string]int{}
	inverted := map[string]bool{}
	for _, r := range u.recs {
		seq, _ := strconv.Atoi(header(r, "seq"))
		k := string(r.Key)
		if n, ok := newest[k]; ok && seq < n {
			inverted[k] = true
		}
		newest[k] = max(newest[k], seq)
	}
	if len(inverted) == 0 {
		t.Fatal("no key saw a live record before its backlog: live_first did not reorder")
	}
	t.Logf("live_first: %d live records upstream while %d backlog records were still waiting; %d records exactly once; %d of 100 keys upstream out of edge order (expected in this mode)",
		live, backlogLeft, total, len(inverted))
}
