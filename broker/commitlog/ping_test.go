package commitlog

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
	"github.com/ferry-iot/ferry/broker/commitlog/vfs/vfstest"
)

// TestPing: Ping answers while the write path moves, fails by its deadline
// while fsyncs are stuck and appends keep coming (the commit goroutine
// blocks behind the sync stage), answers again once they finish, and
// returns ErrClosed after Close.
func TestPing(t *testing.T) {
	fs := vfstest.NewBlockingFS(vfs.NewMem(), suffixLog)
	l := openTestLog(t, fs)
	p, _ := mustTopic(t, l, "t", TopicConfig{}).Partition(0)
	ping := func(d time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		return l.Ping(ctx)
	}
	if err := ping(5 * time.Second); err != nil {
		t.Fatalf("ping of an idle log: %v", err)
	}
	fs.Block()
	defer fs.Unblock()
	var futures []*Future
	for i := 0; ; i++ {
		futures = append(futures, p.Append(context.Background(), []Record{rec("k", "v", 0)}))
		if i == 0 {
			<-fs.Held()
		}
		if err := ping(100 * time.Millisecond); errors.Is(err, context.DeadlineExceeded) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if i == 50 {
			t.Fatal("ping kept answering with every fsync stuck and 50 appends queued behind it")
		}
	}
	fs.Unblock()
	for _, f := range futures {
		waitAck(t, f)
	}
	if err := ping(5 * time.Second); err != nil {
		t.Fatalf("ping after the fsyncs finished: %v", err)
	}
	l.Close()
	if err := ping(time.Second); !errors.Is(err, ErrClosed) {
		t.Fatalf("ping after Close: %v", err)
	}
}
