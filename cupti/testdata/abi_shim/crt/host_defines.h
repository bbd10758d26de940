/* Minimal stand-in for CUDA's crt/host_defines.h (shipped with nvcc, not with the
 * runtime wheels) so the ABI check can include builtin_types.h with a host C
 * compiler. Only attribute macros; no types. */
#ifndef PM_SHIM_HOST_DEFINES_H
#define PM_SHIM_HOST_DEFINES_H
#define __host__
#define __device__
#define __global__
#define __shared__
#define __constant__
#define __managed__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __align__(n) __attribute__((aligned(n)))
#define __builtin_align__(a) __align__(a)
#define __thread__ __thread
#define __import__
#define __export__
#define __cdecl
#define __annotate__(a) __attribute__((a))
#define __location__(a) __annotate__(a)
#define CUDARTAPI
#define CUDARTAPI_CDECL
#define __specialization_static
#define __cudart_builtin__
#define __device_builtin__
#define __device_builtin_texture_type__
#define __device_builtin_surface_type__
#define __cuda_builtin_vector_align8(tag, members) struct __device_builtin__ __align__(8) tag { members }
#define __CUDA_ALIGN__(n) __attribute__((aligned(n)))
#define CUDA_CB
#endif
