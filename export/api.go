package export

import "strconv"

// CUPTI callback ids of the APIs the agent records (cupti/csrc/pm_cupti_abi.h; the same
// values in CUPTI 12.9 and 13.0).
var driverAPIs = map[uint32]string{
	17: "cuCtxSynchronize", 121: "cuEventSynchronize", 126: "cuStreamSynchronize", 216: "cuMemsetD8Async",
	218: "cuMemsetD16Async", 220: "cuMemsetD32Async", 276: "cuMemcpyHtoD_v2", 277: "cuMemcpyHtoDAsync_v2",
	278: "cuMemcpyDtoH_v2", 279: "cuMemcpyDtoHAsync_v2", 281: "cuMemcpyDtoDAsync_v2", 295: "cuStreamWaitEvent",
	305: "cuMemcpy", 306: "cuMemcpyAsync", 307: "cuLaunchKernel", 319: "cuMemcpyPeerAsync", 418: "cuMemcpyAsync_ptsz",
	421: "cuMemcpyHtoDAsync_v2_ptsz", 422: "cuMemcpyDtoHAsync_v2_ptsz", 423: "cuMemcpyDtoDAsync_v2_ptsz",
	426: "cuMemcpyPeerAsync_ptsz", 428: "cuMemsetD8Async_ptsz", 430: "cuMemsetD32Async_ptsz", 436: "cuStreamWaitEvent_ptsz",
	440: "cuStreamSynchronize_ptsz", 442: "cuLaunchKernel_ptsz", 477: "cuLaunchCooperativeKernel",
	478: "cuLaunchCooperativeKernel_ptsz", 514: "cuGraphLaunch", 515: "cuGraphLaunch_ptsz", 652: "cuLaunchKernelEx",
	653: "cuLaunchKernelEx_ptsz", 800: "cuCtxSynchronize_v2",
}

var runtimeAPIs = map[uint32]string{
	31: "cudaMemcpy", 41: "cudaMemcpyAsync", 49: "cudaMemset", 51: "cudaMemsetAsync", 131: "cudaStreamSynchronize",
	137: "cudaEventSynchronize", 147: "cudaStreamWaitEvent", 161: "cudaMemcpyPeerAsync", 165: "cudaDeviceSynchronize",
	211: "cudaLaunchKernel", 214: "cudaLaunchKernel_ptsz", 225: "cudaMemcpyAsync_ptsz", 235: "cudaMemsetAsync_ptsz",
	239: "cudaStreamSynchronize_ptsz", 247: "cudaStreamWaitEvent_ptsz", 269: "cudaLaunchCooperativeKernel",
	270: "cudaLaunchCooperativeKernel_ptsz", 311: "cudaGraphLaunch", 312: "cudaGraphLaunch_ptsz",
	430: "cudaLaunchKernelExC", 431: "cudaLaunchKernelExC_ptsz",
}

// CUPTI activity kinds of api records.
const (
	domainDriver  = 4
	domainRuntime = 5
)

// Callback ids of graph launches.
const (
	cbidCuGraphLaunch   = 514
	cbidCudaGraphLaunch = 311
)

func apiName(domain, cbid uint32) string {
	var n string
	switch domain {
	case domainDriver:
		n = driverAPIs[cbid]
	case domainRuntime:
		n = runtimeAPIs[cbid]
	}
	if n == "" {
		return "cbid_" + strconv.Itoa(int(domain)) + "_" + strconv.Itoa(int(cbid))
	}
	return n
}

// ebpfAPIs names the eBPF probe ids (ebpf_launch.api, ebpf_sync.api): tracer.APIs, whose ids
// are stable and append-only. export does not import tracer (DESIGN: export -> internal
// only); TestEBPFAPINames keeps the two tables equal.
var ebpfAPIs = []string{"", "cuLaunchKernel", "cuLaunchKernel_ptsz", "cuLaunchKernelEx", "cuLaunchKernelEx_ptsz",
	"cuLaunchCooperativeKernel", "cuLaunchCooperativeKernel_ptsz", "cuGraphLaunch", "cuGraphLaunch_ptsz",
	"cuMemcpyAsync", "cuMemcpyAsync_ptsz", "cuMemcpyHtoDAsync_v2", "cuMemcpyHtoDAsync_v2_ptsz", "cuMemcpyDtoHAsync_v2",
	"cuMemcpyDtoHAsync_v2_ptsz", "cuMemcpyDtoDAsync_v2", "cuMemcpyDtoDAsync_v2_ptsz", "cuMemcpy2DAsync_v2",
	"cuMemcpy2DAsync_v2_ptsz", "cuMemsetD8Async", "cuMemsetD8Async_ptsz", "cuMemsetD16Async", "cuMemsetD16Async_ptsz",
	"cuMemsetD32Async", "cuMemsetD32Async_ptsz", "cuStreamSynchronize", "cuStreamSynchronize_ptsz", "cuEventSynchronize",
	"cuCtxSynchronize", "cuCtxSynchronize_v2"}

func ebpfAPIName(id uint16) string {
	if int(id) < len(ebpfAPIs) && id > 0 {
		return ebpfAPIs[id]
	}
	return "api_" + strconv.Itoa(int(id))
}
