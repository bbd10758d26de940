//go:build linux

package bpf

import "github.com/cilium/ebpf"

// PyConf mirrors struct pm_pyconf in src/pm_tracer.bpf.c: the CPython layout of one process.
type PyConf = pmTracerPmPyconf

// CodeKey mirrors struct pm_code_key (pm_codes key: process and code object address).
type CodeKey = pmTracerPmCodeKey

// CodeVal mirrors struct pm_code_val (pm_codes value: phase id, 0 = not a phase function).
type CodeVal = pmTracerPmCodeVal

// TstateKey mirrors struct pm_tstate_key (pm_tstates key: process and thread pointer).
type TstateKey = pmTracerPmTstateKey

// CounterKey mirrors struct pm_counter_key (pm_counters key: process, phase, API).
type CounterKey = pmTracerPmCounterKey

// CounterVal mirrors struct pm_counter_val (pm_counters per-CPU value).
type CounterVal = pmTracerPmCounterVal

// Objects is the loaded collection.
type Objects = pmTracerObjects

// Argument layouts of the attach cookie (bits 16-23). Match PM_ARGS_* in src/pm_tracer.bpf.c.
const (
	ArgsLaunchStack9 = 1 // (f, grid x3, block x3, shmem, stream, ...): handle f, stream = 9th argument
	ArgsLaunchEx     = 2 // (const CUlaunchConfig*, f, ...): handle f, stream = config->hStream
	ArgsGraph        = 3 // (hGraphExec, hStream)
	ArgsCopy         = 4 // (dst, src, bytes, hStream)
	ArgsCopy2D       = 5 // (const CUDA_MEMCPY2D*, hStream)
	ArgsMemset       = 6 // (dst, value, N, hStream); element size in cookie bits 24-31
	ArgsSyncArg1     = 7 // sync on argument 1 (stream, event, context)
	ArgsSyncNone     = 8 // cuCtxSynchronize()
)

// Flags of ebpf_launch/ebpf_sync records. Match PM_F_* in src/pm_tracer.bpf.c.
const (
	FlagWalkLimit = 1
	FlagNoTstate  = 2
	FlagReadFail  = 4
	FlagGilstate  = 8
	FlagNoPyConf  = 16
)

// Drop reasons: indexes of pm_drops and ebpf_drops.reason. Match PM_DROP_* in src/pm_tracer.bpf.c.
const (
	DropRingbuf   = 1
	DropRead      = 2
	DropWalkLimit = 3
	DropNoTstate  = 4
	DropSyncFull  = 5
	DropMax       = 8
)

// NoOffset marks an absent offset in PyConf (PM_NONE).
const NoOffset = 0xffffffff

// WinMax is the largest frame window the walk reads (PM_WIN_MAX).
const WinMax = 80

// MaxDepth is the compile-time bound of the frame walk (PM_MAX_DEPTH).
const MaxDepth = 96

// Cookie builds the uprobe attach cookie for an API id, argument layout and element size.
func Cookie(api uint16, args uint8, elemSize uint8) uint64 {
	return uint64(api) | uint64(args)<<16 | uint64(elemSize)<<24
}

// LoadSpec returns the embedded collection spec (deterministic, no kernel access).
func LoadSpec() (*ebpf.CollectionSpec, error) { return loadPmTracer() }
