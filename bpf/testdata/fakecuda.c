// fakecuda.c: a stand-in libcuda.so.1 for the eBPF tests. It exports the driver entry points
// that tracer/apis.go probes, with the real argument lists, and does nothing but return
// CUDA_SUCCESS (syncs sleep 1 ms so the return probe measures a wait).
//
// Build (the tests do this): cc -shared -fPIC -O0 -fno-omit-frame-pointer -fcf-protection=none
//   -Wl,-soname,libcuda.so.1 -o libcuda.so.1 fakecuda.c
// -O0 and frame pointers give every function a `push %rbp` prologue like the real driver's
// entry points (the uprobe is emulated, not single-stepped); -fcf-protection=none keeps
// endbr64 off the first instruction; a LOCK-prefixed first instruction would never fire.
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

typedef int CUresult;
typedef void *CUfunction, *CUstream, *CUgraphExec, *CUevent, *CUcontext;
typedef uint64_t CUdeviceptr;
typedef struct {
	unsigned gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes;
	CUstream hStream;
	void *attrs;
	unsigned numAttrs;
} CUlaunchConfig;

static volatile uint64_t calls;

#define LAUNCH(name)                                                                              \
	CUresult name(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, \
		      unsigned bz, unsigned shmem, CUstream s, void **params, void **extra)          \
	{                                                                                         \
		calls++;                                                                          \
		return 0;                                                                         \
	}
LAUNCH(cuLaunchKernel)
LAUNCH(cuLaunchKernel_ptsz)

#define COOP(name)                                                                                \
	CUresult name(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, \
		      unsigned bz, unsigned shmem, CUstream s, void **params)                        \
	{                                                                                         \
		calls++;                                                                          \
		return 0;                                                                         \
	}
COOP(cuLaunchCooperativeKernel)
COOP(cuLaunchCooperativeKernel_ptsz)

#define LAUNCHEX(name)                                                                       \
	CUresult name(const CUlaunchConfig *c, CUfunction f, void **params, void **extra) \
	{                                                                                    \
		calls++;                                                                     \
		return 0;                                                                    \
	}
LAUNCHEX(cuLaunchKernelEx)
LAUNCHEX(cuLaunchKernelEx_ptsz)

#define GRAPH(name)                                  \
	CUresult name(CUgraphExec g, CUstream s)     \
	{                                            \
		calls++;                             \
		return 0;                            \
	}
GRAPH(cuGraphLaunch)
GRAPH(cuGraphLaunch_ptsz)

#define COPY(name)                                                              \
	CUresult name(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) \
	{                                                                       \
		calls++;                                                        \
		return 0;                                                       \
	}
COPY(cuMemcpyAsync)
COPY(cuMemcpyAsync_ptsz)
COPY(cuMemcpyHtoDAsync_v2)
COPY(cuMemcpyHtoDAsync_v2_ptsz)
COPY(cuMemcpyDtoHAsync_v2)
COPY(cuMemcpyDtoHAsync_v2_ptsz)
COPY(cuMemcpyDtoDAsync_v2)
COPY(cuMemcpyDtoDAsync_v2_ptsz)

#define COPY2D(name)                                 \
	CUresult name(const void *p, CUstream s)     \
	{                                            \
		calls++;                             \
		return 0;                            \
	}
COPY2D(cuMemcpy2DAsync_v2)
COPY2D(cuMemcpy2DAsync_v2_ptsz)

#define MEMSET(name, T)                                                   \
	CUresult name(CUdeviceptr dst, T v, size_t n, CUstream s)        \
	{                                                                 \
		calls++;                                                  \
		return 0;                                                 \
	}
MEMSET(cuMemsetD8Async, unsigned char)
MEMSET(cuMemsetD8Async_ptsz, unsigned char)
MEMSET(cuMemsetD16Async, unsigned short)
MEMSET(cuMemsetD16Async_ptsz, unsigned short)
MEMSET(cuMemsetD32Async, unsigned)
MEMSET(cuMemsetD32Async_ptsz, unsigned)

#define SYNC1(name, T)                   \
	CUresult name(T h)               \
	{                                \
		calls++;                 \
		usleep(1000);            \
		return 0;                \
	}
SYNC1(cuStreamSynchronize, CUstream)
SYNC1(cuStreamSynchronize_ptsz, CUstream)
SYNC1(cuEventSynchronize, CUevent)
SYNC1(cuCtxSynchronize_v2, CUcontext)

CUresult cuCtxSynchronize(void)
{
	calls++;
	usleep(1000);
	return 0;
}

CUresult cuInit(unsigned flags)
{
	return 0;
}

uint64_t fakecuda_calls(void)
{
	return calls;
}
