package tracer

import "github.com/profilemate/profilemate-trace/bpf"

// API is one probed libcuda entry point. Its Id is the ebpf_launch.api / ebpf_sync.api value.
type API struct {
	ID       uint16
	Symbol   string
	Family   string // launch, graph, copy, memset, sync
	Args     uint8  // bpf.Args* layout
	ElemSize uint8  // memsets: bytes per element
}

// Sync reports whether the API blocks the CPU on the GPU (return probe attached).
func (a API) Sync() bool { return a.Args >= bpf.ArgsSyncArg1 }

// Cookie is the attach cookie the BPF program decodes.
func (a API) Cookie() uint64 { return bpf.Cookie(a.ID, a.Args, a.ElemSize) }

// APIs is the probe table. Ids are stable (they are written into raw streams): append only.
var APIs = []API{
	{1, "cuLaunchKernel", "launch", bpf.ArgsLaunchStack9, 0},
	{2, "cuLaunchKernel_ptsz", "launch", bpf.ArgsLaunchStack9, 0},
	{3, "cuLaunchKernelEx", "launch", bpf.ArgsLaunchEx, 0},
	{4, "cuLaunchKernelEx_ptsz", "launch", bpf.ArgsLaunchEx, 0},
	{5, "cuLaunchCooperativeKernel", "launch", bpf.ArgsLaunchStack9, 0},
	{6, "cuLaunchCooperativeKernel_ptsz", "launch", bpf.ArgsLaunchStack9, 0},
	{7, "cuGraphLaunch", "graph", bpf.ArgsGraph, 0},
	{8, "cuGraphLaunch_ptsz", "graph", bpf.ArgsGraph, 0},
	{9, "cuMemcpyAsync", "copy", bpf.ArgsCopy, 0},
	{10, "cuMemcpyAsync_ptsz", "copy", bpf.ArgsCopy, 0},
	{11, "cuMemcpyHtoDAsync_v2", "copy", bpf.ArgsCopy, 0},
	{12, "cuMemcpyHtoDAsync_v2_ptsz", "copy", bpf.ArgsCopy, 0},
	{13, "cuMemcpyDtoHAsync_v2", "copy", bpf.ArgsCopy, 0},
	{14, "cuMemcpyDtoHAsync_v2_ptsz", "copy", bpf.ArgsCopy, 0},
	{15, "cuMemcpyDtoDAsync_v2", "copy", bpf.ArgsCopy, 0},
	{16, "cuMemcpyDtoDAsync_v2_ptsz", "copy", bpf.ArgsCopy, 0},
	{17, "cuMemcpy2DAsync_v2", "copy", bpf.ArgsCopy2D, 0},
	{18, "cuMemcpy2DAsync_v2_ptsz", "copy", bpf.ArgsCopy2D, 0},
	{19, "cuMemsetD8Async", "memset", bpf.ArgsMemset, 1},
	{20, "cuMemsetD8Async_ptsz", "memset", bpf.ArgsMemset, 1},
	{21, "cuMemsetD16Async", "memset", bpf.ArgsMemset, 2},
	{22, "cuMemsetD16Async_ptsz", "memset", bpf.ArgsMemset, 2},
	{23, "cuMemsetD32Async", "memset", bpf.ArgsMemset, 4},
	{24, "cuMemsetD32Async_ptsz", "memset", bpf.ArgsMemset, 4},
	{25, "cuStreamSynchronize", "sync", bpf.ArgsSyncArg1, 0},
	{26, "cuStreamSynchronize_ptsz", "sync", bpf.ArgsSyncArg1, 0},
	{27, "cuEventSynchronize", "sync", bpf.ArgsSyncArg1, 0},
	{28, "cuCtxSynchronize", "sync", bpf.ArgsSyncNone, 0},
	{29, "cuCtxSynchronize_v2", "sync", bpf.ArgsSyncArg1, 0},
}

// APIByID returns the API with the given id.
func APIByID(id uint16) (API, bool) {
	if id >= 1 && int(id) <= len(APIs) && APIs[id-1].ID == id {
		return APIs[id-1], true
	}
	return API{}, false
}
