package main

// Stream pipelines (broker/streams): compiled from the configuration,
// started once the log is open and before retention resumes (each sets
// its holds on its inputs), stopped before the log closes.

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-iot/ferry/broker/streams"
	"github.com/ferry-iot/ferry/configs"
)

// validateStreams compiles every pipeline, so a configuration that does
// not compile is refused at start with each problem's key.
func (c *Config) validateStreams(p *configs.Problems) {
	names := map[string]int{}
	for i, s := range c.Streams {
		key := fmt.Sprintf("streams[%d]", i)
		if j, dup := names[s.Name]; dup && s.Name != "" {
			p.Add(key+".name", "%q repeats streams[%d]", s.Name, j)
		}
		names[s.Name] = i
		if _, err := streams.Compile(s); err != nil {
			p.Nest(key, err)
		}
		for _, in := range s.From {
			if strings.HasPrefix(in, s.Name+".") {
				p.Add(key+".from", "%q is one of the pipeline's own topics", in)
			}
		}
	}
}

// streamTopic reports whether topic is written by a pipeline: its to,
// late or dead-letter topic (which the pipeline creates if log.topics
// does not).
func (c *Config) streamTopic(topic string) bool {
	for _, s := range c.Streams {
		if topic == s.To || topic == s.Name+".late" || topic == s.Name+".dlq" {
			return true
		}
	}
	return false
}

// streamSet is the running pipelines.
type streamSet struct {
	cancel context.CancelFunc
	tasks  []*streams.Task
	froms  [][]string
	tos    []string
}

func (d *Daemon) startStreams() error {
	if len(d.cfg.Streams) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	set := &streamSet{cancel: cancel}
	for i, c := range d.cfg.Streams {
		top, err := streams.Compile(c) // validated in LoadConfig
		if err != nil {
			cancel()
			return fmt.Errorf("streams[%d]: %w", i, err)
		}
		opts := c.TaskOptions()
		opts.Logger = d.logger
		t := streams.NewTask(d.log, top, opts)
		t.Start(ctx)
		set.tasks = append(set.tasks, t)
		set.froms = append(set.froms, c.From)
		set.tos = append(set.tos, c.To)
		d.logger.Info("stream pipeline started", "pipeline", c.Name, "from", strings.Join(c.From, ","), "to", c.To)
	}
	d.streams = set
	d.metrics.MustRegister(&streamCollector{set: set})
	return nil
}

func (d *Daemon) stopStreams() {
	if d.streams == nil {
		return
	}
	d.streams.cancel()
	for _, t := range d.streams.tasks {
		<-t.Done()
	}
}

// streamView is a pipeline in GET /api/v1/streams.
type streamView struct {
	streams.Status
	From []string `json:"from"`
	To   string   `json:"to"`
}

func (d *Daemon) listStreams(w http.ResponseWriter, r *http.Request) {
	views := []streamView{}
	if d.streams != nil {
		for i, t := range d.streams.tasks {
			views = append(views, streamView{Status: t.Status(), From: d.streams.froms[i], To: d.streams.tos[i]})
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"streams": views})
}

// streamCollector reads the pipelines' counters at scrape time.
type streamCollector struct{ set *streamSet }

var (
	streamIn      = prometheus.NewDesc("ferry_stream_records_in_total", "Records a stream pipeline read.", []string{"pipeline"}, nil)
	streamOut     = prometheus.NewDesc("ferry_stream_records_out_total", "Records a stream pipeline wrote to its output topics.", []string{"pipeline"}, nil)
	streamLate    = prometheus.NewDesc("ferry_stream_late_total", "Records past their windows' grace, kept in <pipeline>.late.", []string{"pipeline"}, nil)
	streamDead    = prometheus.NewDesc("ferry_stream_dead_letter_total", "Records a step failed on, kept in <pipeline>.dlq.", []string{"pipeline"}, nil)
	streamCommits = prometheus.NewDesc("ferry_stream_commits_total", "Commits of a stream pipeline's state, positions and outputs.", []string{"pipeline"}, nil)
	streamLag     = prometheus.NewDesc("ferry_stream_lag_records", "Records of an input partition a stream pipeline has not read.", []string{"pipeline", "input"}, nil)
	streamUp      = prometheus.NewDesc("ferry_stream_running", "1 while a stream pipeline runs (0: restoring, paused on a full output, or failed).", []string{"pipeline"}, nil)
)

func (c *streamCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{streamIn, streamOut, streamLate, streamDead, streamCommits, streamLag, streamUp} {
		ch <- d
	}
}

func (c *streamCollector) Collect(ch chan<- prometheus.Metric) {
	for _, t := range c.set.tasks {
		s := t.Status()
		ch <- prometheus.MustNewConstMetric(streamIn, prometheus.CounterValue, float64(s.RecordsIn), s.Name)
		ch <- prometheus.MustNewConstMetric(streamOut, prometheus.CounterValue, float64(s.RecordsOut), s.Name)
		ch <- prometheus.MustNewConstMetric(streamLate, prometheus.CounterValue, float64(s.Late), s.Name)
		ch <- prometheus.MustNewConstMetric(streamDead, prometheus.CounterValue, float64(s.DeadLetter), s.Name)
		ch <- prometheus.MustNewConstMetric(streamCommits, prometheus.CounterValue, float64(s.Commits), s.Name)
		for in, lag := range s.Lag {
			ch <- prometheus.MustNewConstMetric(streamLag, prometheus.GaugeValue, float64(lag), s.Name, in)
		}
		up := 0.0
		if s.State == "running" {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(streamUp, prometheus.GaugeValue, up, s.Name)
	}
}
