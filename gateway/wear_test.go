package main

import (
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestWearMeterProjectsLife: the rate comes from the samples of the last
// hour, the projection from storage.endurance; a projection under a year
// is logged once (not at every sample) and listed, and a rate that falls
// again clears it.
func TestWearMeterProjectsLife(t *testing.T) {
	var logged strings.Builder
	m := newWearMeter(100e9, slog.New(slog.NewTextHandler(&logged, nil))) // a 100 GB card
	now := time.Unix(1_800_000_000, 0)
	written := int64(0)
	m.now = func() time.Time { return now }
	m.readIO = func() (int64, error) { return written, nil }

	m.sample()
	if st, w := m.status(); st.WriteBytesPerDay != nil || st.ProjectedLifeDays != nil || w != "" {
		t.Fatalf("a rate before a minute of samples: %+v %q", st, w)
	}
	for range 12 { // 2 minutes at 1 GB a minute: 1,440 GB a day, the card lasts 0.07 days
		now = now.Add(wearSample)
		written += 1_000_000_000 / 6
		m.sample()
	}
	st, warning := m.status()
	if st.WriteBytesPerDay == nil || *st.WriteBytesPerDay < 1.43e12 || *st.WriteBytesPerDay > 1.45e12 {
		t.Fatalf("rate: %+v", st)
	}
	if st.ProjectedLifeDays == nil || *st.ProjectedLifeDays > 0.07 || *st.ProjectedLifeDays < 0.069 {
		t.Fatalf("projection: %+v", st)
	}
	if st.WrittenBytes != written || st.EnduranceBytes != 100e9 {
		t.Fatalf("status: %+v", st)
	}
	if !strings.Contains(warning, "lasts 0 days") {
		t.Fatalf("warning line: %q", warning)
	}
	if warns := strings.Count(logged.String(), "level=WARN msg=\"at the current write rate"); warns != 1 {
		t.Fatalf("%d warnings for one spell, want 1:\n%s", warns, logged.String())
	}
	for range 2 * int(wearWindow/wearSample) { // two quiet hours: the old samples leave the window
		now = now.Add(wearSample)
		m.sample()
	}
	if st, w := m.status(); w != "" || st.ProjectedLifeDays != nil {
		t.Fatalf("after the writes stopped: %+v %q", st, w)
	}
	if !strings.Contains(logged.String(), "level=INFO msg=\"the storage's projected life is a year or more again") {
		t.Fatalf("no all-clear:\n%s", logged.String())
	}
}

// TestWearInHealthzAndMetrics: the daemon exports what it wrote and the
// configured endurance.
func TestWearInHealthzAndMetrics(t *testing.T) {
	d := startDaemon(t, "", "storage: {endurance: 20TB}\n")
	var h struct {
		Storage map[string]any `json:"storage"`
	}
	if code := d.api("GET", "/healthz", nil, &h); code != 200 {
		t.Fatalf("healthz: %d", code)
	}
	if h.Storage["endurance_bytes"] != 20e12 {
		t.Fatalf("healthz storage: %v", h.Storage)
	}
	if _, ok := h.Storage["written_bytes"]; !ok {
		t.Fatalf("healthz storage without written_bytes: %v", h.Storage)
	}
	d.metric("ferry_storage_written_bytes_total")
	d.metric("ferry_storage_write_bytes_per_day")
	if v := d.metric("ferry_storage_projected_life_days"); v != -1 {
		t.Fatalf("projected life before a minute of samples: %v, want -1", v)
	}
}
