package export

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/profilemate/profilemate-trace/internal/record"
)

// Session is a decoded session: metadata plus every raw stream.
type Session struct {
	Name     string
	Metadata map[string]any // metadata.json as written by the tracer (may be empty)
	Streams  []*Stream
	Warnings []string
	// StartNs is the session's time origin (CLOCK_MONOTONIC): metadata start_monotonic_ns,
	// else the earliest timestamp seen.
	StartNs uint64

	classes *Classifier
	joined  *join
}

// Stream is one decoded raw stream.
type Stream struct {
	File string
	Meta record.StreamMeta

	Names     map[uint32]string // kernel name id -> raw (mangled) name
	Kernels   []record.Kernel
	Graphs    []record.GraphTrace
	Memcpys   []record.Memcpy
	Memsets   []record.Memset
	Syncs     []record.Sync
	APIs      []record.API
	Overheads []record.Overhead
	Process   *record.ProcessInfo
	Stats     *record.StreamStats
	Logs      []record.Log
	Controls  []record.ControlChange
	Agent     []record.AgentStats

	// Python hook records (tails copied).
	PyProcs    []record.PyProcess
	PyPatches  []record.PyPatchStatus
	Dispatches []record.PyGraphDispatch
	Captures   []record.PyGraphCapture
	KVBlocks   []record.PyKVBlocks
	KVConfigs  []record.PyKVConfig
	SchedSteps []record.PySchedStep
	Preempts   []record.PyPreempt
	ReqEvents  []record.PyRequestEvent
	CPUScopes  []record.PyCPUScope
	Forwards   []record.PyForward
	MoECounts  []record.PyMOEExpertCounts
	MoECosel   []record.PyMOECoselect
	MoEHists   []record.PyMOEWeightHist
	Encoders   []record.PyEncoder
	HookStats  []record.PyHookStats

	// eBPF records (tails copied).
	Launches     []record.EbpfLaunch
	BPFSyncs     []record.EbpfSync
	CodeInfos    []record.EbpfCodeInfo
	PhaseDefs    []record.EbpfPhaseDef
	PhaseCounter []record.EbpfPhaseCounter
	BPFDrops     []record.EbpfDrops
	BPFProcs     []record.EbpfProc

	// Other holds records of any type this build does not decode itself, by type, as
	// framed bytes.
	Other   map[record.Type][][]byte
	Unknown int // records of types this build does not know
	Events  int // records decoded
}

// Load reads a session directory or a bundle.
func Load(path string) (*Session, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return loadDir(path)
	}
	name, members, err := ReadBundle(path)
	if err != nil && len(members) == 0 {
		return nil, err
	}
	s := &Session{Name: name}
	if err != nil {
		s.Warnings = append(s.Warnings, fmt.Sprintf("bundle is damaged; salvaged %d members: %v", len(members), err))
	}
	for _, m := range members {
		switch {
		case m.Name == "metadata.json":
			if err := json.Unmarshal(m.Data, &s.Metadata); err != nil {
				s.Warnings = append(s.Warnings, "metadata.json unreadable: "+err.Error())
			}
		case strings.HasPrefix(m.Name, "raw/") && strings.HasSuffix(m.Name, ".pmr"):
			s.addStream(m.Name, m.Data)
		}
	}
	s.finish()
	return s, nil
}

func loadDir(dir string) (*Session, error) {
	s := &Session{Name: filepath.Base(dir)}
	if b, err := os.ReadFile(filepath.Join(dir, "metadata.json")); err == nil {
		if err := json.Unmarshal(b, &s.Metadata); err != nil {
			s.Warnings = append(s.Warnings, "metadata.json unreadable: "+err.Error())
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	files, _ := filepath.Glob(filepath.Join(dir, "raw", "*.pmr"))
	if len(files) == 0 && s.Metadata == nil {
		return nil, fmt.Errorf("%s is not a session directory (no metadata.json, no raw/*.pmr)", dir)
	}
	sort.Strings(files)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			s.Warnings = append(s.Warnings, err.Error())
			continue
		}
		s.addStream("raw/"+filepath.Base(f), data)
	}
	s.finish()
	return s, nil
}

func (s *Session) addStream(name string, data []byte) {
	br := bytes.NewReader(data)
	rr, err := record.NewRawReader(br)
	if err != nil {
		s.Warnings = append(s.Warnings, fmt.Sprintf("%s: %v", name, err))
		return
	}
	st := &Stream{File: name, Meta: rr.Meta, Names: map[uint32]string{}, Other: map[record.Type][][]byte{}}
	off := int(rr.Offset())
	// First pass: validate framing and count records per type, so that every slice is
	// allocated once at its final size.
	var counts [256]int
	end := off
	var ferr error
	for end < len(data) {
		if len(data)-end < record.HeaderSize {
			ferr = fmt.Errorf("%w: truncated header at offset %d (%d bytes)", record.ErrCorrupt, end, len(data)-end)
			break
		}
		t := binary.LittleEndian.Uint16(data[end:])
		size := int(binary.LittleEndian.Uint32(data[end+4:]))
		if size < record.HeaderSize || size%8 != 0 {
			ferr = fmt.Errorf("%w: record at offset %d has size %d", record.ErrCorrupt, end, size)
			break
		}
		if size > len(data)-end {
			ferr = fmt.Errorf("%w: record at offset %d truncated", record.ErrCorrupt, end)
			break
		}
		counts[t&0xff]++
		end += size
	}
	st.presize(&counts)
	for off < end {
		size := int(binary.LittleEndian.Uint32(data[off+4:]))
		rec := data[off : off+size]
		if record.TypeOf(rec) != record.TypePad {
			st.Events++
			if err := st.decode(rec); err != nil {
				s.Warnings = append(s.Warnings, fmt.Sprintf("%s at offset %d: %v", name, off, err))
			}
		}
		off += size
	}
	if ferr != nil {
		s.Warnings = append(s.Warnings, fmt.Sprintf("%s: %v (records before it are kept)", name, ferr))
	}
	s.Streams = append(s.Streams, st)
}

// presize allocates the slices of the frequent record types (counts by low type byte).
func (st *Stream) presize(c *[256]int) {
	st.Kernels = make([]record.Kernel, 0, c[record.TypeKernel])
	st.Graphs = make([]record.GraphTrace, 0, c[record.TypeGraphTrace])
	st.Memcpys = make([]record.Memcpy, 0, c[record.TypeMemcpy])
	st.Memsets = make([]record.Memset, 0, c[record.TypeMemset])
	st.APIs = make([]record.API, 0, c[record.TypeAPI])
	st.Syncs = make([]record.Sync, 0, c[record.TypeSync])
	st.Launches = make([]record.EbpfLaunch, 0, c[record.TypeEbpfLaunch&0xff])
	st.Forwards = make([]record.PyForward, 0, c[record.TypePyForward])
	st.Dispatches = make([]record.PyGraphDispatch, 0, c[record.TypePyGraphDispatch])
	st.CPUScopes = make([]record.PyCPUScope, 0, c[record.TypePyCPUScope])
	st.SchedSteps = make([]record.PySchedStep, 0, c[record.TypePySchedStep])
	st.KVBlocks = make([]record.PyKVBlocks, 0, c[record.TypePyKVBlocks])
}

func (st *Stream) decode(rec []byte) error {
	var err error
	switch t := record.TypeOf(rec); t {
	case record.TypeKernel:
		var k record.Kernel
		if k, err = record.DecodeKernel(rec); err == nil {
			st.Kernels = append(st.Kernels, k)
		}
	case record.TypeKernelName:
		var n record.KernelName
		if n, err = record.DecodeKernelName(rec); err == nil {
			st.Names[n.NameID] = string(n.Name)
		}
	case record.TypeGraphTrace:
		var g record.GraphTrace
		if g, err = record.DecodeGraphTrace(rec); err == nil {
			st.Graphs = append(st.Graphs, g)
		}
	case record.TypeMemcpy:
		var m record.Memcpy
		if m, err = record.DecodeMemcpy(rec); err == nil {
			st.Memcpys = append(st.Memcpys, m)
		}
	case record.TypeMemset:
		var m record.Memset
		if m, err = record.DecodeMemset(rec); err == nil {
			st.Memsets = append(st.Memsets, m)
		}
	case record.TypeSync:
		var x record.Sync
		if x, err = record.DecodeSync(rec); err == nil {
			st.Syncs = append(st.Syncs, x)
		}
	case record.TypeAPI:
		var x record.API
		if x, err = record.DecodeAPI(rec); err == nil {
			st.APIs = append(st.APIs, x)
		}
	case record.TypeOverhead:
		var x record.Overhead
		if x, err = record.DecodeOverhead(rec); err == nil {
			st.Overheads = append(st.Overheads, x)
		}
	case record.TypeProcessInfo:
		var x record.ProcessInfo
		if x, err = record.DecodeProcessInfo(rec); err == nil {
			x.Text = append([]byte(nil), x.Text...)
			st.Process = &x
		}
	case record.TypeStreamStats:
		var x record.StreamStats
		if x, err = record.DecodeStreamStats(rec); err == nil {
			st.Stats = &x
		}
	case record.TypeLog:
		var x record.Log
		if x, err = record.DecodeLog(rec); err == nil {
			x.Text = append([]byte(nil), x.Text...)
			st.Logs = append(st.Logs, x)
		}
	case record.TypeControlChange:
		var x record.ControlChange
		if x, err = record.DecodeControlChange(rec); err == nil {
			st.Controls = append(st.Controls, x)
		}
	case record.TypeAgentStats:
		var x record.AgentStats
		if x, err = record.DecodeAgentStats(rec); err == nil {
			st.Agent = append(st.Agent, x)
		}
	case record.TypePyProcess:
		var x record.PyProcess
		if x, err = record.DecodePyProcess(rec); err == nil {
			x.Info = clone(x.Info)
			st.PyProcs = append(st.PyProcs, x)
		}
	case record.TypePyPatchStatus:
		var x record.PyPatchStatus
		if x, err = record.DecodePyPatchStatus(rec); err == nil {
			x.Text = clone(x.Text)
			st.PyPatches = append(st.PyPatches, x)
		}
	case record.TypePyGraphDispatch:
		var x record.PyGraphDispatch
		if x, err = record.DecodePyGraphDispatch(rec); err == nil {
			x.Desc = nil // the decoded fields are what the joiner uses
			st.Dispatches = append(st.Dispatches, x)
		}
	case record.TypePyGraphCapture:
		var x record.PyGraphCapture
		if x, err = record.DecodePyGraphCapture(rec); err == nil && !dormantCaptureSeen(st.Captures, x) {
			x.Desc = clone(x.Desc)
			st.Captures = append(st.Captures, x)
		}
	case record.TypePyKVBlocks:
		var x record.PyKVBlocks
		if x, err = record.DecodePyKVBlocks(rec); err == nil {
			x.BlockIds = clone(x.BlockIds)
			st.KVBlocks = append(st.KVBlocks, x)
		}
	case record.TypePyKVConfig:
		var x record.PyKVConfig
		if x, err = record.DecodePyKVConfig(rec); err == nil {
			x.Info = clone(x.Info)
			st.KVConfigs = append(st.KVConfigs, x)
		}
	case record.TypePySchedStep:
		var x record.PySchedStep
		if x, err = record.DecodePySchedStep(rec); err == nil {
			st.SchedSteps = append(st.SchedSteps, x)
		}
	case record.TypePyPreempt:
		var x record.PyPreempt
		if x, err = record.DecodePyPreempt(rec); err == nil {
			x.ReqID = clone(x.ReqID)
			st.Preempts = append(st.Preempts, x)
		}
	case record.TypePyRequestEvent:
		var x record.PyRequestEvent
		if x, err = record.DecodePyRequestEvent(rec); err == nil {
			x.ReqID = clone(x.ReqID)
			st.ReqEvents = append(st.ReqEvents, x)
		}
	case record.TypePyCPUScope:
		var x record.PyCPUScope
		if x, err = record.DecodePyCPUScope(rec); err == nil {
			x.Name = clone(x.Name)
			st.CPUScopes = append(st.CPUScopes, x)
		}
	case record.TypePyForward:
		var x record.PyForward
		if x, err = record.DecodePyForward(rec); err == nil {
			st.Forwards = append(st.Forwards, x)
		}
	case record.TypePyMOEExpertCounts:
		var x record.PyMOEExpertCounts
		if x, err = record.DecodePyMOEExpertCounts(rec); err == nil {
			x.Counts = clone(x.Counts)
			st.MoECounts = append(st.MoECounts, x)
		}
	case record.TypePyMOECoselect:
		var x record.PyMOECoselect
		if x, err = record.DecodePyMOECoselect(rec); err == nil {
			x.Pairs = clone(x.Pairs)
			st.MoECosel = append(st.MoECosel, x)
		}
	case record.TypePyMOEWeightHist:
		var x record.PyMOEWeightHist
		if x, err = record.DecodePyMOEWeightHist(rec); err == nil {
			x.Bins = clone(x.Bins)
			st.MoEHists = append(st.MoEHists, x)
		}
	case record.TypePyEncoder:
		var x record.PyEncoder
		if x, err = record.DecodePyEncoder(rec); err == nil {
			st.Encoders = append(st.Encoders, x)
		}
	case record.TypePyHookStats:
		var x record.PyHookStats
		if x, err = record.DecodePyHookStats(rec); err == nil {
			st.HookStats = append(st.HookStats, x)
		}
	case record.TypeEbpfLaunch:
		var x record.EbpfLaunch
		if x, err = record.DecodeEbpfLaunch(rec); err == nil {
			st.Launches = append(st.Launches, x)
		}
	case record.TypeEbpfSync:
		var x record.EbpfSync
		if x, err = record.DecodeEbpfSync(rec); err == nil {
			st.BPFSyncs = append(st.BPFSyncs, x)
		}
	case record.TypeEbpfCodeInfo:
		var x record.EbpfCodeInfo
		if x, err = record.DecodeEbpfCodeInfo(rec); err == nil {
			x.Name = clone(x.Name)
			st.CodeInfos = append(st.CodeInfos, x)
		}
	case record.TypeEbpfPhaseDef:
		var x record.EbpfPhaseDef
		if x, err = record.DecodeEbpfPhaseDef(rec); err == nil {
			x.Name = clone(x.Name)
			st.PhaseDefs = append(st.PhaseDefs, x)
		}
	case record.TypeEbpfPhaseCounter:
		var x record.EbpfPhaseCounter
		if x, err = record.DecodeEbpfPhaseCounter(rec); err == nil {
			st.PhaseCounter = append(st.PhaseCounter, x)
		}
	case record.TypeEbpfDrops:
		var x record.EbpfDrops
		if x, err = record.DecodeEbpfDrops(rec); err == nil {
			st.BPFDrops = append(st.BPFDrops, x)
		}
	case record.TypeEbpfProc:
		var x record.EbpfProc
		if x, err = record.DecodeEbpfProc(rec); err == nil {
			st.BPFProcs = append(st.BPFProcs, x)
		}
	default:
		if _, ok := record.Specs[t]; !ok {
			st.Unknown++
		}
		st.Other[t] = append(st.Other[t], append([]byte(nil), rec...))
	}
	return err
}

func clone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

func (s *Session) finish() {
	sort.Slice(s.Streams, func(i, j int) bool { return s.Streams[i].File < s.Streams[j].File })
	if v, ok := s.Metadata["start_monotonic_ns"].(float64); ok && v > 0 {
		s.StartNs = uint64(v)
		return
	}
	var min uint64
	upd := func(t uint64) {
		if t != 0 && (min == 0 || t < min) {
			min = t
		}
	}
	for _, st := range s.Streams {
		for _, k := range st.Kernels {
			upd(k.StartNS)
		}
		for _, g := range st.Graphs {
			upd(g.StartNS)
		}
		for _, a := range st.APIs {
			upd(a.StartNS)
		}
		for _, p := range st.PyProcs {
			upd(p.TsNS)
		}
		for _, p := range st.SchedSteps {
			upd(p.StartNS)
		}
		for _, p := range st.Forwards {
			upd(p.StartNS)
		}
		for _, p := range st.Captures {
			upd(p.StartNS)
		}
		for _, p := range st.Launches {
			upd(p.TsNS)
		}
	}
	s.StartNs = min
}

// Sec converts a CLOCK_MONOTONIC timestamp to seconds since the session start.
func (s *Session) Sec(ns uint64) float64 {
	if ns < s.StartNs {
		return -float64(s.StartNs-ns) / 1e9
	}
	return float64(ns-s.StartNs) / 1e9
}

// dormantCaptureSeen: the hook writes the graphs captured while it was dormant (flags bit 7) at
// every enable, so a session that enables twice holds them twice; the second copy is the same
// capture (same thread, times and descriptor) and is left out.
func dormantCaptureSeen(have []record.PyGraphCapture, x record.PyGraphCapture) bool {
	if x.Flags&(1<<7) == 0 {
		return false
	}
	for i := range have {
		h := &have[i]
		if h.Flags&(1<<7) != 0 && h.StartNS == x.StartNS && h.EndNS == x.EndNS && h.TID == x.TID &&
			h.Source == x.Source && h.NumTokens == x.NumTokens && h.NumReqs == x.NumReqs {
			return true
		}
	}
	return false
}
