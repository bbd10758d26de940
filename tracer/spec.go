package tracer

import (
	"debug/elf"
	"fmt"
	"log/slog"
	"time"

	"github.com/cilium/ebpf"

	"github.com/profilemate/profilemate-trace/bpf"
	"github.com/profilemate/profilemate-trace/internal/pyproc"
)

// Defaults, each with its reason.
const (
	// DefaultRingBytes holds ~100k launch records (72 B): a few seconds of an eager prefill burst.
	DefaultRingBytes = 8 << 20
	// DefaultMaxDepth covers vLLM's deepest eager stacks (model forward inside execute_model is
	// 20-40 frames) with margin; walks that reach it are counted (drop reason 3).
	DefaultMaxDepth = 64
	// DefaultScanBytes bounds the attach-time code-object scan (anonymous memory of a vLLM worker
	// is mostly below this; larger mappings are tensors and skipped anyway).
	DefaultScanBytes = 4 << 30
	// DefaultPoll is how often processes that are not fully attached yet (no libcuda or no
	// interpreter yet) are retried.
	DefaultPoll = 100 * time.Millisecond
)

// Config configures a Tracer. The zero value is usable.
type Config struct {
	Phases       *PhaseTable // nil: DefaultPhaseTable
	RingBytes    int         // BPF ring buffer size (power of two, >= 4096); 0: DefaultRingBytes
	MaxDepth     int         // frames walked per call; 0: DefaultMaxDepth, at most bpf.MaxDepth
	CountersOnly bool        // no per-launch records, only per-(phase, API) counters and syncs
	ScanBytes    uint64      // attach-time code scan budget; 0: DefaultScanBytes
	// SystemWide attaches the libcuda probes to the file for every process (the BPF program
	// still filters on the traced process tree). Children are then traced from their first
	// call; the price is a trap (~0.5 us) on every libcuda call of untraced processes that map
	// the same file. Default: probes per traced pid; a child is probed once the tracer sees it.
	SystemWide bool
	// NoUprobeMulti uses one perf-event uprobe per symbol even where uprobe_multi links exist.
	NoUprobeMulti bool
	// WaitForLibcuda: Attach does not fail when no process of the tree maps libcuda yet (run
	// mode: the target loads CUDA later).
	WaitForLibcuda bool
	// CounterInterval: period of ebpf_phase_counter/ebpf_drops snapshots in the streams (0: only
	// when Run ends).
	CounterInterval time.Duration
	Logger          *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.Phases == nil {
		t, err := LoadPhaseTable("")
		if err != nil {
			return c, err
		}
		c.Phases = t
	}
	if c.RingBytes == 0 {
		c.RingBytes = DefaultRingBytes
	}
	if c.RingBytes < 4096 || c.RingBytes&(c.RingBytes-1) != 0 {
		return c, fmt.Errorf("ring size %d: want a power of two >= 4096", c.RingBytes)
	}
	if c.MaxDepth == 0 {
		c.MaxDepth = DefaultMaxDepth
	}
	if c.MaxDepth < 1 || c.MaxDepth > bpf.MaxDepth {
		return c, fmt.Errorf("max depth %d: want 1..%d", c.MaxDepth, bpf.MaxDepth)
	}
	if c.ScanBytes == 0 {
		c.ScanBytes = DefaultScanBytes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Program and map names in bpf/src/pm_tracer.bpf.c.
const (
	progEntry       = "pm_cuda_entry"
	progReturn      = "pm_cuda_return"
	progEntryMulti  = "pm_cuda_entry_multi"
	progReturnMulti = "pm_cuda_return_multi"
	progFork        = "pm_fork"
	progExec        = "pm_exec"
	progExit        = "pm_exit"
)

// NewSpec returns the collection spec for cfg: load-time constants set, ring buffer sized, and
// only the uprobe programs of the chosen link type kept. It touches no kernel state.
func NewSpec(cfg Config, multi bool) (*ebpf.CollectionSpec, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	spec, err := bpf.LoadSpec()
	if err != nil {
		return nil, fmt.Errorf("loading embedded BPF spec: %w", err)
	}
	if err := spec.Variables["pm_max_depth"].Set(uint32(cfg.MaxDepth)); err != nil {
		return nil, fmt.Errorf("setting pm_max_depth: %w", err)
	}
	emit := uint32(1)
	if cfg.CountersOnly {
		emit = 0
	}
	if err := spec.Variables["pm_emit_launches"].Set(emit); err != nil {
		return nil, fmt.Errorf("setting pm_emit_launches: %w", err)
	}
	spec.Maps["pm_events"].MaxEntries = uint32(cfg.RingBytes)
	if multi {
		delete(spec.Programs, progEntry)
		delete(spec.Programs, progReturn)
	} else {
		delete(spec.Programs, progEntryMulti)
		delete(spec.Programs, progReturnMulti)
	}
	return spec, nil
}

// CheckPyConf verifies what the BPF walk assumes about a config: code and previous offsets are
// 8-byte aligned inside a window of at most bpf.WinMax bytes.
func CheckPyConf(c bpf.PyConf) error {
	if c.WinLen == 0 || c.WinLen > bpf.WinMax {
		return fmt.Errorf("frame window of %d bytes (max %d)", c.WinLen, bpf.WinMax)
	}
	for _, o := range []uint32{c.FrameCode, c.FramePrev} {
		if o < c.WinOff || (o-c.WinOff)%8 != 0 || o-c.WinOff+8 > c.WinLen {
			return fmt.Errorf("frame field at %d not an aligned word of the window [%d,+%d)", o, c.WinOff, c.WinLen)
		}
	}
	if c.FrameOwner != bpf.NoOffset && (c.FrameOwner < c.WinOff || c.FrameOwner-c.WinOff >= c.WinLen) {
		return fmt.Errorf("frame owner at %d outside the window", c.FrameOwner)
	}
	return nil
}

// PyConf converts a validated CPython layout into the BPF per-process config.
func PyConf(p *pyproc.Process) bpf.PyConf {
	l := p.Layout
	off := func(v uint64) uint32 {
		if v == pyproc.None {
			return bpf.NoOffset
		}
		return uint32(v)
	}
	c := bpf.PyConf{
		Version:         uint32(3<<8 | l.Minor),
		WalkKind:        2,
		GilstateKey:     p.GilKey,
		PthreadSpecific: pyproc.PthreadSpecific1stBlock,
		TstateFrame:     off(l.TstateFrame),
		CframeFrame:     off(l.CframeFrame),
		FrameCode:       off(l.FrameCode),
		FramePrev:       off(l.FramePrev),
		FrameOwner:      off(l.FrameOwner),
		OwnerSkipMin:    uint32(l.OwnerSkipMin),
		CodeMask:        l.ExecutableMask,
	}
	if l.Minor == 10 {
		c.WalkKind = 1
	}
	// One read per frame: the window from the lowest to the end of the highest field.
	lo, hi := l.FrameCode, l.FrameCode+8
	for _, f := range []struct{ off, size uint64 }{{l.FramePrev, 8}, {l.FrameOwner, 1}} {
		if f.off == pyproc.None {
			continue
		}
		lo, hi = min(lo, f.off), max(hi, f.off+f.size)
	}
	c.WinOff, c.WinLen = uint32(lo), uint32(hi-lo)
	return c
}

// Probe is one planned libcuda attachment.
type Probe struct {
	API    API
	Return bool
}

// Plan lists the probes for a libcuda that exports the given symbols: an entry probe for each
// API present, and a return probe for each sync API. Deterministic (table order).
func Plan(exported map[string]bool) []Probe {
	var out []Probe
	for _, a := range APIs {
		if !exported[a.Symbol] {
			continue
		}
		out = append(out, Probe{API: a})
	}
	for _, a := range APIs {
		if exported[a.Symbol] && a.Sync() {
			out = append(out, Probe{API: a, Return: true})
		}
	}
	return out
}

// ExportedSymbols returns the defined function symbols of an ELF file's dynamic symbol table.
func ExportedSymbols(path string) (map[string]bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	defer f.Close()
	syms, err := f.DynamicSymbols()
	if err != nil {
		return nil, fmt.Errorf("reading dynamic symbols of %s: %w", path, err)
	}
	out := map[string]bool{}
	for _, s := range syms {
		if s.Section != elf.SHN_UNDEF && elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Value != 0 {
			out[s.Name] = true
		}
	}
	return out, nil
}
