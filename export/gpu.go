package export

import (
	"sort"
	"strconv"

	"github.com/profilemate/profilemate-trace/cupti"
)

// Graph descriptor columns documented by ProfileMate; they are filled from the Python hook's
// BatchDescriptor records and left empty, never invented, when no descriptor is known.
var descriptorCols = []string{"runtime_mode", "num_tokens", "num_reqs", "uniform", "has_lora"}

func gpuKernels(s *Session) *table {
	t := &table{name: "gpu_kernels.csv", header: []string{
		"kernel_name", "raw_name", "count", "total_us", "mean_us", "p50_us", "p99_us", "graph_count", "eager_count",
		"min_us", "max_us", "gpu_time_pct", "demangled_name",
	}}
	type agg struct {
		raw          string
		d            durStats
		graph, eager int
	}
	by := map[string]*agg{}
	var all uint64
	for _, st := range s.Streams {
		for _, k := range st.Kernels {
			raw := st.Names[k.NameID]
			if raw == "" {
				raw = "<unknown kernel " + strconv.Itoa(int(k.NameID)) + ">"
			}
			a := by[raw]
			if a == nil {
				a = &agg{raw: raw}
				by[raw] = a
			}
			var d uint64
			if k.EndNS > k.StartNS {
				d = k.EndNS - k.StartNS
			}
			a.d.add(d)
			all += d
			if k.GraphID != 0 {
				a.graph++
			} else {
				a.eager++
			}
		}
	}
	aggs := make([]*agg, 0, len(by))
	for _, a := range by {
		aggs = append(aggs, a)
	}
	sort.Slice(aggs, func(i, j int) bool {
		ti, tj := aggs[i].d.total(), aggs[j].d.total()
		if ti != tj {
			return ti > tj
		}
		return aggs[i].raw < aggs[j].raw
	})
	for _, a := range aggs {
		short, full := cupti.Demangle(a.raw)
		v := a.d.sorted()
		tot := a.d.total()
		share := 0.0
		if all > 0 {
			share = 100 * float64(tot) / float64(all)
		}
		t.add(short, a.raw, itoa(len(v)), us(tot), us(tot/uint64(len(v))), us(pct(v, 50)), us(pct(v, 99)),
			itoa(a.graph), itoa(a.eager), us(v[0]), us(v[len(v)-1]), f2(share), full)
	}
	return t
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
}

func graphUsage(s *Session) (*table, *table) {
	usage := &table{name: "cuda_graph_usage.csv", header: append(append([]string{}, descriptorCols...),
		"replay_count", "graph_id", "pid", "device_id", "gpu_time_total_us", "gpu_time_mean_us", "gpu_time_p50_us", "gpu_time_p99_us", "first_replay_sec")}
	timeline := &table{name: "cuda_graph_timeline.csv", header: append([]string{"timestamp_sec"}, append(append([]string{}, descriptorCols...),
		"graph_id", "pid", "device_id", "stream_id", "correlation_id", "gpu_start_sec", "gpu_end_sec", "gpu_duration_us")...)}
	by := map[graphKey]*graphAgg{}
	type row struct {
		start uint64
		cells []string
	}
	var rows []row
	for _, st := range s.Streams {
		for _, g := range st.Graphs {
			k := graphKey{st.Meta.Pid, g.DeviceID, g.GraphID}
			a := by[k]
			if a == nil {
				a = &graphAgg{key: k, first: g.StartNS}
				by[k] = a
			}
			var d uint64
			if g.EndNS > g.StartNS {
				d = g.EndNS - g.StartNS
			}
			a.d.add(d)
			a.replays++
			if g.StartNS < a.first {
				a.first = g.StartNS
			}
			rows = append(rows, row{g.StartNS, []string{f6(s.Sec(g.StartNS)), "", "", "", "", "",
				itoa(g.GraphID), itoa(st.Meta.Pid), itoa(g.DeviceID), itoa(g.StreamID), itoa(g.CorrelationID),
				f6(s.Sec(g.StartNS)), f6(s.Sec(g.EndNS)), us(d)}})
		}
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].start < rows[j].start })
	for _, r := range rows {
		timeline.add(r.cells...)
	}
	aggs := make([]*graphAgg, 0, len(by))
	for _, a := range by {
		aggs = append(aggs, a)
	}
	sort.Slice(aggs, func(i, j int) bool {
		if aggs[i].replays != aggs[j].replays {
			return aggs[i].replays > aggs[j].replays
		}
		if aggs[i].key.pid != aggs[j].key.pid {
			return aggs[i].key.pid < aggs[j].key.pid
		}
		return aggs[i].key.graph < aggs[j].key.graph
	})
	for _, a := range aggs {
		v := a.d.sorted()
		tot := a.d.total()
		usage.add("", "", "", "", "", itoa(a.replays), itoa(a.key.graph), itoa(a.key.pid), itoa(a.key.device),
			us(tot), us(tot/uint64(len(v))), us(pct(v, 50)), us(pct(v, 99)), f6(s.Sec(a.first)))
	}
	return usage, timeline
}

func graphCaptures(s *Session) *table {
	// Captures are seen only by the Python hook (a capture launches nothing on the GPU);
	// the joiner fills rows from its capture records.
	return &table{name: "cuda_graph_captures.csv", header: append(append([]string{}, descriptorCols...), "capture_time_sec")}
}
