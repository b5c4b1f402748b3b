package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-iot/ferry/configs"
)

// StorageConfig is the storage section: what the daemon knows about the
// card or disk under data_dir.
type StorageConfig struct {
	// Endurance is the medium's rated bytes written (a 32 GB consumer SD
	// card is often rated for a few TB; industrial cards publish a TBW
	// figure). 0: unknown, no projection.
	Endurance configs.Size `mapstructure:"endurance"`
}

// wearMeter measures the bytes the daemon makes the block device write —
// write_bytes of /proc/self/io: pages it wrote back or had written for
// it, its fsyncs included, the file system journal's commits not — and
// projects the medium's life from their rate and storage.endurance. It
// samples every wearSample; the rate is over the last wearWindow (or
// since start, once a minute has passed).
type wearMeter struct {
	endurance int64
	logger    *slog.Logger
	readIO    func() (int64, error) // write_bytes so far; a seam for tests
	now       func() time.Time

	mu       sync.Mutex
	samples  []wearPoint // oldest first, within wearWindow
	perDay   float64     // bytes a day at the recent rate, 0 until known
	warned   bool        // the projection is under a year and was logged
	readErrs int
}

type wearPoint struct {
	at      time.Time
	written int64
}

const (
	wearSample    = 10 * time.Second
	wearWindow    = time.Hour
	wearMinWindow = time.Minute
	// wearWarnDays: a projected life under this is logged as a warning
	// and listed in /healthz.
	wearWarnDays = 365
)

func newWearMeter(endurance int64, logger *slog.Logger) *wearMeter {
	readIO := func() (int64, error) { return procWriteBytes("/proc/self/io") }
	return &wearMeter{endurance: endurance, logger: logger, readIO: readIO, now: time.Now}
}

// procWriteBytes reads write_bytes from a task I/O file (/proc/self/io,
// /proc/PID/io): bytes the process caused to be sent to the block device.
func procWriteBytes(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("wear: %w", err)
	}
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("write_bytes: ")); ok {
			n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("wear: %s write_bytes: %w", path, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("wear: no write_bytes in %s (kernel without task I/O accounting)", path)
}

// run samples until done closes.
func (m *wearMeter) run(done <-chan struct{}) {
	m.sample()
	t := time.NewTicker(wearSample)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			m.sample()
		}
	}
}

// sample takes one reading and updates the rate and the projection.
func (m *wearMeter) sample() {
	w, err := m.readIO()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		if m.readErrs++; m.readErrs == 1 {
			m.logger.Warn("cannot measure the bytes written to the disk: no wear figures", "err", err)
		}
		return
	}
	now := m.now()
	m.samples = append(m.samples, wearPoint{at: now, written: w})
	for len(m.samples) > 2 && now.Sub(m.samples[1].at) >= wearWindow {
		m.samples = m.samples[1:]
	}
	first := m.samples[0]
	if el := now.Sub(first.at); el >= wearMinWindow {
		m.perDay = float64(w-first.written) / el.Seconds() * 86400
	}
	days, ok := m.lifeDaysLocked()
	under := ok && days < wearWarnDays
	switch {
	case under && !m.warned:
		m.warned = true
		m.logger.Warn("at the current write rate the storage's rated endurance lasts under a year",
			"projected_life_days", int64(days), "write_bytes_per_day", int64(m.perDay), "endurance_bytes", m.endurance,
			"hint", "raise log.ack_delay, lower the fleet's publish rate, or use a card rated for more writes (storage.endurance)")
	case !under && m.warned:
		m.warned = false
		m.logger.Info("the storage's projected life is a year or more again", "write_bytes_per_day", int64(m.perDay))
	}
}

// lifeDaysLocked is the projected life of the medium in days at the
// current rate; ok is false without an endurance or a rate.
func (m *wearMeter) lifeDaysLocked() (days float64, ok bool) {
	if m.endurance <= 0 || m.perDay <= 0 {
		return 0, false
	}
	return float64(m.endurance) / m.perDay, true
}

// wearStatus is the storage entry of /healthz.
type wearStatus struct {
	WrittenBytes      int64    `json:"written_bytes"`
	WriteBytesPerDay  *float64 `json:"write_bytes_per_day,omitempty"`
	EnduranceBytes    int64    `json:"endurance_bytes,omitempty"`
	ProjectedLifeDays *float64 `json:"projected_life_days,omitempty"`
}

// status reports the latest figures, and a warning line when the
// projection is under a year.
func (m *wearMeter) status() (wearStatus, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := wearStatus{EnduranceBytes: m.endurance}
	if n := len(m.samples); n > 0 {
		st.WrittenBytes = m.samples[n-1].written
	}
	if m.perDay > 0 {
		v := m.perDay
		st.WriteBytesPerDay = &v
	}
	var warning string
	if days, ok := m.lifeDaysLocked(); ok {
		st.ProjectedLifeDays = &days
		if days < wearWarnDays {
			warning = fmt.Sprintf("storage: at %.1f GB a day the rated endurance (%.0f GB, storage.endurance) lasts %.0f days",
				m.perDay/1e9, float64(m.endurance)/1e9, days)
		}
	}
	return st, warning
}

// register exports the meter's figures.
func (m *wearMeter) register(reg prometheus.Registerer) {
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "ferry_storage_written_bytes_total",
		Help: "Bytes the daemon caused the block device to write (write_bytes of /proc/self/io, sampled every 10 s; the file system journal not included).",
	}, func() float64 { st, _ := m.status(); return float64(st.WrittenBytes) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ferry_storage_write_bytes_per_day",
		Help: "ferry_storage_written_bytes_total's rate over the last hour, per day (0 in the first minute).",
	}, func() float64 {
		st, _ := m.status()
		if st.WriteBytesPerDay == nil {
			return 0
		}
		return *st.WriteBytesPerDay
	}))
	if m.endurance > 0 {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ferry_storage_projected_life_days",
			Help: "storage.endurance divided by ferry_storage_write_bytes_per_day: the medium's life at the current rate (-1 while unknown).",
		}, func() float64 {
			st, _ := m.status()
			if st.ProjectedLifeDays == nil {
				return -1
			}
			return *st.ProjectedLifeDays
		}))
	}
}
