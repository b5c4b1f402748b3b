package kafkaserver

// Fetch (key 1), versions 4-12 (v4 is the first with RecordBatch v2 and
// LastStableOffset; v13+ address topics by id, which Ferry does not keep,
// so clients settle on v12).
//
// Batches are served exactly as stored: each partition's answer is a run
// of whole batches from one segment (the last may be cut at the byte
// limit, as Kafka does; clients drop the partial tail), and on plain TCP
// the bytes go from the segment file to the socket with sendfile (see
// fetch_write.go: kmsg cannot stream, so the response framing is written
// by hand around the file ranges).
//
// Long poll: when fewer than MinBytes are available, the request waits on
// the partitions' wake-up channels (closed by the log when their high
// watermark moves) until MinBytes are there or MaxWaitMillis passes — no
// polling. LastStableOffset is the high watermark: Ferry stores no open
// transactions, so librdkafka's default read_committed consumers make
// progress. Fetch sessions are not kept (SessionID 0: full fetches).

import (
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

// fetchAnswer is a Fetch response whose record data are file ranges.
type fetchAnswer struct {
	version  int16
	errCode  int16
	topics   []fetchTopic
	total    int64 // record bytes across partitions
	firstErr int16 // for metrics
}

type fetchTopic struct {
	name  string
	parts []fetchPart
}

type fetchPart struct {
	id       int32
	errCode  int16
	hwm      int64
	logStart int64
	slice    *commitlog.Slice // nil or empty: no records
}

func (a *fetchAnswer) release() {
	for ti := range a.topics {
		for pi := range a.topics[ti].parts {
			if sl := a.topics[ti].parts[pi].slice; sl != nil {
				sl.Release()
				a.topics[ti].parts[pi].slice = nil
			}
		}
	}
}

func handleFetch(c *conn, r *request) *outbound {
	req := r.kreq.(*kmsg.FetchRequest)
	wait := min(time.Duration(max(req.MaxWaitMillis, 0))*time.Millisecond, c.s.cfg.MaxFetchWait)
	deadline := time.Now().Add(wait)
	var timer *time.Timer
	w := commitlog.NewWatcher()
	defer w.Stop()
	for {
		ans, waitable := c.s.readFetch(req, w)
		if ans.total >= int64(max(req.MinBytes, 1)) || ans.firstErr != 0 || !waitable || !time.Now().Before(deadline) || c.ctx.Err() != nil {
			if timer != nil {
				timer.Stop()
			}
			return &outbound{fetch: ans, errc: ans.firstErr}
		}
		ans.release()
		if timer == nil {
			timer = time.NewTimer(time.Until(deadline))
		}
		// Sleep until a partition's high watermark moves, the wait ends or
		// the connection closes.
		select {
		case <-w.C():
		case <-c.ctx.Done():
		case <-timer.C:
			timer = nil
			deadline = time.Now() // time is up: answer with what there is
		}
	}
}

// readFetch reads every requested partition once, within the request's
// byte limits, watching each with w before reading it so no append is
// missed; it reports whether any partition read can be waited on.
func (s *Server) readFetch(req *kmsg.FetchRequest, w *commitlog.Watcher) (ans *fetchAnswer, waitable bool) {
	ans = &fetchAnswer{version: req.Version}
	budget := int64(req.MaxBytes)
	if req.Version < 3 || budget <= 0 {
		budget = 50 << 20
	}
	for _, rt := range req.Topics {
		ft := fetchTopic{name: rt.Topic}
		t, terr := s.log.Topic(rt.Topic)
		for _, rp := range rt.Partitions {
			fp := fetchPart{id: rp.Partition, hwm: -1, logStart: -1}
			var p *commitlog.Partition
			err := terr
			if err == nil {
				p, err = t.Partition(rp.Partition)
			}
			if err != nil {
				fp.errCode = kerr.UnknownTopicOrPartition.Code
				ans.noteErr(fp.errCode)
				ft.parts = append(ft.parts, fp)
				continue
			}
			w.Watch(p)
			limit := min(int64(rp.PartitionMaxBytes), budget)
			if ans.total == 0 {
				limit = max(limit, 1) // the first batch is returned whole (KIP-74)
			}
			if limit <= 0 {
				fp.hwm, fp.logStart = p.HighWatermark(), p.StartOffset()
				ft.parts = append(ft.parts, fp)
				continue
			}
			sl, err := p.Read(rp.FetchOffset, int(min(limit, 1<<30)))
			fp.hwm, fp.logStart = p.HighWatermark(), p.StartOffset()
			if err != nil {
				fp.errCode = codeFor(err)
				ans.noteErr(fp.errCode)
				ft.parts = append(ft.parts, fp)
				continue
			}
			fp.hwm, fp.logStart = sl.HighWatermark, sl.LogStartOffset
			waitable = true // new data anywhere may reach MinBytes
			if sl.Len == 0 {
				sl.Release()
			} else {
				fp.slice = sl
				ans.total += sl.Len
				budget -= sl.Len
			}
			ft.parts = append(ft.parts, fp)
		}
		ans.topics = append(ans.topics, ft)
	}
	return ans, waitable
}

func (a *fetchAnswer) noteErr(code int16) {
	if a.firstErr == 0 {
		a.firstErr = code
	}
}
