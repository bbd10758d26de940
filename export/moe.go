package export

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"strings"
)

// MoE files are written at the top of the session and again under moe_expert_tracking/,
// the folder the original documentation's snippets `cd` into.
const moeDir = "moe_expert_tracking"

type moeLayer struct {
	layer    uint32
	experts  uint32
	topK     uint32
	counts   []uint64
	windows  int
	pids     map[int]bool
	imbRows  []moeImb
	cosel    map[[2]uint32]uint64
	hist     map[histKey][]uint64
	histKeys []histKey
}

type histKey struct {
	lo, hi float64
	n      uint32
}

type moeImb struct {
	ts, window       uint64
	pid              int
	std, mean, ratio float64
	min, max, total  uint64
}

type moeResult struct {
	layers []*moeLayer
}

func (s *Session) moe() *moeResult {
	by := map[uint32]*moeLayer{}
	get := func(l uint32) *moeLayer {
		m := by[l]
		if m == nil {
			m = &moeLayer{layer: l, pids: map[int]bool{}, cosel: map[[2]uint32]uint64{}, hist: map[histKey][]uint64{}}
			by[l] = m
		}
		return m
	}
	for _, st := range s.Streams {
		pid := st.Meta.Pid
		for _, c := range st.MoECounts {
			m := get(c.LayerIdx)
			n := len(c.Counts) / 8
			if int(c.NumExperts) > n && c.NumExperts <= maxExperts {
				n = int(c.NumExperts)
			}
			if n > maxExperts {
				n = maxExperts
			}
			if n > len(m.counts) {
				m.counts = append(m.counts, make([]uint64, n-len(m.counts))...)
			}
			if c.NumExperts > m.experts && c.NumExperts <= maxExperts {
				m.experts = c.NumExperts
			}
			m.topK = c.TopK
			m.windows++
			m.pids[pid] = true
			r := moeImb{ts: c.TsNS, pid: pid, min: math.MaxUint64}
			if c.TsNS > c.WindowStartNS {
				r.window = c.TsNS - c.WindowStartNS
			}
			vals := make([]float64, n)
			for e := 0; e < n; e++ {
				var v uint64
				if 8*e+8 <= len(c.Counts) {
					v = binary.LittleEndian.Uint64(c.Counts[8*e:])
				}
				m.counts[e] += v
				vals[e] = float64(v)
				r.total += v
				r.min = min(r.min, v)
				r.max = max(r.max, v)
			}
			if n == 0 {
				continue
			}
			r.mean, r.std = meanStd(vals)
			r.ratio = math.Inf(1)
			if r.min > 0 {
				r.ratio = float64(r.max) / float64(r.min)
			}
			m.imbRows = append(m.imbRows, r)
		}
		for _, c := range st.MoECosel {
			m := get(c.LayerIdx)
			for o := 0; o+12 <= len(c.Pairs); o += 12 {
				a := binary.LittleEndian.Uint32(c.Pairs[o:])
				b := binary.LittleEndian.Uint32(c.Pairs[o+4:])
				if a > b {
					a, b = b, a
				}
				m.cosel[[2]uint32{a, b}] += uint64(binary.LittleEndian.Uint32(c.Pairs[o+8:]))
			}
		}
		for _, h := range st.MoEHists {
			if h.NumBins == 0 || h.NumBins > maxBins || int(h.NumBins) > len(h.Bins)/8 || !(h.Hi > h.Lo) || math.IsInf(h.Hi-h.Lo, 0) {
				continue
			}
			m := get(h.LayerIdx)
			k := histKey{h.Lo, h.Hi, h.NumBins}
			bins := m.hist[k]
			if bins == nil {
				bins = make([]uint64, h.NumBins)
				m.histKeys = append(m.histKeys, k)
			}
			for i := 0; i < int(h.NumBins) && 8*i+8 <= len(h.Bins); i++ {
				bins[i] += binary.LittleEndian.Uint64(h.Bins[8*i:])
			}
			m.hist[k] = bins
		}
	}
	r := &moeResult{}
	for _, m := range by {
		r.layers = append(r.layers, m)
	}
	sort.Slice(r.layers, func(i, k int) bool { return r.layers[i].layer < r.layers[k].layer })
	return r
}

func meanStd(v []float64) (float64, float64) {
	if len(v) == 0 {
		return 0, 0
	}
	var s float64
	for _, x := range v {
		s += x
	}
	mean := s / float64(len(v))
	var q float64
	for _, x := range v {
		q += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(q / float64(len(v)))
}

func ratioStr(r float64) string {
	if math.IsInf(r, 1) {
		return "inf"
	}
	return f2(r)
}

// quantilePoints returns n equal-mass quantile points of a histogram (linear inside a bin),
// each with the index of the bin it falls in.
func quantilePoints(k histKey, bins []uint64, n int) ([]float64, []int) {
	var tot uint64
	for _, b := range bins {
		tot += b
	}
	if tot == 0 {
		return nil, nil
	}
	w := (k.hi - k.lo) / float64(k.n)
	pts := make([]float64, 0, n)
	idx := make([]int, 0, n)
	var cum float64
	bi := 0
	for i := 0; i < n; i++ {
		target := (float64(i) + 0.5) / float64(n) * float64(tot)
		for bi < len(bins)-1 && cum+float64(bins[bi]) < target {
			cum += float64(bins[bi])
			bi++
		}
		frac := 0.5
		if bins[bi] > 0 {
			frac = (target - cum) / float64(bins[bi])
		}
		pts = append(pts, k.lo+w*(float64(bi)+frac))
		idx = append(idx, bi)
	}
	return pts, idx
}

// Bounds on sizes taken from records, so a corrupt record cannot make the joiner allocate
// without limit.
const (
	maxExperts = 1 << 16
	maxBins    = 1 << 16
)

// Quantile points per layer in moe_routing_weights_hist.csv.
const weightPoints = 100

func moeTables(s *Session) ([]output, *moeResult) {
	r := s.moe()
	act := &table{name: "moe_expert_activations.csv", header: []string{"layer_idx", "expert_id", "activation_count", "percentage", "num_experts", "top_k"}}
	cos := &table{name: "moe_expert_coselection.csv", header: []string{"layer_idx", "expert_id_1", "expert_id_2", "coselection_count"}}
	hist := &table{name: "moe_routing_weights_hist.csv", header: []string{"layer_idx", "weight", "quantile", "bin_lo", "bin_hi", "bin_count"}}
	bins := &table{name: "moe_routing_weights_bins.csv", header: []string{"layer_idx", "bin_lo", "bin_hi", "count"}}
	imb := &table{name: "moe_load_imbalance.csv", header: []string{"layer_idx", "timestamp_sec", "std_dev", "max_min_ratio", "mean", "min_count", "max_count", "total", "window_sec", "pid"}}
	type pair struct {
		layer uint32
		a, b  uint32
		n     uint64
	}
	var pairs []pair
	for _, m := range r.layers {
		var tot uint64
		for _, c := range m.counts {
			tot += c
		}
		for e, c := range m.counts {
			if c == 0 {
				continue // the documented coverage and balance snippets count activated experts
			}
			act.add(itoa(m.layer), itoa(e), itoa(c), f2(100*float64(c)/float64(tot)), itoa(m.experts), itoa(m.topK))
		}
		for k, n := range m.cosel {
			pairs = append(pairs, pair{m.layer, k[0], k[1], n})
		}
		sort.SliceStable(m.imbRows, func(i, k int) bool { return m.imbRows[i].ts < m.imbRows[k].ts })
		for _, x := range m.imbRows {
			imb.add(itoa(m.layer), f6(s.Sec(x.ts)), f2(x.std), ratioStr(x.ratio), f2(x.mean), itoa(x.min), itoa(x.max), itoa(x.total), f6(float64(x.window)/1e9), itoa(x.pid))
		}
		for _, k := range m.histKeys {
			b := m.hist[k]
			w := (k.hi - k.lo) / float64(k.n)
			for i, c := range b {
				bins.add(itoa(m.layer), f6(k.lo+w*float64(i)), f6(k.lo+w*float64(i+1)), itoa(c))
			}
			pts, idx := quantilePoints(k, b, weightPoints)
			for i, p := range pts {
				bi := idx[i]
				hist.add(itoa(m.layer), f6(p), f6((float64(i)+0.5)/weightPoints), f6(k.lo+w*float64(bi)), f6(k.lo+w*float64(bi+1)), itoa(b[bi]))
			}
		}
	}
	// Most frequent pairs first, so `head -20 moe_expert_coselection.csv` shows them.
	sort.Slice(pairs, func(i, k int) bool {
		if pairs[i].n != pairs[k].n {
			return pairs[i].n > pairs[k].n
		}
		if pairs[i].layer != pairs[k].layer {
			return pairs[i].layer < pairs[k].layer
		}
		if pairs[i].a != pairs[k].a {
			return pairs[i].a < pairs[k].a
		}
		return pairs[i].b < pairs[k].b
	})
	for _, p := range pairs {
		cos.add(itoa(p.layer), itoa(p.a), itoa(p.b), itoa(p.n))
	}
	sum := jsonBlob("moe_summary.json", moeSummary(r, moeUnavailable(s)))
	return []output{act, cos, hist, bins, imb, sum}, r
}

type moeLayerSummary struct {
	LayerIdx         uint32   `json:"layer_idx"`
	NumExperts       uint32   `json:"num_experts"`
	TopK             uint32   `json:"top_k"`
	Activations      uint64   `json:"activations"`
	ExpertsActivated int      `json:"experts_activated"`
	CoveragePct      float64  `json:"coverage_pct"`
	MinPct           float64  `json:"min_percentage"`
	MaxPct           float64  `json:"max_percentage"`
	LoadBalanceRatio *float64 `json:"load_balance_ratio"` // max/min activations; null when an expert was never selected
	StdDev           float64  `json:"std_dev"`
	Mean             float64  `json:"mean"`
	StdOverMean      float64  `json:"std_over_mean"`
	Readbacks        int      `json:"readbacks"`
	Healthy          bool     `json:"healthy"`
	Issues           []string `json:"issues"`
}

// moeUnavailable returns the MoE patches (name "moe.…") that the hook reported unavailable or
// failed, e.g. after a late attach when the MoE layers run inside CUDA graphs captured before
// it (docs/notes-pyhook.md §7a). Matched on the prefix and status, never on the reason text.
func moeUnavailable(s *Session) []Patch {
	var out []Patch
	for _, p := range Patches(s) {
		if strings.HasPrefix(p.Name, "moe.") && (p.Status == "unavailable" || p.Status == "failed") {
			out = append(out, p)
		}
	}
	return out
}

// moeNote is "pid N: <patch>: <reason>" (the status when the hook gave no reason).
func moeNote(p Patch) string {
	why := p.Reason
	if why == "" {
		why = p.Status
	}
	return fmt.Sprintf("pid %d: %s: %s", p.Pid, p.Name, why)
}

// moeSummary summarises the layers; unavailable lists MoE patches that could not count, which
// become "notes" (and "expert_counts": "unavailable" when no layer has counts, so a missing
// count is never shown as an empty table that looks like zero).
func moeSummary(r *moeResult, unavailable []Patch) map[string]any {
	var layers []moeLayerSummary
	worst := 0.0
	unhealthy := 0
	for _, m := range r.layers {
		if len(m.counts) == 0 {
			continue
		}
		ls := moeLayerSummary{LayerIdx: m.layer, NumExperts: m.experts, TopK: m.topK, Readbacks: m.windows, Issues: []string{}}
		vals := make([]float64, len(m.counts))
		mn, mx := uint64(math.MaxUint64), uint64(0)
		for e, c := range m.counts {
			ls.Activations += c
			vals[e] = float64(c)
			if c > 0 {
				ls.ExpertsActivated++
			}
			mn, mx = min(mn, c), max(mx, c)
		}
		if ls.Activations == 0 {
			continue
		}
		n := max(int(m.experts), len(m.counts))
		ls.CoveragePct = round3(100 * float64(ls.ExpertsActivated) / float64(n))
		ls.MinPct = round3(100 * float64(mn) / float64(ls.Activations))
		ls.MaxPct = round3(100 * float64(mx) / float64(ls.Activations))
		ls.Mean, ls.StdDev = meanStd(vals)
		ls.Mean, ls.StdDev = round3(ls.Mean), round3(ls.StdDev)
		if ls.Mean > 0 {
			ls.StdOverMean = round3(ls.StdDev / ls.Mean)
		}
		if mn > 0 {
			v := round3(float64(mx) / float64(mn))
			ls.LoadBalanceRatio = &v
			worst = max(worst, v)
		} else {
			worst = math.Inf(1)
		}
		if ls.ExpertsActivated < n {
			ls.Issues = append(ls.Issues, "not every expert was activated (healthy: 100% coverage)")
		}
		if ls.LoadBalanceRatio == nil || *ls.LoadBalanceRatio >= 2 {
			ls.Issues = append(ls.Issues, "load balance ratio (max/min activations) >= 2.0")
		}
		if ls.StdOverMean >= 0.3 {
			ls.Issues = append(ls.Issues, "std_dev >= 0.3 * mean")
		}
		ls.Healthy = len(ls.Issues) == 0
		if !ls.Healthy {
			unhealthy++
		}
		layers = append(layers, ls)
	}
	out := map[string]any{
		"layers":           layers,
		"num_layers":       len(layers),
		"unhealthy_layers": unhealthy,
		"health_ranges": map[string]string{
			"percentage":         "balanced: about 100/num_experts % each (documented: 8-12% for 8 experts with top-2)",
			"coverage":           "all experts activated (100% coverage)",
			"load_balance_ratio": "< 2.0 (max/min activations)",
			"std_dev":            "< 0.3 * mean",
		},
		"source": "expert ids counted on the GPU by ops captured into the CUDA graphs (py_moe_expert_counts), read back periodically",
	}
	if len(unavailable) > 0 {
		notes := make([]string, 0, len(unavailable))
		for _, p := range unavailable {
			notes = append(notes, moeNote(p))
		}
		out["notes"] = notes
		if len(layers) == 0 {
			out["expert_counts"] = "unavailable"
		}
	}
	if len(layers) > 0 {
		if math.IsInf(worst, 1) {
			out["worst_load_balance_ratio"] = nil
		} else {
			out["worst_load_balance_ratio"] = worst
		}
	}
	return out
}
