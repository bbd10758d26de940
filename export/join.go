package export

import (
	"sort"
	"strconv"

	"github.com/profilemate/profilemate-trace/internal/record"
)

// The joiner ties the three sources together (DESIGN.md decision 8):
//
//   - GPU records (kernel, graph_trace, memcpy, memset) carry a CUPTI correlation id that
//     equals the one of the api record that launched them; the api record has the
//     launching thread (tid) and its CPU interval.
//   - A CUDA-graph replay takes the BatchDescriptor of the last py_graph_dispatch recorded
//     on the launching thread at or before the launch's CPU start, inside the same
//     execute_model call when the hook recorded one (py_forward).
//   - A forward pass (py_forward, one execute_model call) owns the GPU work of every api
//     record that started on its thread inside its CPU interval; its GPU time is the union
//     of those GPU intervals, whenever the GPU ran them (so async scheduling, where the CPU
//     is a step ahead, does not matter).
//   - An eBPF launch event (pid, tid, ts) falls inside the api record (same pid and tid,
//     start <= ts <= end) whose correlation id has GPU records.
//
// Everything is keyed by host pid: the CUPTI and Python-hook streams by their stream's
// pid, eBPF records by their own pid field.

const (
	kindKernel uint8 = iota + 1
	kindGraph
	kindMemcpy
	kindMemset
)

var kindNames = [...]string{"", "kernel", "graph", "memcpy", "memset"}

// Phase of a forward pass as recorded by the hook (py_forward.phase).
const (
	phaseUnattributed = -1
	phaseEmpty        = 0
	phasePrefill      = 1
	phaseDecode       = 2
	phaseMixed        = 3
)

var phaseNames = map[int]string{phaseUnattributed: "unattributed", phaseEmpty: "empty", phasePrefill: "prefill", phaseDecode: "decode", phaseMixed: "mixed"}

func phaseName(p int) string {
	if n, ok := phaseNames[p]; ok {
		return n
	}
	return "unknown"
}

type gpuItem struct {
	start, end uint64
	bytes      uint64
	pid        int
	device     uint32
	stream     uint32
	corr       uint32
	graphID    uint32
	kind       uint8
	copyKind   uint8
	name       string // raw kernel name
	short, cat string // short demangled name and category (kernels; set by the join)
	step       int32  // index into procIndex.fwd of the forward pass that launched it, -1 none
	api        int32  // index into procIndex.apis, -1 none
}

func (g *gpuItem) dur() uint64 {
	if g.end > g.start {
		return g.end - g.start
	}
	return 0
}

// descriptor is a BatchDescriptor as the hook recorded it.
type descriptor struct {
	ok      bool
	mode    uint32
	tokens  uint32
	reqs    int32
	uniform bool
	lora    bool
}

var modeNames = map[uint32]string{0: "NONE", 1: "PIECEWISE", 2: "FULL"}

func modeName(m uint32) string {
	if n, ok := modeNames[m]; ok {
		return n
	}
	return "UNKNOWN"
}

// cells renders the five documented descriptor columns as the original did (Python str()).
func (d descriptor) cells() []string {
	if !d.ok {
		return []string{"", "", "", "", ""}
	}
	reqs := "None"
	if d.reqs >= 0 {
		reqs = itoa(d.reqs)
	}
	return []string{modeName(d.mode), itoa(d.tokens), reqs, pyBool(d.uniform), pyBool(d.lora)}
}

func (d descriptor) key() string {
	c := d.cells()
	return c[0] + "," + c[1] + "," + c[2] + "," + c[3] + "," + c[4]
}

func dispatchDesc(x *record.PyGraphDispatch) descriptor {
	return descriptor{ok: true, mode: x.RuntimeMode, tokens: x.NumTokens, reqs: x.NumReqs, uniform: x.Flags&1 != 0, lora: x.Flags&2 != 0}
}

// fwdStep is one forward pass with its joined GPU time.
type fwdStep struct {
	rec      record.PyForward
	pid      int
	busy     uint64 // union of the GPU intervals of its work
	gpuStart uint64
	gpuEnd   uint64
	items    int
	graphs   int
	desc     descriptor // descriptor of its graph replays (or of its dispatch)
	dispatch bool       // a dispatch was recorded inside it
	encBusy  uint64     // GPU time of the encoder calls inside it
}

type procIndex struct {
	pid       int
	apis      []record.API
	apiByCorr corrIndex
	byTid     map[uint32][]int32 // api indices sorted by start
	gpu       []gpuItem
	gpuFirst  corrIndex                           // first GPU item of a correlation id
	gpuNext   []int32                             // next GPU item with the same correlation id, -1 at the end
	dispatch  map[uint32][]record.PyGraphDispatch // by tid, sorted by ts
	fwd       []fwdStep                           // sorted by start
	fwdByTid  map[uint32][]int32
}

// join is the joined view of a session, built once.
type join struct {
	s       *Session
	procs   map[int]*procIndex
	pids    []int
	classes *Classifier
	// replay descriptor per graph item (pid, item index)
	graphDesc map[[2]int]descriptor
	// names of eBPF phases and code objects
	phaseName map[[2]int]string // (pid or 0, phase) -> name
	codeName  map[codeKey]string

	// memoized aggregates (the report and the files share them)
	cats      map[string]map[string]*catAgg
	catOrder  []string
	graphBy   map[graphKey]*graphAgg
	graphList []*graphAgg
}

type codeKey struct {
	pid  uint32
	code uint64
}

func (s *Session) join() *join {
	if s.joined != nil {
		return s.joined
	}
	j := &join{s: s, procs: map[int]*procIndex{}, classes: s.classifier(), graphDesc: map[[2]int]descriptor{},
		phaseName: map[[2]int]string{}, codeName: map[codeKey]string{}}
	proc := func(pid int) *procIndex {
		p := j.procs[pid]
		if p == nil {
			p = &procIndex{pid: pid, byTid: map[uint32][]int32{},
				dispatch: map[uint32][]record.PyGraphDispatch{}, fwdByTid: map[uint32][]int32{}}
			j.procs[pid] = p
			j.pids = append(j.pids, pid)
		}
		return p
	}
	for _, st := range s.Streams {
		pid := st.Meta.Pid
		if len(st.APIs)+len(st.Kernels)+len(st.Graphs)+len(st.Memcpys)+len(st.Memsets)+len(st.Dispatches)+len(st.Forwards) == 0 {
			continue
		}
		p := proc(pid)
		tm := tidMap(st)
		n0 := len(p.apis)
		p.apis = append(p.apis, st.APIs...)
		if tm != nil {
			for i := n0; i < len(p.apis); i++ {
				p.apis[i].TID = mapTid(tm, p.apis[i].TID)
			}
		}
		if p.gpu == nil {
			p.gpu = make([]gpuItem, 0, len(st.Kernels)+len(st.Graphs)+len(st.Memcpys)+len(st.Memsets))
		}
		for i := range st.Kernels {
			k := &st.Kernels[i]
			raw := st.Names[k.NameID]
			if raw == "" {
				raw = unknownKernel(k.NameID)
			}
			p.gpu = append(p.gpu, gpuItem{start: k.StartNS, end: k.EndNS, pid: pid, device: k.DeviceID, stream: k.StreamID, corr: k.CorrelationID, graphID: k.GraphID, kind: kindKernel, name: raw})
		}
		for i := range st.Graphs {
			g := &st.Graphs[i]
			p.gpu = append(p.gpu, gpuItem{start: g.StartNS, end: g.EndNS, pid: pid, device: g.DeviceID, stream: g.StreamID, corr: g.CorrelationID, graphID: g.GraphID, kind: kindGraph})
		}
		for i := range st.Memcpys {
			m := &st.Memcpys[i]
			p.gpu = append(p.gpu, gpuItem{start: m.StartNS, end: m.EndNS, bytes: m.Bytes, pid: pid, device: m.DeviceID, stream: m.StreamID, corr: m.CorrelationID, graphID: m.GraphID, kind: kindMemcpy, copyKind: m.CopyKind})
		}
		for i := range st.Memsets {
			m := &st.Memsets[i]
			p.gpu = append(p.gpu, gpuItem{start: m.StartNS, end: m.EndNS, bytes: m.Bytes, pid: pid, device: m.DeviceID, stream: m.StreamID, corr: m.CorrelationID, graphID: m.GraphID, kind: kindMemset})
		}
		for _, d := range st.Dispatches {
			d.TID = mapTid(tm, d.TID)
			p.dispatch[d.TID] = append(p.dispatch[d.TID], d)
		}
		for _, f := range st.Forwards {
			f.TID = mapTid(tm, f.TID)
			p.fwd = append(p.fwd, fwdStep{rec: f, pid: pid})
		}
	}
	sort.Ints(j.pids)
	for _, pid := range j.pids {
		j.index(j.procs[pid])
	}
	for _, st := range s.Streams {
		for _, d := range st.PhaseDefs {
			name := string(d.Name)
			if i := indexByte(name, '\t'); i >= 0 {
				name = name[:i]
			}
			j.phaseName[[2]int{0, int(d.Phase)}] = name
		}
		for _, c := range st.CodeInfos {
			j.codeName[codeKey{c.PID, c.Code}] = string(c.Name)
		}
	}
	s.joined = j
	return j
}

// tidMap reads the optional stream metadata extra.tid_map {"<tid as the producer saw it>":
// <host tid>}: CUPTI and the hook report thread ids of their own pid namespace, eBPF host
// ids; the collector records the mapping (/proc/PID/task/TID/status NSpid) when they differ.
//
// The collector writes the mapping as tid_map records into the stream itself (threads are
// found while the capture runs); both sources are merged.
func tidMap(st *Stream) map[uint32]uint32 {
	raw, _ := st.Meta.Extra["tid_map"].(map[string]any)
	recs := st.Other[record.TypeTIDMap]
	if len(raw) == 0 && len(recs) == 0 {
		return nil
	}
	m := make(map[uint32]uint32, len(raw)+len(recs))
	for _, b := range recs {
		if r, err := record.DecodeTIDMap(b); err == nil && r.HostTID != 0 {
			m[r.NSTID] = r.HostTID
		}
	}
	for k, v := range raw {
		ns, err := strconv.ParseUint(k, 10, 32)
		h, ok := v.(float64)
		if err == nil && ok && h > 0 && h < 1<<32 {
			m[uint32(ns)] = uint32(h)
		}
	}
	return m
}

func mapTid(m map[uint32]uint32, tid uint32) uint32 {
	if h, ok := m[tid]; ok {
		return h
	}
	return tid
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

func (j *join) index(p *procIndex) {
	lo, hi := ^uint32(0), uint32(0)
	for i := range p.apis {
		lo, hi = min(lo, p.apis[i].CorrelationID), max(hi, p.apis[i].CorrelationID)
	}
	for i := range p.gpu {
		lo, hi = min(lo, p.gpu[i].corr), max(hi, p.gpu[i].corr)
	}
	p.apiByCorr = newCorrIndex(lo, hi, len(p.apis)+len(p.gpu))
	p.gpuFirst = newCorrIndex(lo, hi, len(p.apis)+len(p.gpu))
	for i := range p.apis {
		a := &p.apis[i]
		p.apiByCorr.set(a.CorrelationID, int32(i))
		p.byTid[a.TID] = append(p.byTid[a.TID], int32(i))
	}
	for _, l := range p.byTid {
		sort.Slice(l, func(a, b int) bool { return p.apis[l[a]].StartNS < p.apis[l[b]].StartNS })
	}
	p.gpuNext = make([]int32, len(p.gpu))
	for i := len(p.gpu) - 1; i >= 0; i-- {
		g := &p.gpu[i]
		g.step, g.api = -1, -1
		if a := p.apiByCorr.get(g.corr); a >= 0 && g.corr != 0 {
			g.api = a
		}
		p.gpuNext[i] = p.gpuFirst.get(g.corr)
		p.gpuFirst.set(g.corr, int32(i))
	}
	for _, l := range p.dispatch {
		sort.SliceStable(l, func(a, b int) bool { return l[a].TsNS < l[b].TsNS })
	}
	sort.SliceStable(p.fwd, func(a, b int) bool { return p.fwd[a].rec.StartNS < p.fwd[b].rec.StartNS })
	for i := range p.fwd {
		t := p.fwd[i].rec.TID
		p.fwdByTid[t] = append(p.fwdByTid[t], int32(i))
	}
	// Forward passes own the GPU work launched on their thread inside their CPU interval.
	var iv []ival
	for fi := range p.fwd {
		f := &p.fwd[fi]
		l := p.byTid[f.rec.TID]
		k := sort.Search(len(l), func(x int) bool { return p.apis[l[x]].StartNS >= f.rec.StartNS })
		iv = iv[:0]
		for ; k < len(l) && p.apis[l[k]].StartNS <= f.rec.EndNS; k++ {
			for gi := p.gpuFirst.get(p.apis[l[k]].CorrelationID); gi >= 0; gi = p.gpuNext[gi] {
				g := &p.gpu[gi]
				if g.step >= 0 {
					continue
				}
				g.step = int32(fi)
				f.items++
				if g.kind == kindGraph {
					f.graphs++
				}
				if g.end > g.start {
					iv = append(iv, ival{g.start, g.end})
					if f.gpuStart == 0 || g.start < f.gpuStart {
						f.gpuStart = g.start
					}
					if g.end > f.gpuEnd {
						f.gpuEnd = g.end
					}
				}
			}
		}
		f.busy = unionLen(iv)
		// the step's descriptor: its last dispatch inside its interval
		dl := p.dispatch[f.rec.TID]
		d := sort.Search(len(dl), func(x int) bool { return dl[x].TsNS > f.rec.EndNS }) - 1
		if d >= 0 && dl[d].TsNS >= f.rec.StartNS {
			f.desc = dispatchDesc(&dl[d])
			f.dispatch = true
		}
	}
	// Graph replays take the descriptor recorded on the launching thread for that step.
	var last string
	var lastClass kernelClass
	for i := range p.gpu {
		g := &p.gpu[i]
		if g.kind == kindKernel {
			if g.name != last || i == 0 {
				last, lastClass = g.name, j.classes.class(g.name)
			}
			g.short, g.cat = lastClass.short, lastClass.cat
		}
	}
	for i := range p.gpu {
		g := &p.gpu[i]
		if g.kind != kindGraph || g.api < 0 {
			continue
		}
		if d, ok := j.replayDesc(p, &p.apis[g.api]); ok {
			j.graphDesc[[2]int{p.pid, i}] = d
		}
	}
}

// replayDesc finds the descriptor for a graph launch api record.
func (j *join) replayDesc(p *procIndex, a *record.API) (descriptor, bool) {
	dl := p.dispatch[a.TID]
	d := sort.Search(len(dl), func(x int) bool { return dl[x].TsNS > a.StartNS }) - 1
	if d < 0 {
		return descriptor{}, false
	}
	x := &dl[d]
	if x.RuntimeMode == 0 { // the step was dispatched eager: this launch is not its replay
		return descriptor{}, false
	}
	// Inside an execute_model call, the dispatch must belong to the same call.
	if f := p.forwardAt(a.TID, a.StartNS); f != nil && x.TsNS < f.rec.StartNS {
		return descriptor{}, false
	}
	return dispatchDesc(x), true
}

func (p *procIndex) forwardAt(tid uint32, t uint64) *fwdStep {
	l := p.fwdByTid[tid]
	k := sort.Search(len(l), func(x int) bool { return p.fwd[l[x]].rec.StartNS > t }) - 1
	if k < 0 {
		return nil
	}
	f := &p.fwd[l[k]]
	if t <= f.rec.EndNS {
		return f
	}
	return nil
}

// driverLag bounds how long after an eBPF launch probe (first instruction of the libcuda
// entry point) CUPTI's driver-API record of the same call may start (docs/notes-ebpf.md §3).
const driverLag = 50_000

// apiAt returns the api record of thread tid that an eBPF launch probe at time t belongs
// to, or -1. A record whose CPU interval contains t (the runtime call around the driver
// entry) wins when its correlation id has GPU work; otherwise the first record that starts
// at or after t, less than driverLag later (the driver call itself: the probe fires before
// CUPTI timestamps it); then any containing record.
func (p *procIndex) apiAt(tid uint32, t uint64) int32 {
	l := p.byTid[tid]
	k := sort.Search(len(l), func(x int) bool { return p.apis[l[x]].StartNS > t }) - 1
	contain := int32(-1)
	for i, n := k, 0; i >= 0 && n < 8; i, n = i-1, n+1 {
		a := &p.apis[l[i]]
		if a.EndNS < t {
			continue
		}
		if p.gpuFirst.get(a.CorrelationID) >= 0 {
			return l[i]
		}
		if contain < 0 {
			contain = l[i]
		}
	}
	if k+1 < len(l) && k >= -1 {
		for i := k + 1; i < len(l) && i <= k+4; i++ {
			a := &p.apis[l[i]]
			if a.StartNS-t >= driverLag {
				break
			}
			if p.gpuFirst.get(a.CorrelationID) >= 0 {
				return l[i]
			}
		}
	}
	return contain
}

type ival struct{ a, b uint64 }

// unionLen returns the total length covered by the intervals (reorders iv).
func unionLen(iv []ival) uint64 {
	if len(iv) == 0 {
		return 0
	}
	sort.Slice(iv, func(i, k int) bool { return iv[i].a < iv[k].a })
	var tot uint64
	cs, ce := iv[0].a, iv[0].b
	for _, x := range iv[1:] {
		if x.a > ce {
			tot += ce - cs
			cs, ce = x.a, x.b
		} else if x.b > ce {
			ce = x.b
		}
	}
	return tot + ce - cs
}

// corrIndex maps correlation ids to indices: a dense slice when the ids are dense (CUPTI
// numbers them consecutively per process), else a map. Missing keys read as -1.
type corrIndex struct {
	base  uint32
	dense []int32
	m     map[uint32]int32
}

func newCorrIndex(lo, hi uint32, n int) corrIndex {
	if hi >= lo && uint64(hi-lo) < 4*uint64(n)+4096 {
		d := make([]int32, int(hi-lo)+1)
		for i := range d {
			d[i] = -1
		}
		return corrIndex{base: lo, dense: d}
	}
	return corrIndex{m: map[uint32]int32{}}
}

func (c *corrIndex) get(k uint32) int32 {
	if c.dense != nil {
		if k < c.base || k-c.base >= uint32(len(c.dense)) {
			return -1
		}
		return c.dense[k-c.base]
	}
	if v, ok := c.m[k]; ok {
		return v
	}
	return -1
}

func (c *corrIndex) set(k uint32, v int32) {
	if c.dense != nil {
		c.dense[k-c.base] = v
		return
	}
	if c.m == nil {
		c.m = map[uint32]int32{}
	}
	c.m[k] = v
}
