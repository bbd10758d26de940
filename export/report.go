package export

import (
	"fmt"
	"html"
	"io"
	"math"
	"sort"
	"strings"
	"time"
)

// WriteReport writes one self-contained HTML report of the session: inline CSS and SVG,
// no script, nothing fetched at view time.
func WriteReport(s *Session, w io.Writer) error {
	r := &reporter{s: s, j: s.join()}
	r.build()
	_, err := io.WriteString(w, r.b.String())
	return err
}

// WriteReportFile writes the report to path through a temporary file.
func WriteReportFile(s *Session, path string) error {
	return writeFileAtomic(path, func(w io.Writer) error { return WriteReport(s, w) })
}

type reporter struct {
	s    *Session
	j    *join
	b    strings.Builder
	recs []rec
}

type rec struct {
	level string // bad, warn, good
	text  string
}

var palette = map[string]string{
	CatAttention: "#4e79a7", CatFFN: "#f28e2b", CatMoE: "#e15759", CatCommunication: "#76b7b2", CatOther: "#bab0ac",
	CatGraph: "#59a14f", CatMemcpy: "#edc948", CatMemset: "#b07aa1", "prefill": "#4e79a7", "decode": "#f28e2b", "mixed": "#76b7b2",
}

func colorOf(k string, i int) string {
	if c, ok := palette[k]; ok {
		return c
	}
	cs := []string{"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"}
	return cs[i%len(cs)]
}

const css = `body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}header p{margin:4px 0 0;color:#c8cdd8;font-size:13px}
main{max-width:1180px;margin:0 auto;padding:16px 24px 48px}
section{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:16px 20px;margin:16px 0}
h2{font-size:17px;margin:0 0 10px}h3{font-size:14px;margin:14px 0 6px;color:#444}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}td,th{border-bottom:1px solid #eceef2;padding:4px 10px;text-align:right}
th{background:#f3f4f7;font-weight:600}td:first-child,th:first-child{text-align:left}
.missing{color:#7a5b00;background:#fff8e1;border:1px solid #f3d98b;border-radius:6px;padding:8px 12px;font-size:13px}
.rec{padding:6px 10px;border-radius:6px;margin:4px 0;font-size:13.5px}.bad{background:#fdecea;border-left:4px solid #d93025}
.warn{background:#fff8e1;border-left:4px solid #f9ab00}.good{background:#e6f4ea;border-left:4px solid #188038}
.kpis{display:flex;flex-wrap:wrap;gap:12px}.kpi{background:#f3f4f7;border-radius:6px;padding:8px 14px;min-width:140px}
.kpi b{display:block;font-size:20px}.kpi span{font-size:12px;color:#555}
nav a{color:#c8cdd8;margin-right:12px;font-size:13px}svg{max-width:100%;height:auto}
.note{font-size:12px;color:#666}code{background:#f3f4f7;padding:1px 4px;border-radius:3px}`

func (r *reporter) w(format string, a ...any) { fmt.Fprintf(&r.b, format, a...) }

func esc(s string) string { return html.EscapeString(s) }

func (r *reporter) missing(what, how string) {
	r.w(`<p class="missing"><b>No data:</b> %s. %s</p>`, esc(what), esc(how))
}

func (r *reporter) kpi(v, label string) {
	r.w(`<div class="kpi"><b>%s</b><span>%s</span></div>`, esc(v), esc(label))
}

func (r *reporter) build() {
	s := r.s
	var body strings.Builder
	// sections render into r.b; recommendations are collected while rendering, then the
	// page is assembled with them at the top.
	sections := []struct {
		id, title string
		fn        func()
	}{
		{"forward", "Prefill / decode (GPU time per forward pass)", r.forward},
		{"components", "Attention vs FFN vs MoE vs communication", r.components},
		{"graphs", "CUDA-graph coverage", r.graphs},
		{"kv", "KV cache usage", r.kvSection},
		{"moe", "MoE experts", r.moeSection},
		{"cpu", "CPU overhead", r.cpu},
		{"batch", "Batch utilization", r.batch},
		{"preempt", "Preemptions and requests", r.preempt},
		{"kernels", "Top kernels", r.kernels},
	}
	for _, sec := range sections {
		r.b.Reset()
		r.w(`<section id="%s"><h2>%s</h2>`, sec.id, esc(sec.title))
		sec.fn()
		r.w(`</section>`)
		body.WriteString(r.b.String())
	}
	r.b.Reset()
	r.w(`<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">`)
	r.w(`<title>profilemate-trace report: %s</title><style>%s</style></head><body>`, esc(s.Name), css)
	r.w(`<header><h1>profilemate-trace report</h1><p>%s · %s</p><nav>`, esc(s.Name), esc(r.sessionLine()))
	for _, sec := range sections {
		r.w(`<a href="#%s">%s</a>`, sec.id, esc(strings.SplitN(sec.title, " (", 2)[0]))
	}
	r.w(`</nav></header><main>`)
	r.w(`<section id="summary"><h2>Recommendations</h2>`)
	if len(r.recs) == 0 {
		r.w(`<p class="note">Nothing outside the documented health ranges in the data present.</p>`)
	}
	order := map[string]int{"bad": 0, "warn": 1, "good": 2}
	sort.SliceStable(r.recs, func(i, k int) bool { return order[r.recs[i].level] < order[r.recs[k].level] })
	for _, x := range r.recs {
		r.w(`<div class="rec %s">%s</div>`, x.level, esc(x.text))
	}
	r.sources()
	r.w(`</section>`)
	r.b.WriteString(body.String())
	r.w(`<p class="note">Generated by profilemate-trace from the raw streams of %s. Health ranges are the original ProfileMate documentation's; GPU times come from CUPTI records joined by correlation id.</p>`, esc(s.Name))
	r.w(`</main></body></html>`)
}

func (r *reporter) sessionLine() string {
	s := r.s
	parts := []string{}
	if v, ok := s.Metadata["duration_sec"].(float64); ok {
		parts = append(parts, fmt.Sprintf("%.1f s", v))
	}
	if v, ok := s.Metadata["start_time"].(string); ok {
		parts = append(parts, v)
	}
	if g, ok := s.Metadata["gpu"].(map[string]any); ok {
		if devs, ok := g["devices"].([]any); ok && len(devs) > 0 {
			if d, ok := devs[0].(map[string]any); ok {
				parts = append(parts, fmt.Sprintf("%d× %v", len(devs), d["name"]))
			}
		}
	}
	parts = append(parts, fmt.Sprintf("%d streams", len(s.Streams)))
	return strings.Join(parts, " · ")
}

func (r *reporter) sources() {
	have := map[string]int{}
	events := 0
	for _, st := range r.s.Streams {
		have[st.Meta.Source] += st.Events
		events += st.Events
	}
	r.w(`<h3>Sources</h3><table><tr><th>source</th><th>records</th><th>status</th></tr>`)
	for _, src := range []string{"cupti", "pyhook", "ebpf"} {
		st := "captured"
		if have[src] == 0 {
			st = map[string]string{
				"cupti":  "missing: GPU times unknown. Run under `profilemate-trace run` (preloads the agent) or preload libprofilemate.so before attach",
				"pyhook": "missing: no vLLM meaning (descriptors, KV, experts, steps). Run under `profilemate-trace run` or put the hook on PYTHONPATH",
				"ebpf":   "missing: no launch attribution to Python phases. Run as root (or with CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE)",
			}[src]
		}
		r.w(`<tr><td>%s</td><td>%d</td><td style="text-align:left">%s</td></tr>`, src, have[src], esc(st))
	}
	r.w(`</table>`)
	if line := injectionLine(r.s.Metadata); line != "" {
		r.w(`<p class="note">%s</p>`, esc(line))
	}
	if d, ok := r.s.Metadata["drops"].(map[string]any); ok {
		if t, _ := d["total"].(float64); t > 0 {
			r.recs = append(r.recs, rec{"bad", fmt.Sprintf("%.0f records were dropped during capture (metadata.json drops): totals below undercount; enlarge the rings or sample kernel detail", t)})
		}
	}
	if len(r.s.Warnings) > 0 {
		r.w(`<h3>Warnings</h3><ul>`)
		for i, w := range r.s.Warnings {
			if i == 20 {
				r.w(`<li>… %d more</li>`, len(r.s.Warnings)-20)
				break
			}
			r.w(`<li>%s</li>`, esc(w))
		}
		r.w(`</ul>`)
	}
}

// ---- charts (inline SVG) ----

type bar struct {
	label string
	value float64
	color string
	note  string
}

func (r *reporter) hbars(bars []bar, unit string, refLine float64, refLabel string) {
	if len(bars) == 0 {
		return
	}
	const lw, bw, rowH, rm = 300, 480, 22, 300
	max := refLine
	for _, b := range bars {
		max = math.Max(max, b.value)
	}
	if max <= 0 || math.IsInf(max, 0) {
		max = 1
	}
	h := rowH*len(bars) + 24
	r.w(`<svg viewBox="0 0 %d %d" width="%d" height="%d" role="img">`, lw+bw+rm, h, lw+bw+rm, h)
	for i, b := range bars {
		y := 4 + i*rowH
		v := b.value
		if math.IsInf(v, 0) || math.IsNaN(v) {
			v = max
		}
		width := bw * v / max
		r.w(`<text x="%d" y="%d" font-size="12" text-anchor="end">%s</text>`, lw-6, y+14, esc(trunc(b.label, 48)))
		r.w(`<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"><title>%s: %s %s</title></rect>`, lw, y+2, width, rowH-6, b.color, esc(b.label), fmtNum(b.value), esc(unit))
		txt := fmtNum(b.value) + " " + unit
		if b.note != "" {
			txt += " · " + b.note
		}
		r.w(`<text x="%.1f" y="%d" font-size="11" fill="#333">%s</text>`, float64(lw)+width+4, y+14, esc(txt))
	}
	if refLine > 0 {
		x := float64(lw) + bw*refLine/max
		r.w(`<line x1="%.1f" x2="%.1f" y1="0" y2="%d" stroke="#d93025" stroke-dasharray="4 3"/><text x="%.1f" y="%d" font-size="11" fill="#d93025">%s</text>`, x, x, h-14, x+3, h-3, esc(refLabel))
	}
	r.w(`</svg>`)
}

func trunc(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func fmtNum(v float64) string {
	switch {
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return fmt.Sprintf("%.0f", v)
	case math.IsInf(v, 1):
		return "∞"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

type series struct {
	name  string
	color string
	x, y  []float64
	dots  bool
}

type band struct {
	lo, hi float64
	color  string
	label  string
}

// lineChart draws series over time (x in seconds); yMax 0 = auto.
func (r *reporter) lineChart(ss []series, yLabel string, yMax float64, bands []band) {
	const W, H, L, B, T, R = 900, 260, 60, 30, 10, 20
	xmin, xmax, ymax := math.Inf(1), math.Inf(-1), yMax
	for _, s := range ss {
		for i := range s.x {
			xmin, xmax = math.Min(xmin, s.x[i]), math.Max(xmax, s.x[i])
			if yMax == 0 {
				ymax = math.Max(ymax, s.y[i])
			}
		}
	}
	if math.IsInf(xmin, 0) {
		return
	}
	if xmax <= xmin {
		xmax = xmin + 1
	}
	if ymax <= 0 {
		ymax = 1
	}
	px := func(x float64) float64 { return L + (x-xmin)/(xmax-xmin)*(W-L-R) }
	py := func(y float64) float64 { return H - B - y/ymax*(H-B-T) }
	r.w(`<svg viewBox="0 0 %d %d" width="%d" height="%d" role="img">`, W, H, W, H)
	for _, bd := range bands {
		r.w(`<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="%s" opacity="0.18"><title>%s</title></rect>`, L, py(math.Min(bd.hi, ymax)), W-L-R, py(bd.lo)-py(math.Min(bd.hi, ymax)), bd.color, esc(bd.label))
	}
	for i := 0; i <= 4; i++ {
		y := ymax * float64(i) / 4
		r.w(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#e3e5ea"/><text x="%d" y="%.1f" font-size="11" text-anchor="end">%s</text>`, L, W-R, py(y), py(y), L-4, py(y)+4, fmtNum(y))
		x := xmin + (xmax-xmin)*float64(i)/4
		r.w(`<text x="%.1f" y="%d" font-size="11" text-anchor="middle">%s s</text>`, px(x), H-10, fmtNum(x))
	}
	r.w(`<text x="12" y="%d" font-size="11" transform="rotate(-90 12 %d)" text-anchor="middle">%s</text>`, H/2, H/2, esc(yLabel))
	for _, s := range ss {
		step := 1
		if len(s.x) > 3000 {
			step = len(s.x) / 3000
		}
		if s.dots {
			for i := 0; i < len(s.x); i += step {
				r.w(`<circle cx="%.1f" cy="%.1f" r="1.8" fill="%s"/>`, px(s.x[i]), py(math.Min(s.y[i], ymax)), s.color)
			}
		} else {
			var pts strings.Builder
			for i := 0; i < len(s.x); i += step {
				fmt.Fprintf(&pts, "%.1f,%.1f ", px(s.x[i]), py(math.Min(s.y[i], ymax)))
			}
			r.w(`<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, s.color, pts.String())
		}
	}
	lx := L + 10
	for _, s := range ss {
		r.w(`<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d" font-size="11">%s</text>`, lx, T+2, s.color, lx+14, T+11, esc(s.name))
		lx += 24 + 7*len(s.name)
	}
	r.w(`</svg>`)
}

// ---- sections ----

func (r *reporter) forward() {
	var steps []*fwdStep
	for _, pid := range r.j.pids {
		p := r.j.procs[pid]
		for i := range p.fwd {
			steps = append(steps, &p.fwd[i])
		}
	}
	if len(steps) == 0 {
		r.missing("no forward passes recorded (py_forward)", "The Python hook's model-runner patch records every execute_model call; run vLLM under `profilemate-trace run` with ENABLE_FORWARD_PASS_TIMING on (the default).")
		return
	}
	type acc struct {
		gpu, cpu []float64
		ns       uint64
		x, y     []float64
	}
	by := map[string]*acc{}
	var total uint64
	joined := 0
	for _, f := range steps {
		ph := phaseName(int(f.rec.Phase))
		a := by[ph]
		if a == nil {
			a = &acc{}
			by[ph] = a
		}
		a.cpu = append(a.cpu, float64(f.rec.EndNS-min(f.rec.EndNS, f.rec.StartNS))/1e3)
		if f.items > 0 {
			joined++
			a.gpu = append(a.gpu, float64(f.busy)/1e3)
			a.ns += f.busy
			total += f.busy
			a.x = append(a.x, r.s.Sec(f.rec.StartNS))
			a.y = append(a.y, float64(f.busy)/1e3)
		}
	}
	if joined == 0 {
		r.missing(fmt.Sprintf("%d forward passes recorded but no GPU records joined to them", len(steps)),
			"GPU time needs the CUPTI agent with api records (run under `profilemate-trace run`, or preload libprofilemate.so before `attach`). CPU times are shown instead.")
	}
	r.w(`<table><tr><th>phase</th><th>steps</th><th>GPU P50 µs</th><th>GPU P95 µs</th><th>GPU P99 µs</th><th>GPU mean µs</th><th>share of GPU time</th><th>CPU (execute_model) P50 µs</th></tr>`)
	var bars []bar
	for _, ph := range []string{"prefill", "decode", "mixed", "empty"} {
		a := by[ph]
		if a == nil {
			continue
		}
		g, c := statsOf(a.gpu), statsOf(a.cpu)
		share := rate(100*float64(a.ns), float64(total))
		r.w(`<tr><td>%s</td><td>%d</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%.1f%%</td><td>%s</td></tr>`, ph, len(a.cpu), fmtNum(g.P50), fmtNum(g.P95), fmtNum(g.P99), fmtNum(g.Mean), share, fmtNum(c.P50))
		if a.ns > 0 {
			bars = append(bars, bar{ph, float64(a.ns) / 1e6, colorOf(ph, 0), fmt.Sprintf("%.1f%%", share)})
		}
	}
	r.w(`</table>`)
	r.w(`<h3>GPU time by phase</h3>`)
	r.hbars(bars, "ms", 0, "")
	var ss []series
	for _, ph := range []string{"prefill", "decode", "mixed"} {
		if a := by[ph]; a != nil && len(a.x) > 0 {
			ss = append(ss, series{name: ph, color: colorOf(ph, 0), x: a.x, y: a.y, dots: true})
		}
	}
	if len(ss) > 0 {
		r.w(`<h3>GPU time per step over time (µs)</h3>`)
		r.lineChart(ss, "GPU µs per step", 0, nil)
	}
	r.w(`<p class="note">GPU time of a step = union of the GPU intervals of the work its execute_model call launched (joined by correlation id), not CPU wall time.</p>`)
}

func (r *reporter) components() {
	by, cats := categories(r.s)
	if len(by["all"]) == 0 {
		r.missing("no GPU records", "Kernel timing comes from the CUPTI agent: run under `profilemate-trace run`.")
		return
	}
	for _, ph := range []string{"all", "prefill", "decode"} {
		m := by[ph]
		if m == nil {
			continue
		}
		var tot uint64
		for _, a := range m {
			tot += a.ns
		}
		var bars []bar
		for i, c := range cats {
			if a := m[c]; a != nil && a.ns > 0 {
				bars = append(bars, bar{c, float64(a.ns) / 1e6, colorOf(c, i), fmt.Sprintf("%.1f%%", 100*float64(a.ns)/float64(tot))})
			}
		}
		r.w(`<h3>%s</h3>`, esc(map[string]string{"all": "All GPU time", "prefill": "Prefill steps", "decode": "Decode steps"}[ph]))
		r.hbars(bars, "ms", 0, "")
	}
	if a := by["all"][CatGraph]; a != nil && a.ns > 0 {
		r.w(`<p class="note"><code>cuda_graph</code>: whole-graph replays recorded at <code>--detail graph</code>; their kernels are not recorded one by one. Capture a bounded window with <code>--detail nodes</code> to split graph time into attention/FFN/MoE.</p>`)
	}
	r.w(`<p class="note">Classification by kernel name (first matching rule): communication, moe, attention, ffn (GEMMs, including QKV/output projections, and activations), else other. Override with a rules file: <code>%s=FILE</code> or <code>--kernel-classes FILE</code>.</p>`, KernelRulesEnv)
}

func (r *reporter) graphs() {
	cov := coverage(r.s)
	if cov.Replays == 0 && cov.EagerGPUTimeUs == 0 {
		r.missing("no CUDA-graph replays or kernels recorded", "Graph replays come from the CUPTI agent's graph trace (`--detail graph`, the default).")
		return
	}
	r.w(`<div class="kpis">`)
	r.kpi(fmt.Sprintf("%.1f%%", cov.GPUTimeUnderGraphsPct), "GPU time under CUDA graphs")
	if cov.Steps > 0 {
		r.kpi(fmt.Sprintf("%.1f%%", cov.StepsUnderGraphsPct), fmt.Sprintf("steps under graphs (%d of %d)", cov.StepsUnderGraphs, cov.Steps))
	}
	r.kpi(fmt.Sprintf("%d", cov.Replays), "graph replays")
	r.w(`</div>`)
	if cov.Steps == 0 {
		r.w(`<p class="note">Step coverage needs the Python hook's forward-pass records.</p>`)
	}
	if cov.Steps > 0 && cov.StepsUnderGraphsPct < 50 {
		r.recs = append(r.recs, rec{"warn", fmt.Sprintf("Only %.0f%% of forward passes ran under CUDA graphs: check cudagraph_capture_sizes / max_cudagraph_capture_size cover your batch sizes (cuda_graph_usage.csv, forward_pass_timing.csv num_tokens)", cov.StepsUnderGraphsPct)})
	}
	if len(cov.HotGraphs) > 0 {
		var bars []bar
		for i, h := range cov.HotGraphs {
			bars = append(bars, bar{fmt.Sprintf("%s (graph %d)", h.Descriptor, h.GraphID), float64(h.Replays), colorOf("", i), fmt.Sprintf("%.1f%% · %.0f µs GPU", h.ReplayPct, h.GPUTimeUs)})
		}
		r.w(`<h3>Hot graphs (runtime_mode,num_tokens,num_reqs,uniform,has_lora)</h3>`)
		r.hbars(bars, "replays", 0, "")
		if cov.HotGraphs[0].ReplayPct > 80 {
			r.recs = append(r.recs, rec{"good", fmt.Sprintf("One CUDA graph (%s) takes %.0f%% of replays: the workload is uniform", cov.HotGraphs[0].Descriptor, cov.HotGraphs[0].ReplayPct)})
		}
	}
}

func (r *reporter) kvSection() {
	kv := r.s.kv()
	if len(kv.samples) == 0 {
		r.missing("no KV cache usage samples", "The Python hook records BlockPool activity (ENABLE_KV_CACHE_TRACKING); run vLLM V1 under `profilemate-trace run`.")
		return
	}
	byPool := map[kvPoolKey]*series{}
	var keys []kvPoolKey
	var u []float64
	for _, x := range kv.samples {
		sr := byPool[x.key]
		if sr == nil {
			sr = &series{name: fmt.Sprintf("pool %d (pid %d)", x.key.pool, x.key.pid), color: colorOf("", len(keys))}
			byPool[x.key] = sr
			keys = append(keys, x.key)
		}
		sr.x = append(sr.x, r.s.Sec(x.ts))
		sr.y = append(sr.y, x.pct())
		u = append(u, x.pct())
	}
	st := statsOf(u)
	r.w(`<div class="kpis">`)
	r.kpi(fmt.Sprintf("%.1f%%", st.Mean), "mean usage")
	r.kpi(fmt.Sprintf("%.1f%%", st.Max), "peak usage")
	r.kpi(fmt.Sprintf("%d", len(kv.evictions)+kv.unknown), "evictions")
	r.kpi(fmt.Sprintf("%d", kv.hits), "prefix-cache block hits")
	r.w(`</div>`)
	var ss []series
	for _, k := range keys {
		ss = append(ss, *byPool[k])
	}
	r.lineChart(ss, "usage %", 100, []band{{60, 80, "#188038", "60-80%: good balance"}, {90, 100, "#d93025", ">90%: under-provisioned"}, {0, 40, "#f9ab00", "<40%: over-provisioned"}})
	v, why := kvUsageVerdict(st.Mean)
	lvl := map[string]string{"GOOD": "good", "OK": "warn", "UNDER-PROVISIONED": "bad", "OVER-PROVISIONED": "warn"}[v]
	r.recs = append(r.recs, rec{lvl, fmt.Sprintf("KV cache mean usage %.1f%% (peak %.1f%%): %s", st.Mean, st.Max, why)})
	if len(kv.evictions) > 0 {
		var lt, id []float64
		for _, e := range kv.evictions {
			lt = append(lt, float64(e.lifetime)/1e9)
			id = append(id, float64(e.idle)/1e9)
		}
		ls, is := statsOf(lt), statsOf(id)
		r.w(`<table><tr><th>evicted blocks</th><th>P50</th><th>P95</th><th>P99</th><th>healthy</th></tr>`)
		r.w(`<tr><td>lifetime s</td><td>%s</td><td>%s</td><td>%s</td><td>&gt; 10 s</td></tr>`, fmtNum(ls.P50), fmtNum(ls.P95), fmtNum(ls.P99))
		r.w(`<tr><td>idle s</td><td>%s</td><td>%s</td><td>%s</td><td>&lt; 5 s</td></tr></table>`, fmtNum(is.P50), fmtNum(is.P95), fmtNum(is.P99))
		if ls.P50 < 10 {
			r.recs = append(r.recs, rec{"warn", fmt.Sprintf("KV blocks are evicted after a median %.1f s (healthy > 10 s): high cache churn", ls.P50)})
		}
		if is.P50 >= 5 {
			r.recs = append(r.recs, rec{"warn", fmt.Sprintf("Evicted KV blocks sat idle a median %.1f s (healthy < 5 s)", is.P50)})
		}
	} else {
		r.w(`<p class="note">No evictions with a known lifetime (few evictions overall: good cache sizing).</p>`)
	}
}

func heatColor(v float64) string {
	// white -> dark red
	v = math.Max(0, math.Min(1, v))
	rr := 255
	g := int(255 - 200*v)
	b := int(255 - 220*v)
	return fmt.Sprintf("rgb(%d,%d,%d)", rr, g, b)
}

func (r *reporter) moeSection() {
	m := r.s.moe()
	var layers []*moeLayer
	for _, l := range m.layers {
		if len(l.counts) > 0 {
			layers = append(layers, l)
		}
	}
	if len(layers) == 0 && len(moeUnavailable(r.s)) > 0 {
		var why []string
		for _, p := range moeUnavailable(r.s) {
			why = append(why, moeNote(p))
		}
		r.missing("MoE expert counts unavailable", strings.Join(why, "; ")+".")
		return
	}
	if len(layers) == 0 {
		r.missing("no MoE expert counts", "The model has no MoE layers, or the hook's expert counters are off (ENABLE_MOE_EXPERT_TRACKING): they count expert ids on the GPU inside the CUDA graphs and read them back periodically.")
		return
	}
	maxE := 0
	for _, l := range layers {
		maxE = max(maxE, len(l.counts))
	}
	cell := math.Max(4, math.Min(48, 800/float64(maxE)))
	rowH := math.Max(6, math.Min(24, 500/float64(len(layers))))
	W := 60 + cell*float64(maxE) + 10
	H := 20 + rowH*float64(len(layers)) + 20
	r.w(`<h3>Expert activation share per layer (heatmap; darker = more; relative to a balanced share)</h3>`)
	r.w(`<svg viewBox="0 0 %.0f %.0f" width="%.0f" height="%.0f" role="img">`, W, H, W, H)
	var bars []bar
	unhealthy := 0
	for i, l := range layers {
		var tot uint64
		mn, mx := uint64(math.MaxUint64), uint64(0)
		for _, c := range l.counts {
			tot += c
			mn, mx = min(mn, c), max(mx, c)
		}
		y := 20 + rowH*float64(i)
		if len(layers) <= 64 || i%4 == 0 {
			r.w(`<text x="56" y="%.1f" font-size="%.0f" text-anchor="end">L%d</text>`, y+rowH-2, math.Min(11, rowH), l.layer)
		}
		fair := float64(tot) / float64(len(l.counts))
		for e, c := range l.counts {
			v := 0.0
			if fair > 0 {
				v = float64(c) / fair / 2 // 2x the balanced share = darkest
			}
			r.w(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>layer %d expert %d: %d (%.2f%%)</title></rect>`,
				60+cell*float64(e), y, cell, rowH, heatColor(v), l.layer, e, c, 100*float64(c)/math.Max(1, float64(tot)))
		}
		ratio := math.Inf(1)
		if mn > 0 {
			ratio = float64(mx) / float64(mn)
		}
		if ratio >= 2 {
			unhealthy++
		}
		bars = append(bars, bar{fmt.Sprintf("layer %d", l.layer), math.Min(ratio, 20), map[bool]string{true: "#e15759", false: "#59a14f"}[ratio >= 2], map[bool]string{true: "never-selected expert: ∞", false: ""}[math.IsInf(ratio, 1)]})
	}
	r.w(`<text x="60" y="%.1f" font-size="11">expert id 0 … %d</text></svg>`, H-4, maxE-1)
	r.w(`<h3>Load balance ratio (max/min activations) per layer; healthy &lt; 2.0</h3>`)
	r.hbars(bars, "×", 2, "2.0")
	if unhealthy > 0 {
		r.recs = append(r.recs, rec{"warn", fmt.Sprintf("%d of %d MoE layers have a load balance ratio ≥ 2.0 (max/min expert activations): consider EPLB (expert-parallel load balancing) or check routing", unhealthy, len(layers))})
	} else {
		r.recs = append(r.recs, rec{"good", fmt.Sprintf("All %d MoE layers are balanced (max/min activations < 2.0)", len(layers))})
	}
}

func (r *reporter) cpu() {
	by := map[string][]float64{}
	for _, st := range r.s.Streams {
		for _, c := range st.CPUScopes {
			by[scopeName(c.Scope)] = append(by[scopeName(c.Scope)], float64(c.EndNS-min(c.EndNS, c.StartNS))/1e3)
		}
		for _, x := range st.BPFSyncs {
			by["gpu_sync_wait"] = append(by["gpu_sync_wait"], float64(x.EndNS-min(x.EndNS, x.StartNS))/1e3)
		}
	}
	if len(by) == 0 {
		r.missing("no CPU spans", "The hook's CPU timing patch (ENABLE_CPU_TIMING) records scheduling, input preparation, sampling and output processing; eBPF adds GPU sync waits.")
		return
	}
	names := make([]string, 0, len(by))
	for n := range by {
		names = append(names, n)
	}
	sort.Slice(names, func(i, k int) bool { return statsOf(by[names[i]]).Total > statsOf(by[names[k]]).Total })
	var bars []bar
	r.w(`<table><tr><th>operation</th><th>count</th><th>total ms</th><th>P50 µs</th><th>P95 µs</th><th>P99 µs</th></tr>`)
	for i, n := range names {
		st := statsOf(by[n])
		r.w(`<tr><td>%s</td><td>%d</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>`, esc(n), st.Count, fmtNum(st.Total/1e3), fmtNum(st.P50), fmtNum(st.P95), fmtNum(st.P99))
		if n != "engine_step" {
			bars = append(bars, bar{n, st.Total / 1e3, colorOf("", i), ""})
		}
	}
	r.w(`</table>`)
	r.hbars(bars, "ms", 0, "")
}

func (r *reporter) batch() {
	var x, tok, seq []float64
	under, queued, n := 0, 0, 0
	for _, st := range r.s.Streams {
		for _, s := range st.SchedSteps {
			if s.ScheduledTokens == 0 {
				continue
			}
			n++
			tu := utilPct(s.ScheduledTokens, s.MaxNumBatchedTokens)
			x = append(x, r.s.Sec(s.StartNS))
			tok = append(tok, tu)
			seq = append(seq, utilPct(s.ScheduledReqs, s.MaxNumSeqs))
			if tu < underutilThreshold {
				under++
				if s.NumWaiting > 0 {
					queued++
				}
			}
		}
	}
	if n == 0 {
		r.missing("no scheduler steps", "The hook's scheduler patch (ENABLE_BATCH_UTILIZATION_TRACKING) records every Scheduler.schedule() call.")
		return
	}
	ts, ss := statsOf(append([]float64{}, tok...)), statsOf(append([]float64{}, seq...))
	r.w(`<div class="kpis">`)
	r.kpi(fmt.Sprintf("%.1f%%", ts.Mean), "mean token utilization")
	r.kpi(fmt.Sprintf("%.1f%%", ss.Mean), "mean sequence utilization")
	r.kpi(fmt.Sprintf("%d", under), fmt.Sprintf("steps < %.0f%% tokens", underutilThreshold))
	r.kpi(fmt.Sprintf("%d", queued), "of them with requests waiting")
	r.w(`</div>`)
	r.lineChart([]series{{name: "tokens / max_num_batched_tokens", color: "#4e79a7", x: x, y: tok, dots: true}, {name: "reqs / max_num_seqs", color: "#f28e2b", x: x, y: seq, dots: true}}, "utilization %", 100, nil)
	if queued > 0 {
		r.recs = append(r.recs, rec{"warn", fmt.Sprintf("%d steps ran below %.0f%% of the token budget while requests were waiting: KV cache or max_num_seqs limits admission", queued, underutilThreshold)})
	}
}

func (r *reporter) preempt() {
	reasons := map[string]int{}
	total := 0
	reqs := map[uint64]bool{}
	for _, st := range r.s.Streams {
		for _, p := range st.Preempts {
			reasons[preemptReason(p.Reason)]++
			total++
		}
		for _, e := range st.ReqEvents {
			reqs[e.ReqHash] = true
		}
	}
	if total == 0 && len(reqs) == 0 {
		r.missing("no request or preemption records", "The hook's scheduler patch (ENABLE_PREEMPTION_TRACKING) records request lifecycles and preemptions.")
		return
	}
	r.w(`<div class="kpis">`)
	r.kpi(fmt.Sprintf("%d", len(reqs)), "requests seen")
	r.kpi(fmt.Sprintf("%d", total), "preemptions")
	r.w(`</div>`)
	var bars []bar
	for k, v := range reasons {
		bars = append(bars, bar{k, float64(v), "#e15759", ""})
	}
	sort.Slice(bars, func(i, k int) bool { return bars[i].value > bars[k].value })
	r.hbars(bars, "preemptions", 0, "")
	if total > 0 {
		var rs []string
		for _, b := range bars {
			rs = append(rs, fmt.Sprintf("%s: %.0f", b.label, b.value))
		}
		r.recs = append(r.recs, rec{"bad", fmt.Sprintf("%d preemptions (%s): requests lost computed KV and were recomputed; increase gpu_memory_utilization or lower max_num_seqs", total, strings.Join(rs, ", "))})
	}
	r.w(`<p class="note">Per-request timeline (arrival, scheduling, first token, finish, TTFT): request_lifecycle.csv.</p>`)
}

func (r *reporter) kernels() {
	t := gpuKernels(r.s)
	if len(t.rows) == 0 {
		r.missing("no individual kernels recorded", "Eager kernels are recorded at every detail level; kernels inside CUDA graphs only at `--detail nodes`.")
		return
	}
	r.w(`<table><tr><th>kernel</th><th>category</th><th>count</th><th>total ms</th><th>mean µs</th><th>P99 µs</th><th>share</th></tr>`)
	for i, row := range t.rows {
		if i == 25 {
			break
		}
		var tot float64
		fmt.Sscan(row[3], &tot)
		r.w(`<tr><td title="%s">%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s%%</td></tr>`, esc(row[12]), esc(trunc(row[0], 70)), esc(row[13]), row[2], fmtNum(tot/1e3), row[4], row[6], row[11])
	}
	r.w(`</table><p class="note">All kernels: gpu_kernels.csv. Generated %s.</p>`, time.Now().UTC().Format(time.RFC3339))
}

// injectionLine is one line about metadata.json "injection" (attach --inject): per process
// something was loaded into, the method, the load time and the first enable's stall. A process
// whose first enable armed CUPTI (first_enable_stall_ms present) stays slower after the detach
// until it restarts: CUPTI cannot be finalised safely (docs/injection.md §5).
func injectionLine(md map[string]any) string {
	inj, ok := md["injection"].(map[string]any)
	if !ok {
		return ""
	}
	procs, _ := inj["processes"].([]any)
	var parts []string
	armed := false
	for _, x := range procs {
		p, ok := x.(map[string]any)
		if !ok {
			continue
		}
		method, _ := p["method"].(string)
		if method != "ptrace" && method != "remote-exec" {
			continue
		}
		pid, _ := p["pid"].(float64)
		part := fmt.Sprintf("pid %.0f %s", pid, method)
		if v, ok := p["load_ms"].(float64); ok {
			part += fmt.Sprintf(", load %.1f ms", v)
		}
		if v, ok := p["first_enable_stall_ms"].(float64); ok {
			part += fmt.Sprintf(", first-enable stall %.1f ms", v)
			armed = true
		}
		parts = append(parts, part)
	}
	if len(parts) == 0 {
		return ""
	}
	line := "Injected by attach --inject: " + strings.Join(parts, "; ")
	if armed {
		line += "; the process stays slower after detach until restart (CUPTI stays initialised)"
	}
	return line
}
