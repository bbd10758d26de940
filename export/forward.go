package export

import (
	"sort"
	"strconv"
	"strings"
)

// forwardTables writes forward_pass_timing.csv and its summary, encoder_decoder_timing.csv
// and its summary, and kernel_categories.csv.
func forwardTables(s *Session) []output {
	j := s.join()
	t := &table{name: "forward_pass_timing.csv", header: []string{
		"timestamp_sec", "step_id", "phase", "num_tokens", "num_reqs", "gpu_time_us", "cpu_time_us", "gpu_span_us",
		"gpu_start_sec", "gpu_end_sec", "num_prefill_reqs", "num_prefill_tokens", "num_decode_reqs", "num_decode_tokens",
		"gpu_launches", "graph_replays", "cuda_graph", "runtime_mode", "pid", "tid",
	}}
	type acc struct {
		gpu, cpu, span []float64
		tokens         uint64
		gpuNs          uint64
		graphed        int
		noGPU          int
	}
	by := map[string]*acc{}
	var steps []*fwdStep
	for _, pid := range j.pids {
		p := j.procs[pid]
		for i := range p.fwd {
			steps = append(steps, &p.fwd[i])
		}
	}
	sort.SliceStable(steps, func(i, k int) bool { return steps[i].rec.StartNS < steps[k].rec.StartNS })
	var gpuTotal uint64
	for _, f := range steps {
		x := f.rec
		ph := phaseName(int(x.Phase))
		a := by[ph]
		if a == nil {
			a = &acc{}
			by[ph] = a
		}
		var cpu uint64
		if x.EndNS > x.StartNS {
			cpu = x.EndNS - x.StartNS
		}
		span := uint64(0)
		gs, ge := "", ""
		if f.gpuEnd > f.gpuStart {
			span = f.gpuEnd - f.gpuStart
			gs, ge = f6(s.Sec(f.gpuStart)), f6(s.Sec(f.gpuEnd))
		}
		mode := ""
		if f.desc.ok {
			mode = modeName(f.desc.mode)
		}
		gpuCell := us(f.busy)
		if f.items == 0 {
			gpuCell = "" // no GPU records joined: unknown, not zero
			a.noGPU++
		} else {
			a.gpu = append(a.gpu, float64(f.busy)/1e3)
			a.span = append(a.span, float64(span)/1e3)
			a.gpuNs += f.busy
			gpuTotal += f.busy
		}
		a.cpu = append(a.cpu, float64(cpu)/1e3)
		a.tokens += uint64(x.NumTokens)
		if f.graphs > 0 {
			a.graphed++
		}
		t.add(f6(s.Sec(x.StartNS)), itoa(x.StepID), ph, itoa(x.NumTokens), itoa(x.NumReqs), gpuCell, us(cpu), us(span), gs, ge,
			itoa(x.NumPrefillReqs), itoa(x.NumPrefillTokens), itoa(x.NumDecodeReqs), itoa(x.NumDecodeTokens),
			itoa(f.items), itoa(f.graphs), pyBool(f.graphs > 0), mode, itoa(f.pid), itoa(x.TID))
	}
	phases := map[string]any{}
	for ph, a := range by {
		m := map[string]any{
			"count":                   len(a.cpu),
			"steps_with_gpu":          len(a.gpu),
			"gpu_time_us":             statsOf(a.gpu),
			"cpu_time_us":             statsOf(a.cpu),
			"gpu_span_us":             statsOf(a.span),
			"tokens":                  a.tokens,
			"steps_under_cuda_graphs": a.graphed,
		}
		if gpuTotal > 0 {
			m["gpu_time_pct"] = round3(100 * float64(a.gpuNs) / float64(gpuTotal))
		}
		if a.gpuNs > 0 {
			m["tokens_per_gpu_sec"] = round3(float64(a.tokens) / (float64(a.gpuNs) / 1e9))
		}
		phases[ph] = m
	}
	cov := coverage(s)
	sum := map[string]any{
		"phases":              phases,
		"steps":               len(steps),
		"gpu_time_total_us":   round3(float64(gpuTotal) / 1e3),
		"gpu_time_source":     "union of the GPU intervals (CUPTI kernels, graph replays, copies, memsets) launched by each execute_model call, joined by correlation id; not CPU wall time",
		"cuda_graph_coverage": cov,
		"component_gpu_time":  categoryShares(s),
	}
	if len(steps) == 0 {
		sum["missing"] = "no py_forward records: the hook's model-runner patch did not run (ENABLE_FORWARD_PASS_TIMING)"
	} else if gpuTotal == 0 {
		sum["missing"] = "no GPU records joined to forward passes: the CUPTI agent did not run (check metadata.json sources.cupti) or api records were not captured"
	}
	out := []output{t, jsonBlob("forward_pass_summary.json", sum), categoryTable(s)}
	return append(out, encoderTables(s, steps)...)
}

// graphCoverage is the share of GPU time and of steps under CUDA graphs.
type graphCoverage struct {
	GPUTimeUnderGraphsPct float64    `json:"gpu_time_under_graphs_pct"`
	StepsUnderGraphsPct   float64    `json:"steps_under_graphs_pct"`
	Steps                 int        `json:"steps"`
	StepsUnderGraphs      int        `json:"steps_under_graphs"`
	Replays               int        `json:"replays"`
	GraphGPUTimeUs        float64    `json:"graph_gpu_time_us"`
	EagerGPUTimeUs        float64    `json:"eager_gpu_time_us"`
	HotGraphs             []hotGraph `json:"hot_graphs"`
}

type hotGraph struct {
	Descriptor string  `json:"descriptor"`
	GraphID    uint32  `json:"graph_id"`
	Pid        int     `json:"pid"`
	Replays    int     `json:"replays"`
	GPUTimeUs  float64 `json:"gpu_time_us"`
	ReplayPct  float64 `json:"replay_pct"`
}

func coverage(s *Session) graphCoverage {
	j := s.join()
	var c graphCoverage
	var graphNs, eagerNs uint64
	for _, pid := range j.pids {
		p := j.procs[pid]
		hasTrace := false
		for i := range p.gpu {
			if p.gpu[i].kind == kindGraph {
				hasTrace = true
				break
			}
		}
		for i := range p.gpu {
			g := &p.gpu[i]
			switch {
			case g.kind == kindGraph:
				graphNs += g.dur()
				c.Replays++
			case g.graphID != 0:
				if !hasTrace { // --detail nodes without graph traces: the nodes are the graph time
					graphNs += g.dur()
				}
			case g.kind == kindKernel || g.kind == kindMemset || g.kind == kindMemcpy:
				eagerNs += g.dur()
			}
		}
		for i := range p.fwd {
			if p.fwd[i].items == 0 && !p.fwd[i].dispatch {
				continue
			}
			c.Steps++
			if p.fwd[i].graphs > 0 {
				c.StepsUnderGraphs++
			}
		}
	}
	c.GraphGPUTimeUs, c.EagerGPUTimeUs = round3(float64(graphNs)/1e3), round3(float64(eagerNs)/1e3)
	if graphNs+eagerNs > 0 {
		c.GPUTimeUnderGraphsPct = round3(100 * float64(graphNs) / float64(graphNs+eagerNs))
	}
	if c.Steps > 0 {
		c.StepsUnderGraphsPct = round3(100 * float64(c.StepsUnderGraphs) / float64(c.Steps))
	}
	_, aggs := graphAggs(s)
	for i, a := range aggs {
		if i == 10 {
			break
		}
		d, _ := a.best()
		desc := "unknown descriptor"
		if d.ok {
			desc = d.key()
		}
		c.HotGraphs = append(c.HotGraphs, hotGraph{Descriptor: desc, GraphID: a.key.graph, Pid: a.key.pid, Replays: a.replays,
			GPUTimeUs: round3(float64(a.d.total()) / 1e3), ReplayPct: rate(100*float64(a.replays), float64(c.Replays))})
	}
	if c.HotGraphs == nil {
		c.HotGraphs = []hotGraph{}
	}
	return c
}

var categoryOrder = []string{CatAttention, CatFFN, CatMoE, CatCommunication, CatOther, CatGraph, CatMemcpy, CatMemset}

type catAgg struct {
	count int
	ns    uint64
}

// categories sums GPU time by category and phase ("all" included).
func categories(s *Session) (map[string]map[string]*catAgg, []string) {
	j := s.join()
	if j.cats != nil {
		return j.cats, j.catOrder
	}
	out := map[string]map[string]*catAgg{}
	seen := map[string]bool{}
	add := func(ph, cat string, d uint64) {
		m := out[ph]
		if m == nil {
			m = map[string]*catAgg{}
			out[ph] = m
		}
		a := m[cat]
		if a == nil {
			a = &catAgg{}
			m[cat] = a
		}
		a.count++
		a.ns += d
	}
	for _, pid := range j.pids {
		p := j.procs[pid]
		for i := range p.gpu {
			g := &p.gpu[i]
			cat := g.category(j.classes)
			seen[cat] = true
			d := g.dur()
			add("all", cat, d)
			add(phaseName(p.stepPhase(g)), cat, d)
		}
	}
	cats := append([]string{}, categoryOrder...)
	var extra []string
	for c := range seen {
		known := false
		for _, k := range categoryOrder {
			known = known || k == c
		}
		if !known {
			extra = append(extra, c)
		}
	}
	sort.Strings(extra)
	j.cats, j.catOrder = out, append(cats, extra...)
	return j.cats, j.catOrder
}

func categoryTable(s *Session) *table {
	t := &table{name: "kernel_categories.csv", header: []string{"phase", "category", "count", "gpu_time_us", "pct_of_phase", "pct_of_total"}}
	by, cats := categories(s)
	var total uint64
	for _, a := range by["all"] {
		total += a.ns
	}
	for _, ph := range []string{"all", "prefill", "decode", "mixed", "empty", "unattributed"} {
		m := by[ph]
		if m == nil {
			continue
		}
		var pt uint64
		for _, a := range m {
			pt += a.ns
		}
		for _, c := range cats {
			a := m[c]
			if a == nil {
				continue
			}
			t.add(ph, c, itoa(a.count), us(a.ns), f2(rate(100*float64(a.ns), float64(pt))), f2(rate(100*float64(a.ns), float64(total))))
		}
	}
	return t
}

func categoryShares(s *Session) map[string]map[string]float64 {
	by, _ := categories(s)
	out := map[string]map[string]float64{}
	for ph, m := range by {
		var pt uint64
		for _, a := range m {
			pt += a.ns
		}
		o := map[string]float64{}
		for c, a := range m {
			o[c+"_us"] = round3(float64(a.ns) / 1e3)
			o[c+"_pct"] = rate(100*float64(a.ns), float64(pt))
		}
		out[ph] = o
	}
	return out
}

// encoderTables: encoder calls (py_encoder) and the decoder part of each forward pass.
func encoderTables(s *Session, steps []*fwdStep) []output {
	j := s.join()
	t := &table{name: "encoder_decoder_timing.csv", header: []string{"timestamp_sec", "component", "step_id", "cpu_time_us", "gpu_time_us", "num_items", "gpu_time_source", "pid", "tid"}}
	type row struct {
		ts    uint64
		cells []string
	}
	var rows []row
	var encGPU, encCPU, decGPU, decCPU []float64
	for _, f := range steps {
		f.encBusy = 0
	}
	for _, st := range s.Streams {
		p := j.procs[st.Meta.Pid]
		for _, e := range st.Encoders {
			var cpu uint64
			if e.EndNS > e.StartNS {
				cpu = e.EndNS - e.StartNS
			}
			gpu, src := e.GPUNS, "cuda_events"
			joined := uint64(0)
			if p != nil {
				joined = p.busyIn(e.TID, e.StartNS, e.EndNS)
				if f := p.forwardAt(e.TID, e.StartNS); f != nil {
					f.encBusy += joined
				}
			}
			if gpu == 0 {
				gpu, src = joined, "cupti"
			}
			gc := us(gpu)
			if gpu == 0 {
				gc, src = "", ""
			} else {
				encGPU = append(encGPU, float64(gpu)/1e3)
			}
			encCPU = append(encCPU, float64(cpu)/1e3)
			rows = append(rows, row{e.StartNS, []string{f6(s.Sec(e.StartNS)), "encoder", itoa(e.StepID), us(cpu), gc, itoa(e.NumItems), src, itoa(st.Meta.Pid), itoa(e.TID)}})
		}
	}
	for _, f := range steps {
		var cpu uint64
		if f.rec.EndNS > f.rec.StartNS {
			cpu = f.rec.EndNS - f.rec.StartNS
		}
		gc, src := "", ""
		if f.items > 0 {
			d := f.busy
			if f.encBusy < d {
				d -= f.encBusy
			}
			gc, src = us(d), "cupti"
			decGPU = append(decGPU, float64(d)/1e3)
		}
		decCPU = append(decCPU, float64(cpu)/1e3)
		rows = append(rows, row{f.rec.StartNS, []string{f6(s.Sec(f.rec.StartNS)), "decoder", itoa(f.rec.StepID), us(cpu), gc, itoa(f.rec.NumReqs), src, itoa(f.pid), itoa(f.rec.TID)}})
	}
	sort.SliceStable(rows, func(i, k int) bool { return rows[i].ts < rows[k].ts })
	for _, r := range rows {
		t.add(r.cells...)
	}
	es, ds := statsOf(encGPU), statsOf(decGPU)
	tot := es.Total + ds.Total
	sum := map[string]any{
		"encoder": map[string]any{"calls": len(encCPU), "gpu_time_us": es, "cpu_time_us": statsOf(encCPU), "gpu_time_pct": rate(100*es.Total, tot)},
		"decoder": map[string]any{"calls": len(decCPU), "gpu_time_us": ds, "cpu_time_us": statsOf(decCPU), "gpu_time_pct": rate(100*ds.Total, tot)},
		"note":    "decoder = each execute_model call's GPU time minus the GPU time of the encoder calls inside it",
	}
	if len(encCPU) == 0 {
		sum["missing"] = "no encoder calls recorded: the model has no multimodal/encoder stage, or the hook's encoder patch is unavailable (ENABLE_ENCODER_DECODER_TIMING)"
	}
	return []output{t, jsonBlob("encoder_decoder_summary.json", sum)}
}

// busyIn is the GPU time of the work launched on tid during [a, b].
func (p *procIndex) busyIn(tid uint32, a, b uint64) uint64 {
	l := p.byTid[tid]
	k := sort.Search(len(l), func(x int) bool { return p.apis[l[x]].StartNS >= a })
	var iv []ival
	for ; k < len(l) && p.apis[l[k]].StartNS <= b; k++ {
		for gi := p.gpuFirst.get(p.apis[l[k]].CorrelationID); gi >= 0; gi = p.gpuNext[gi] {
			g := &p.gpu[gi]
			if g.end > g.start {
				iv = append(iv, ival{g.start, g.end})
			}
		}
	}
	return unionLen(iv)
}

// launchTables joins eBPF launch events to CUPTI api records and their GPU work.
func launchTables(s *Session) []output {
	j := s.join()
	n := 0
	for _, st := range s.Streams {
		n += len(st.Launches)
	}
	t := &table{body: make([]byte, 0, 160*n), name: "launch_attribution.csv", header: []string{"timestamp_sec", "pid", "tid", "api_id", "api", "phase", "python_function",
		"correlation_id", "cuda_api", "gpu_kind", "gpu_name", "gpu_start_sec", "gpu_duration_us", "launch_to_gpu_us", "step_id", "bytes"}}
	agg := &table{name: "launch_phases.csv", header: []string{"pid", "phase", "launches", "joined", "gpu_time_us", "kernels", "graphs", "copies", "memsets", "bytes"}}
	type pk struct {
		pid   uint32
		phase string
	}
	type pa struct {
		launches, joined, k, g, c, m int
		ns, bytes                    uint64
	}
	by := map[pk]*pa{}
	var keys []pk
	for _, st := range s.Streams {
		for _, l := range st.Launches {
			ph := j.phaseLabel(l.Phase)
			key := pk{l.PID, ph}
			a := by[key]
			if a == nil {
				a = &pa{}
				by[key] = a
				keys = append(keys, key)
			}
			a.launches++
			a.bytes += l.Bytes
			fn := j.codeName[codeKey{l.PID, l.PyCode}]
			if i := strings.IndexByte(fn, '\t'); i >= 0 {
				fn = fn[:i]
			}
			rb := t.row()
			rb.sec(l.TsNS, s.StartNs).int(int64(l.PID)).int(int64(l.TID)).int(int64(l.API)).str(ebpfAPIName(l.API)).str(ph).str(fn)
			p := j.procs[int(l.PID)]
			ai := int32(-1)
			if p != nil {
				ai = p.apiAt(l.TID, l.TsNS)
			}
			if ai < 0 {
				rb.str("").str("").str("").str("").str("").str("").str("").str("").int(int64(l.Bytes)).end()
				continue
			}
			api := &p.apis[ai]
			rb.int(int64(api.CorrelationID)).str(apiName(api.Domain, api.Cbid))
			first := p.gpuFirst.get(api.CorrelationID)
			if first < 0 {
				rb.str("").str("").str("").str("").str("").str("").int(int64(l.Bytes)).end()
				continue
			}
			a.joined++
			g := &p.gpu[first]
			name := ""
			if g.kind == kindKernel {
				name = g.short
			} else if g.kind == kindGraph {
				name = "graph " + strconv.Itoa(int(g.graphID))
			}
			var gstart, dur uint64
			for gi := first; gi >= 0; gi = p.gpuNext[gi] {
				x := &p.gpu[gi]
				dur += x.dur()
				if gstart == 0 || x.start < gstart {
					gstart = x.start
				}
			}
			a.ns += dur
			switch g.kind {
			case kindKernel:
				a.k++
			case kindGraph:
				a.g++
			case kindMemcpy:
				a.c++
			case kindMemset:
				a.m++
			}
			rb.str(kindNames[g.kind]).str(name).sec(gstart, s.StartNs).us(dur)
			if gstart > l.TsNS {
				rb.us(gstart - l.TsNS)
			} else {
				rb.str("")
			}
			if g.step >= 0 {
				rb.int(int64(p.fwd[g.step].rec.StepID))
			} else {
				rb.str("")
			}
			rb.int(int64(l.Bytes)).end()
		}
	}
	sort.Slice(keys, func(i, k int) bool {
		if keys[i].pid != keys[k].pid {
			return keys[i].pid < keys[k].pid
		}
		return by[keys[i]].ns > by[keys[k]].ns
	})
	for _, k := range keys {
		a := by[k]
		agg.add(itoa(k.pid), k.phase, itoa(a.launches), itoa(a.joined), us(a.ns), itoa(a.k), itoa(a.g), itoa(a.c), itoa(a.m), itoa(a.bytes))
	}
	return []output{t, agg}
}
