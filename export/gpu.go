package export

import (
	"sort"
)

// Graph descriptor columns documented by ProfileMate; they are filled from the Python hook's
// BatchDescriptor records and left empty, never invented, when no descriptor is known.
var descriptorCols = []string{"runtime_mode", "num_tokens", "num_reqs", "uniform", "has_lora"}

func gpuKernels(s *Session) *table {
	j := s.join()
	t := &table{name: "gpu_kernels.csv", header: []string{
		"kernel_name", "raw_name", "count", "total_us", "mean_us", "p50_us", "p99_us", "graph_count", "eager_count",
		"min_us", "max_us", "gpu_time_pct", "demangled_name", "category", "prefill_us", "decode_us",
	}}
	type agg struct {
		raw             string
		d               durStats
		graph, eager    int
		prefill, decode uint64
	}
	by := map[string]*agg{}
	var all uint64
	for _, pid := range j.pids {
		p := j.procs[pid]
		for i := range p.gpu {
			g := &p.gpu[i]
			if g.kind != kindKernel {
				continue
			}
			a := by[g.name]
			if a == nil {
				a = &agg{raw: g.name}
				by[g.name] = a
			}
			d := g.dur()
			a.d.add(d)
			all += d
			if g.graphID != 0 {
				a.graph++
			} else {
				a.eager++
			}
			switch p.stepPhase(g) {
			case phasePrefill:
				a.prefill += d
			case phaseDecode:
				a.decode += d
			}
		}
	}
	aggs := make([]*agg, 0, len(by))
	for _, a := range by {
		aggs = append(aggs, a)
	}
	sort.Slice(aggs, func(i, k int) bool {
		ti, tk := aggs[i].d.total(), aggs[k].d.total()
		if ti != tk {
			return ti > tk
		}
		return aggs[i].raw < aggs[k].raw
	})
	for _, a := range aggs {
		c := j.classes.class(a.raw)
		v := a.d.sorted()
		tot := a.d.total()
		share := 0.0
		if all > 0 {
			share = 100 * float64(tot) / float64(all)
		}
		t.add(c.short, a.raw, itoa(len(v)), us(tot), us(tot/uint64(len(v))), us(pct(v, 50)), us(pct(v, 99)),
			itoa(a.graph), itoa(a.eager), us(v[0]), us(v[len(v)-1]), f2(share), c.full, c.cat, us(a.prefill), us(a.decode))
	}
	return t
}

// stepPhase is the phase of the forward pass that launched g (phaseUnattributed if none).
func (p *procIndex) stepPhase(g *gpuItem) int {
	if g.step < 0 {
		return phaseUnattributed
	}
	return int(p.fwd[g.step].rec.Phase)
}

// graphKey identifies one executable graph: graph ids are per process and device.
type graphKey struct {
	pid    int
	device uint32
	graph  uint32
}

type graphAgg struct {
	key     graphKey
	d       durStats
	first   uint64
	replays int
	descs   map[descriptor]int
}

// best returns the descriptor most replays of the graph were joined to.
func (a *graphAgg) best() (descriptor, int) {
	var b descriptor
	n := 0
	for d, c := range a.descs {
		if c > n || (c == n && d.key() < b.key()) {
			b, n = d, c
		}
	}
	return b, len(a.descs)
}

func graphAggs(s *Session) (map[graphKey]*graphAgg, []*graphAgg) {
	j := s.join()
	if j.graphBy != nil {
		return j.graphBy, j.graphList
	}
	by := map[graphKey]*graphAgg{}
	for _, pid := range j.pids {
		p := j.procs[pid]
		for _, r := range replaysOf(p) {
			i, g := r.index, r.item
			k := graphKey{pid, g.device, g.graphID}
			a := by[k]
			if a == nil {
				a = &graphAgg{key: k, first: g.start, descs: map[descriptor]int{}}
				by[k] = a
			}
			a.d.add(g.dur())
			a.replays++
			if g.start < a.first {
				a.first = g.start
			}
			if d, ok := j.graphDesc[[2]int{pid, i}]; ok {
				a.descs[d]++
			}
		}
	}
	aggs := make([]*graphAgg, 0, len(by))
	for _, a := range by {
		aggs = append(aggs, a)
	}
	sort.Slice(aggs, func(i, k int) bool {
		if aggs[i].replays != aggs[k].replays {
			return aggs[i].replays > aggs[k].replays
		}
		if aggs[i].key.pid != aggs[k].key.pid {
			return aggs[i].key.pid < aggs[k].key.pid
		}
		if aggs[i].key.device != aggs[k].key.device {
			return aggs[i].key.device < aggs[k].key.device
		}
		return aggs[i].key.graph < aggs[k].key.graph
	})
	j.graphBy, j.graphList = by, aggs
	return by, aggs
}

func graphUsage(s *Session) (*table, *table) {
	j := s.join()
	usage := &table{name: "cuda_graph_usage.csv", header: append(append([]string{}, descriptorCols...),
		"replay_count", "graph_id", "pid", "device_id", "gpu_time_total_us", "gpu_time_mean_us", "gpu_time_p50_us", "gpu_time_p99_us", "first_replay_sec",
		"gpu_time_p95_us", "gpu_time_pct", "descriptor_replays", "descriptors_seen")}
	timeline := &table{name: "cuda_graph_timeline.csv", header: append([]string{"timestamp_sec"}, append(append([]string{}, descriptorCols...),
		"graph_id", "pid", "device_id", "stream_id", "correlation_id", "gpu_start_sec", "gpu_end_sec", "gpu_duration_us",
		"tid", "launch_sec", "step_id", "descriptor_source")...)}
	by, aggs := graphAggs(s)
	type row struct {
		start uint64
		cells []string
	}
	var rows []row
	for _, pid := range j.pids {
		p := j.procs[pid]
		for _, r := range replaysOf(p) {
			i, g := r.index, r.item
			d, ok := j.graphDesc[[2]int{pid, i}]
			src := "dispatch"
			if !ok {
				// Every replay of one graph exec runs the descriptor it was captured for:
				// take the one its other replays were joined to.
				if bd, n := by[graphKey{pid, g.device, g.graphID}].best(); n == 1 {
					d, src = bd, "graph"
				} else {
					src = ""
				}
			}
			tid, launch, step := "", "", ""
			ts := g.start
			if g.api >= 0 {
				a := &p.apis[g.api]
				tid, launch, ts = itoa(a.TID), f6(s.Sec(a.StartNS)), a.StartNS
			}
			if g.step >= 0 {
				step = itoa(p.fwd[g.step].rec.StepID)
			}
			cells := append([]string{f6(s.Sec(ts))}, d.cells()...)
			cells = append(cells, itoa(g.graphID), itoa(pid), itoa(g.device), itoa(g.stream), itoa(g.corr),
				f6(s.Sec(g.start)), f6(s.Sec(g.end)), us(g.dur()), tid, launch, step, src)
			rows = append(rows, row{ts, cells})
		}
	}
	sort.SliceStable(rows, func(i, k int) bool { return rows[i].start < rows[k].start })
	for _, r := range rows {
		timeline.add(r.cells...)
	}
	var all uint64
	for _, a := range aggs {
		all += a.d.total()
	}
	for _, a := range aggs {
		v := a.d.sorted()
		tot := a.d.total()
		d, n := a.best()
		if n > 1 {
			s.warnf("graph %d of pid %d was joined to %d different descriptors; cuda_graph_usage.csv shows the most frequent", a.key.graph, a.key.pid, n)
		}
		nd := 0
		for _, c := range a.descs {
			nd += c
		}
		share := 0.0
		if all > 0 {
			share = 100 * float64(tot) / float64(all)
		}
		usage.add(append(d.cells(), itoa(a.replays), itoa(a.key.graph), itoa(a.key.pid), itoa(a.key.device),
			us(tot), us(tot/uint64(len(v))), us(pct(v, 50)), us(pct(v, 99)), f6(s.Sec(a.first)),
			us(pct(v, 95)), f2(share), itoa(nd), itoa(n))...)
	}
	return usage, timeline
}

// graphCaptures lists each distinct captured descriptor once per process (PIECEWISE mode
// captures one graph per piece for the same descriptor). Throw-away captures made while
// vLLM measures graph memory (profile_cudagraph_memory) are left out.
func graphCaptures(s *Session) *table {
	t := &table{name: "cuda_graph_captures.csv", header: append(append([]string{}, descriptorCols...), "capture_time_sec",
		"capture_duration_sec", "graphs", "pid")}
	type key struct {
		pid int
		d   descriptor
	}
	type agg struct {
		first uint64
		dur   uint64
		n     int
	}
	by := map[key]*agg{}
	var order []key
	for _, st := range s.Streams {
		for _, c := range st.Captures {
			if c.Flags&32 != 0 {
				continue
			}
			d := descriptor{ok: true, mode: c.RuntimeMode, tokens: c.NumTokens, reqs: c.NumReqs, uniform: c.Flags&1 != 0, lora: c.Flags&2 != 0}
			k := key{st.Meta.Pid, d}
			a := by[k]
			if a == nil {
				a = &agg{first: c.StartNS}
				by[k] = a
				order = append(order, k)
			}
			if c.StartNS < a.first {
				a.first = c.StartNS
			}
			if c.EndNS > c.StartNS {
				a.dur += c.EndNS - c.StartNS
			}
			a.n++
		}
	}
	sort.SliceStable(order, func(i, k int) bool { return by[order[i]].first < by[order[k]].first })
	for _, k := range order {
		a := by[k]
		t.add(append(k.d.cells(), f3(s.Sec(a.first)), f6(float64(a.dur)/1e9), itoa(a.n), itoa(k.pid))...)
	}
	return t
}

// replay is one CUDA-graph launch: a graph_trace record (index into p.gpu), or, at
// --detail nodes (no graph_trace), the node kernels of one launch folded together (index -1).
type replay struct {
	index int
	item  *gpuItem
}

// replaysOf returns the graph launches of a process. Without graph-level records (detail
// nodes, or a late attach where CUPTI cannot start graph tracing) the kernels of one launch
// share the launch's correlation id and its graph id, so they are folded into one replay
// spanning its first node's start to its last node's end.
func replaysOf(p *procIndex) []replay {
	var out []replay
	for i := range p.gpu {
		if p.gpu[i].kind == kindGraph {
			out = append(out, replay{i, &p.gpu[i]})
		}
	}
	if len(out) > 0 {
		return out
	}
	type key struct {
		device, graph, corr uint32
	}
	folded := map[key]*gpuItem{}
	var order []key
	for i := range p.gpu {
		g := &p.gpu[i]
		if g.kind != kindKernel || g.graphID == 0 {
			continue
		}
		k := key{g.device, g.graphID, g.corr}
		f := folded[k]
		if f == nil {
			c := *g
			c.kind = kindGraph
			folded[k] = &c
			order = append(order, k)
			continue
		}
		f.start = min(f.start, g.start)
		f.end = max(f.end, g.end)
	}
	for _, k := range order {
		out = append(out, replay{-1, folded[k]})
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].item.start < out[b].item.start })
	return out
}
