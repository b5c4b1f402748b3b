package commitlog

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ferry-iot/ferry/broker/commitlog/vfs"
)

func TestMain(m *testing.M) {
	code := m.Run()
	recoveryFixtures.Range(func(_, dir any) bool { os.RemoveAll(dir.(string)); return true })
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// clockStart is the wall time the tests' fake clocks start at.
var clockStart = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openTestLog(t testing.TB, fs vfs.FS, opts ...Option) *Log {
	t.Helper()
	base := []Option{WithFS(fs), WithLogger(quietLogger()), WithRetentionInterval(time.Hour)}
	l, err := Open("/data/log", append(base, opts...)...)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return l
}

func mustTopic(t testing.TB, l *Log, name string, cfg TopicConfig) *Topic {
	t.Helper()
	tp, err := l.CreateTopic(name, cfg)
	if err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
	return tp
}

func rec(key string, value string, ts int64) Record {
	r := Record{Value: []byte(value), Timestamp: ts}
	if key != "" {
		r.Key = []byte(key)
	}
	return r
}

func mustAppend(t testing.TB, p *Partition, recs ...Record) int64 {
	t.Helper()
	off, err := p.Append(context.Background(), recs).Wait(context.Background())
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return off
}

// readAll decodes every record of p from its start to its high watermark.
func readAll(t testing.TB, p *Partition) []Record {
	t.Helper()
	var out []Record
	off := p.StartOffset()
	for {
		recs, next, hwm, err := p.ReadRecords(off, 64<<10)
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		out = append(out, recs...)
		if next >= hwm || len(recs) == 0 && next == off {
			return out
		}
		off = next
	}
}

func value(i int) string { return fmt.Sprintf("value-%06d", i) }

// segmentBases returns p's segment base offsets, failing unless there are
// at least atLeast segments.
func segmentBases(t *testing.T, p *Partition, atLeast int) []int64 {
	t.Helper()
	var bases []int64
	p.segMu.RLock()
	for _, s := range p.segs {
		bases = append(bases, s.base)
	}
	p.segMu.RUnlock()
	if len(bases) < atLeast {
		t.Fatalf("only %d segments", len(bases))
	}
	return bases
}
