package daemon

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the daemon's own Prometheus series (prefix profilemate_daemon_). No series is
// labelled by pid or pod: per-capture detail lives in the capture index, not in metrics.
type metrics struct {
	reg             *prometheus.Registry
	captures        *prometheus.CounterVec // result: done, failed, refused_busy, refused_limit
	running         prometheus.Gauge
	bundleBytes     prometheus.Counter
	records         prometheus.Counter
	drops           prometheus.Counter
	attachFailures  *prometheus.CounterVec // reason
	stopToBundle    prometheus.Histogram
	storedBytes     prometheus.Gauge
	storedCaptures  prometheus.Gauge
	retentionDelete *prometheus.CounterVec // reason: size, age
	processes       *prometheus.GaugeVec   // kind: all, agent, hook, roots
	processEvents   *prometheus.CounterVec // event: appeared, exited
	scheduleSkips   prometheus.Counter
	requests        *prometheus.CounterVec // code
	overheadSec     prometheus.Counter
	overheadRatio   prometheus.Gauge
}

func newMetrics() *metrics {
	r := prometheus.NewRegistry()
	m := &metrics{reg: r}
	ns := "profilemate_daemon"
	m.captures = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "captures_total",
		Help: "Capture requests by result: done, failed, refused_busy (409), refused_limit (429)."}, []string{"result"})
	m.running = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "captures_running", Help: "Captures in progress."})
	m.bundleBytes = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "bundle_bytes_total", Help: "Bytes of bundles written."})
	m.records = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "records_total", Help: "Records collected from agent, hook and eBPF streams."})
	m.drops = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "dropped_records_total",
		Help: "Records lost during captures (ring full, plus CUPTI's own drops), as reported in metadata.json drops."})
	m.attachFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "attach_failures_total",
		Help: "Captures that failed to attach or to write their session, by reason."}, []string{"reason"})
	m.stopToBundle = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "stop_to_bundle_seconds",
		Help: "Time from the end of a capture window to its bundle on disk.", Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 5, 10, 30}})
	m.storedBytes = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "stored_bytes", Help: "Bytes held in the bundle directory."})
	m.storedCaptures = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "stored_captures", Help: "Captures held in the bundle directory."})
	m.retentionDelete = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "retention_deleted_total",
		Help: "Captures removed by retention, by reason (size, age)."}, []string{"reason"})
	m.processes = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "processes",
		Help: "vLLM processes on the node by kind: all, agent (CUPTI agent ring found), hook (Python hook ring found), roots (process trees)."}, []string{"kind"})
	m.processEvents = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "process_events_total",
		Help: "vLLM processes that appeared or exited."}, []string{"event"})
	m.scheduleSkips = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "schedule_skipped_total",
		Help: "Periodic windows not started because the process tree was busy or the limit was reached."})
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "http_requests_total",
		Help: "API requests by status code."}, []string{"code"})
	m.overheadSec = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "estimated_target_cpu_seconds_total",
		Help: "Estimated CPU time the traced processes spent producing records: records x --overhead-per-record (an estimate from the design budget, not a measurement)."})
	m.overheadRatio = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "last_capture_estimated_overhead_ratio",
		Help: "Estimated producer CPU of the last capture divided by its wall time and process count (estimate, see estimated_target_cpu_seconds_total)."})
	r.MustRegister(m.captures, m.running, m.bundleBytes, m.records, m.drops, m.attachFailures, m.stopToBundle,
		m.storedBytes, m.storedCaptures, m.retentionDelete, m.processes, m.processEvents, m.scheduleSkips, m.requests,
		m.overheadSec, m.overheadRatio,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, r := range []string{"done", "failed", "refused_busy", "refused_limit"} {
		m.captures.WithLabelValues(r)
	}
	return m
}
