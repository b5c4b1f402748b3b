package main

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

// logCollector exports the log's per-topic and per-partition state at
// scrape time, so topics created later are included without registration.
type logCollector struct{ log *commitlog.Log }

var (
	descLogBytes = prometheus.NewDesc("ferry_log_bytes", "Bytes stored per log topic.", []string{"topic"}, nil)
	descEndOff   = prometheus.NewDesc("ferry_log_end_offset", "Next offset per partition (high watermark).", []string{"topic", "partition"}, nil)
	descStartOff = prometheus.NewDesc("ferry_log_start_offset", "First stored offset per partition.", []string{"topic", "partition"}, nil)
	descDropped  = prometheus.NewDesc("ferry_log_dropped_records_total", "Records deleted by size or free-disk limits (on_full=overwrite_oldest).", []string{"topic"}, nil)
	descExpired  = prometheus.NewDesc("ferry_log_expired_records_total", "Records deleted by age retention.", []string{"topic"}, nil)
	descRejected = prometheus.NewDesc("ferry_log_rejected_appends_total", "Appends refused by on_full=reject_new or during a full-disk spell.", []string{"topic"}, nil)
	descWritten  = prometheus.NewDesc("ferry_log_written_bytes_total", "Bytes written to segment files.", nil, nil)
	descSyncs    = prometheus.NewDesc("ferry_log_fsync_rounds_total", "fsync rounds (commit cycles that needed one).", nil, nil)
	descDiskLow  = prometheus.NewDesc("ferry_log_disk_low", "1 while the filesystem is below log.min_free_ratio.", nil, nil)
	descOpenSeg  = prometheus.NewDesc("ferry_log_open_sealed_files", "Sealed segment files open now (bounded by log.max_open_segments).", nil, nil)
	descSegClose = prometheus.NewDesc("ferry_log_sealed_file_closes_total", "Sealed segment files closed to stay within log.max_open_segments.", nil, nil)
	descStorErr  = prometheus.NewDesc("ferry_log_partition_failed", "1 for a partition whose fsync (or a write other than to a full disk) failed (read-only until restart).", []string{"topic", "partition"}, nil)
	descDiskFull = prometheus.NewDesc("ferry_log_disk_full", "1 while appends are refused because the disk is full (a write found no room).", nil, nil)
	descFullSpel = prometheus.NewDesc("ferry_log_disk_full_spells_total", "Spells of a full disk (appends refused until space returned).", nil, nil)
	descFullWr   = prometheus.NewDesc("ferry_log_disk_full_writes_total", "Writes that found no room on the disk, each truncated back and undone.", nil, nil)
	descDamaged  = prometheus.NewDesc("ferry_log_damage_total", "Damage found in segments (at open or by reads) and passed over.", nil, nil)
	descDmgOffs  = prometheus.NewDesc("ferry_log_damaged_offsets_total", "Offsets made unreadable by damage on disk.", nil, nil)
	descIdxReb   = prometheus.NewDesc("ferry_log_index_rebuilds_total", "Segment indexes rebuilt because they were missing or wrong.", nil, nil)
	descRepairs  = prometheus.NewDesc("ferry_log_repairs_total", "What the log repaired, passed over or left alone, by kind (damage, truncated, index_rebuilt, gap, stray_segment, leftover, not_ours, metadata); /healthz lists each.", []string{"kind"}, nil)
)

func (c *logCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLogBytes, descEndOff, descStartOff, descDropped, descExpired,
		descRejected, descWritten, descSyncs, descDiskLow, descStorErr, descOpenSeg, descSegClose,
		descDiskFull, descFullSpel, descFullWr, descDamaged, descDmgOffs, descIdxReb, descRepairs} {
		ch <- d
	}
}

func (c *logCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.log.Stats()
	ch <- prometheus.MustNewConstMetric(descWritten, prometheus.CounterValue, float64(st.BytesWritten))
	ch <- prometheus.MustNewConstMetric(descSyncs, prometheus.CounterValue, float64(st.Syncs))
	low := 0.0
	if st.DiskLow {
		low = 1
	}
	ch <- prometheus.MustNewConstMetric(descDiskLow, prometheus.GaugeValue, low)
	full := 0.0
	if st.DiskFull {
		full = 1
	}
	ch <- prometheus.MustNewConstMetric(descDiskFull, prometheus.GaugeValue, full)
	ch <- prometheus.MustNewConstMetric(descFullSpel, prometheus.CounterValue, float64(st.DiskFullSpells))
	ch <- prometheus.MustNewConstMetric(descFullWr, prometheus.CounterValue, float64(st.DiskFullWrites))
	ch <- prometheus.MustNewConstMetric(descDamaged, prometheus.CounterValue, float64(st.DamagedSegments))
	ch <- prometheus.MustNewConstMetric(descDmgOffs, prometheus.CounterValue, float64(st.DamagedOffsets))
	ch <- prometheus.MustNewConstMetric(descIdxReb, prometheus.CounterValue, float64(st.IndexRebuilds))
	for _, kind := range []string{commitlog.RepairDamage, commitlog.RepairTruncated, commitlog.RepairIndexRebuilt, commitlog.RepairGap,
		commitlog.RepairStray, commitlog.RepairLeftover, commitlog.RepairForeign, commitlog.RepairMetadata} {
		ch <- prometheus.MustNewConstMetric(descRepairs, prometheus.CounterValue, float64(st.Repairs[kind]), kind)
	}
	ch <- prometheus.MustNewConstMetric(descOpenSeg, prometheus.GaugeValue, float64(st.OpenSealedFiles))
	ch <- prometheus.MustNewConstMetric(descSegClose, prometheus.CounterValue, float64(st.SealedFileCloses))
	for _, t := range c.log.Topics() {
		var bytes int64
		for _, p := range t.Partitions() {
			part := strconv.Itoa(int(p.ID()))
			bytes += p.Size()
			ch <- prometheus.MustNewConstMetric(descEndOff, prometheus.GaugeValue, float64(p.HighWatermark()), t.Name(), part)
			ch <- prometheus.MustNewConstMetric(descStartOff, prometheus.GaugeValue, float64(p.StartOffset()), t.Name(), part)
			failed := 0.0
			if p.Err() != nil {
				failed = 1
			}
			ch <- prometheus.MustNewConstMetric(descStorErr, prometheus.GaugeValue, failed, t.Name(), part)
		}
		ts := t.Stats()
		ch <- prometheus.MustNewConstMetric(descLogBytes, prometheus.GaugeValue, float64(bytes), t.Name())
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(ts.DroppedRecords), t.Name())
		ch <- prometheus.MustNewConstMetric(descExpired, prometheus.CounterValue, float64(ts.ExpiredRecords), t.Name())
		ch <- prometheus.MustNewConstMetric(descRejected, prometheus.CounterValue, float64(ts.Rejected), t.Name())
	}
}

// apiMetrics counts HTTP API requests.
type apiMetrics struct {
	requests *prometheus.CounterVec
}

func newAPIMetrics(reg prometheus.Registerer) *apiMetrics {
	m := &apiMetrics{requests: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ferry_http_requests_total", Help: "HTTP API requests, by route and status code.",
	}, []string{"route", "code"})}
	reg.MustRegister(m.requests)
	return m
}
