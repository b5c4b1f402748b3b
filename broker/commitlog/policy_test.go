package commitlog

import (
	"context"
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

// waitAll waits for every future (20 s at most) and fails on any error.
func waitAll(t *testing.T, what string, fs ...*Future) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, f := range fs {
		if _, err := f.Wait(ctx); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
}

// notDone fails when f completes within d.
func notDone(t *testing.T, what string, f *Future, d time.Duration) {
	t.Helper()
	select {
	case <-f.Done():
		t.Fatalf("%s was committed without waiting for company", what)
	case <-time.After(d):
	}
}

func randomValue(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// TestAckDelayWaitsForCompany: with two producers seen, one producer's
// lone append waits for the other's (up to the delay budget), the cycle is
// cut at once when both wait, when the queues hold a cycle worth an fsync,
// and at Close.
func TestAckDelayWaitsForCompany(t *testing.T) {
	l := openTestLog(t, vfs.NewMem(), WithAckDelay(time.Hour), WithSyncBytes(8<<10))
	p, _ := mustTopic(t, l, "t", TopicConfig{}).Partition(0)
	var a, b Source
	ctxA, ctxB := WithSource(context.Background(), &a), WithSource(context.Background(), &b)

	waitAll(t, "both producers waiting did not cut the cycle",
		p.Append(ctxA, []Record{rec("a", "1", 0)}), p.Append(ctxB, []Record{rec("b", "1", 0)}))

	lone := p.Append(ctxA, []Record{rec("a", "2", 0)})
	notDone(t, "a lone append while another producer is active", lone, 200*time.Millisecond)
	waitAll(t, "the other producer's append did not cut the cycle", lone, p.Append(ctxB, []Record{rec("b", "2", 0)}))

	var big []Record
	for range 4 {
		big = append(big, Record{Key: []byte("a"), Value: randomValue(4 << 10)})
	}
	waitAll(t, "a cycle worth an fsync was not cut at once", p.Append(ctxA, big))

	last := p.Append(ctxA, []Record{rec("a", "3", 0)})
	notDone(t, "a lone small append", last, 100*time.Millisecond)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	waitAll(t, "close did not commit the waiting append", last)
}

// TestAckDelayBudgetEnds: a lone append is committed when its budget is
// spent, though the other producer never comes.
func TestAckDelayBudgetEnds(t *testing.T) {
	l := openTestLog(t, vfs.NewMem(), WithAckDelay(50*time.Millisecond))
	defer l.Close()
	p, _ := mustTopic(t, l, "t", TopicConfig{}).Partition(0)
	var a, b Source
	ctxA, ctxB := WithSource(context.Background(), &a), WithSource(context.Background(), &b)
	waitAll(t, "first appends", p.Append(ctxA, []Record{rec("a", "1", 0)}), p.Append(ctxB, []Record{rec("b", "1", 0)}))
	start := time.Now()
	waitAll(t, "the lone append", p.Append(ctxA, []Record{rec("a", "2", 0)}))
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Fatalf("the lone append was committed after %v, before its budget", d)
	}
}

// TestAckDelayAnonymousAppendsDoNotWait: appends that name no producer are
// taken to have one waiting for them: sequential appends with an hour's
// budget go through.
func TestAckDelayAnonymousAppendsDoNotWait(t *testing.T) {
	l := openTestLog(t, vfs.NewMem(), WithAckDelay(time.Hour))
	defer l.Close()
	p, _ := mustTopic(t, l, "t", TopicConfig{}).Partition(0)
	for i := range 100 {
		waitAll(t, "a sequential anonymous append", p.Append(context.Background(), []Record{rec("k", "v", int64(i))}))
	}
}

// TestAckDelayClosedLoop: producers that each wait for their previous
// acknowledgement (a closed loop) never wait for the budget: once all of
// them have an append queued the cycle is cut. With an hour's budget each
// producer gets many appends through in a second; the stragglers left
// when the others stop are committed by Close.
func TestAckDelayClosedLoop(t *testing.T) {
	l := openTestLog(t, vfs.NewMem(), WithAckDelay(time.Hour))
	p, _ := mustTopic(t, l, "t", TopicConfig{}).Partition(0)
	const producers = 4
	deadline := time.Now().Add(time.Second)
	counts := make([]int, producers)
	var wg sync.WaitGroup
	for i := range producers {
		wg.Go(func() {
			var src Source
			ctx := WithSource(context.Background(), &src)
			for time.Now().Before(deadline) {
				if _, err := p.Append(ctx, []Record{rec("k", "v", 0)}).Wait(context.Background()); err != nil {
					return
				}
				counts[i]++
			}
		})
	}
	time.Sleep(time.Until(deadline) + 50*time.Millisecond)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, n := range counts {
		if n < 20 {
			t.Errorf("producer %d got %d appends through in a second (counts %v): the closed loop waited for the budget", i, n, counts)
		}
	}
}

// TestAckDelayRetiredSourceIsNotWaitedFor: a producer whose connection
// closed (Source.Close) no longer counts among the active ones, so the
// remaining producer's appends are not held for it.
func TestAckDelayRetiredSourceIsNotWaitedFor(t *testing.T) {
	l := openTestLog(t, vfs.NewMem(), WithAckDelay(time.Hour))
	defer l.Close()
	p, _ := mustTopic(t, l, "t", TopicConfig{}).Partition(0)
	var a, b Source
	ctxA, ctxB := WithSource(context.Background(), &a), WithSource(context.Background(), &b)
	waitAll(t, "first appends", p.Append(ctxA, []Record{rec("a", "1", 0)}), p.Append(ctxB, []Record{rec("b", "1", 0)}))
	notDone(t, "a lone append while the other producer is connected", p.Append(ctxA, []Record{rec("a", "2", 0)}), 100*time.Millisecond)
	b.Close()
	b.Close() // twice is harmless
	waitAll(t, "an append once the other producer was retired", p.Append(ctxA, []Record{rec("a", "3", 0)}))
}

// TestAckDelayDetachedSourceIsGathered: a detached producer (an adapter
// polling on its own schedule) is never taken to be waiting: its lone
// append waits for the budget, and it does not make a waiting producer's
// append wait once the others are all waiting.
func TestAckDelayDetachedSourceIsGathered(t *testing.T) {
	l := openTestLog(t, vfs.NewMem(), WithAckDelay(50*time.Millisecond))
	defer l.Close()
	p, _ := mustTopic(t, l, "t", TopicConfig{}).Partition(0)
	bus := Source{Detached: true}
	ctx := WithSource(context.Background(), &bus)
	waitAll(t, "first append", p.Append(ctx, []Record{rec("a", "1", 0)}))
	start := time.Now()
	waitAll(t, "the detached append", p.Append(ctx, []Record{rec("a", "2", 0)}))
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Fatalf("a detached producer's append was committed after %v, before its budget", d)
	}
	l2 := openTestLog(t, vfs.NewMem(), WithAckDelay(time.Hour))
	defer l2.Close()
	p2, _ := mustTopic(t, l2, "t", TopicConfig{}).Partition(0)
	bus2 := Source{Detached: true} // a Source belongs to one log
	var dev Source
	ctx, ctxDev := WithSource(context.Background(), &bus2), WithSource(context.Background(), &dev)
	waitAll(t, "a lone waiting producer's append", p2.Append(ctxDev, []Record{rec("b", "1", 0)}))
	p2.Append(ctx, []Record{rec("a", "1", 0)}) // gathered: committed by Close
	notDone(t, "a waiting producer's append beside an idle detached one", p2.Append(ctxDev, []Record{rec("b", "2", 0)}), 100*time.Millisecond)
}
