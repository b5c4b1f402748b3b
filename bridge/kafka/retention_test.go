package kafka

import (
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/bridge"
	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/testkit"
)

// outage is an edge topic with size retention, bridged over a link that
// goes down while ingest continues. The edge log's clock is moved by hand,
// and retention runs only when the test calls EnforceRetention.
type outage struct {
	t     *testing.T
	e     *edge
	clock *testkit.Clock // the edge log's; it starts at the real time, for the upstream's sake
	tp    *commitlog.Topic
	l     *link
	c     *kfake.Cluster
	en    *bridge.Engine
	addr  []string
	next  int // next sequence to ingest
}

func newOutage(t *testing.T, cfg commitlog.TopicConfig) *outage {
	c := cluster(t)
	clock := testkit.NewClock(time.Now())
	e := newEdge(t, "", commitlog.WithClock(clock), commitlog.WithRetentionInterval(time.Hour))
	o := &outage{t: t, e: e, clock: clock, l: newLink(), c: c, addr: c.ListenAddrs()}
	var err error
	if o.tp, err = o.e.log.CreateTopic("telemetry", cfg); err != nil {
		t.Fatal(err)
	}
	tg := target(t, o.addr, ExactlyOnce, kgo.Dialer(o.l.dial))
	o.en = engineFor(t, o.e, tg, bridge.Config{StallTimeout: time.Second, MaxBatchBytes: 64 << 10})
	o.en.Start()
	// Some records reach the upstream before the outage.
	o.ingest(3000)
	waitLag(t, o.en, 60*time.Second)
	o.l.cut()
	return o
}

// ingest appends n records; it returns the error of a refused append.
func (o *outage) ingest(n int) error {
	err := appendTelemetry(o.tp, o.next, n, 100)
	o.next += n
	if err != nil && !errors.Is(err, commitlog.ErrLogFull) {
		o.t.Fatal(err)
	}
	return err
}

// held returns each partition's retention hold (the bridge's cursor) and
// the log's start offsets.
func (o *outage) positions() (next, start map[int32]int64) {
	next, start = map[int32]int64{}, map[int32]int64{}
	for _, p := range o.en.Status().Partitions {
		next[p.Partition] = p.Next
	}
	for _, p := range o.tp.Partitions() {
		start[p.ID()] = p.StartOffset()
	}
	return next, start
}

func (o *outage) close() {
	if err := o.en.Close(); err != nil {
		o.t.Error(err)
	}
	o.e.close()
}

// TestUplinkDownUntilRetention: the uplink stays down while ingest goes on
// until the topic's size limit acts.
//
// overwrite_oldest: ingest keeps succeeding; retention drops the oldest
// segments although the bridge holds them, and counts them (the log's
// DroppedUnreplicated, the bridge's RecordsDropped). When the link
// returns, the upstream gets exactly the records still in the log, once.
//
// reject_new: once full, appends fail with log.ErrLogFull and retention
// deletes nothing the bridge holds. When the link returns and the bridge
// has drained, the hold moves, age retention frees the space and appends
// succeed again; the upstream holds every accepted record once.
func TestUplinkDownUntilRetention(t *testing.T) {
	const limit = 64 << 10 // zstd packs this telemetry into ~10 bytes a record
	t.Run("overwrite_oldest", func(t *testing.T) {
		o := newOutage(t, commitlog.TopicConfig{Partitions: 3, Compression: commitlog.CompressionZstd,
			RetentionBytes: limit, SegmentBytes: limit / 8, OnFull: commitlog.OverwriteOldest})
		defer o.close()
		held, _ := o.positions()
		dropped := 0
		for all := false; !all; {
			if err := o.ingest(1000); err != nil {
				t.Fatalf("overwrite_oldest refused an append: %v", err)
			}
			dropped += o.e.log.EnforceRetention().Dropped
			if o.next > 2_000_000 {
				t.Fatal("retention never dropped held records")
			}
			_, start := o.positions()
			all = true
			for id, h := range held {
				all = all && start[id] > h // this partition dropped records the bridge holds
			}
		}
		stats := o.tp.Stats()
		// The first batch after the outage, the one that skips the dropped
		// records, is not acknowledged in time: it goes again, and the
		// skip must still be counted once.
		delayNext(o.c, kmsg.Produce, 1500*time.Millisecond)
		before := o.en.Status().Reconnects
		o.l.restore()
		waitLag(t, o.en, 60*time.Second)
		st := o.en.Status()
		if st.Reconnects == before {
			t.Fatal("the first send after the outage did not fail")
		}
		if st.RecordsDropped != stats.DroppedUnreplicated || st.DroppedUnreplicated != stats.DroppedUnreplicated {
			t.Fatalf("bridge skipped %d, status dropped %d, the log dropped %d unreplicated", st.RecordsDropped, st.DroppedUnreplicated, stats.DroppedUnreplicated)
		}
		u := readUpstream(t, o.addr, "site1.telemetry", o.next-int(stats.DroppedUnreplicated), 30*time.Second)
		u.check(t, o.e, "telemetry", false) // every record still in the log, once
		if want := int64(o.next) - stats.DroppedUnreplicated; int64(len(u.recs)) != want {
			t.Fatalf("upstream holds %d records, want %d ingested - %d dropped", len(u.recs), o.next, stats.DroppedUnreplicated)
		}
		t.Logf("overwrite_oldest: %d records ingested (none refused), %d dropped by retention (%d segments) of which %d unreplicated = bridge skipped %d; upstream %d, exactly once",
			o.next, stats.DroppedRecords, dropped, stats.DroppedUnreplicated, st.RecordsDropped, len(u.recs))
	})

	t.Run("reject_new", func(t *testing.T) {
		const age = 500 * time.Millisecond
		o := newOutage(t, commitlog.TopicConfig{Partitions: 3, Compression: commitlog.CompressionZstd,
			RetentionBytes: limit, SegmentBytes: limit / 8, OnFull: commitlog.RejectNew, Retention: age})
		defer o.close()
		// Fill until every partition refuses.
		fill := func() {
			for {
				before := o.e.total("telemetry")
				if err := o.ingest(1000); err != nil && o.e.total("telemetry") == before {
					return
				}
				if o.next > 2_000_000 {
					t.Fatal("reject_new never refused an append")
				}
			}
		}
		fill()
		// Retention may free what is already upstream (the records sent
		// before the outage, once old enough), never what is held.
		var expired int
		for range 2 {
			o.clock.Advance(age + age/2)
			expired += o.e.log.EnforceRetention().Expired
			held, start := o.positions()
			for id, h := range held {
				if start[id] > h {
					t.Fatalf("partition %d: retention deleted held records (start %d, hold %d)", id, start[id], h)
				}
			}
			fill()
		}
		accepted := o.e.total("telemetry")
		stats := o.tp.Stats()
		if stats.DroppedRecords != 0 || stats.Rejected == 0 {
			t.Fatalf("stats %+v", stats)
		}
		if err := o.ingest(100); !errors.Is(err, commitlog.ErrLogFull) {
			t.Fatalf("append to a full reject_new topic: %v, want ErrLogFull", err)
		}
		o.next -= 100

		o.l.restore()
		waitLag(t, o.en, 60*time.Second)
		u := readUpstream(t, o.addr, "site1.telemetry", int(accepted), 30*time.Second)
		u.check(t, o.e, "telemetry", false)
		if int64(len(u.recs)) != accepted {
			t.Fatalf("upstream holds %d records, %d accepted", len(u.recs), accepted)
		}
		// The hold moved: age retention frees the space, appends succeed.
		o.clock.Advance(age + age/2)
		freed := o.e.log.EnforceRetention()
		if freed.Expired == 0 {
			t.Fatalf("nothing expired after the bridge drained: %+v", freed)
		}
		if err := o.ingest(100); err != nil {
			t.Fatalf("append after the bridge drained and retention ran: %v", err)
		}
		t.Logf("reject_new: %d records accepted, %d appends refused (ErrLogFull), 0 dropped; retention during the outage expired %d segments (all upstream already, none held); "+
			"upstream %d, exactly once; after the drain retention expired %d segments and appends succeed again",
			accepted, o.tp.Stats().Rejected, expired, len(u.recs), freed.Expired)
	})
}
