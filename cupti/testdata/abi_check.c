/* abi_check.c — compiled (never run) against real CUPTI headers by
 * `make -C cupti abi-check`: every offset, enum value and callback id that
 * csrc/pm_cupti_abi.h declares by hand must equal the header's. Compiled once
 * with CUDA 12.9 headers (CUPTI_API_VERSION 28) and once with 13.0 headers
 * (130001). A mismatch is a compile error naming the field. */
#include <stddef.h>
#include <cupti.h>
#include "pm_cupti_abi.h"

#if PM_EXPECT_MAJOR == 13
_Static_assert(CUPTI_API_VERSION >= 130000, "expected CUDA 13 CUPTI headers");
#else
_Static_assert(CUPTI_API_VERSION < 130000 && CUPTI_API_VERSION >= 18, "expected CUDA 12 CUPTI headers");
#endif

#define EQ(a, b) _Static_assert((long long)(a) == (long long)(b), #a " != " #b)
#define OFF(ours, f, theirs, tf) EQ(offsetof(struct ours, f), offsetof(theirs, tf))
#define SZ(ours, f, theirs, tf) EQ(sizeof(((struct ours *)0)->f), sizeof(((theirs *)0)->tf))
#define FIELD(ours, f, theirs, tf) OFF(ours, f, theirs, tf); SZ(ours, f, theirs, tf)

/* result codes and enums */
EQ(PM_CUPTI_SUCCESS, CUPTI_SUCCESS);
EQ(PM_CUPTI_ERROR_INVALID_PARAMETER, CUPTI_ERROR_INVALID_PARAMETER);
EQ(PM_CUPTI_ERROR_MAX_LIMIT_REACHED, CUPTI_ERROR_MAX_LIMIT_REACHED);
EQ(PM_CUPTI_ERROR_NOT_COMPATIBLE, CUPTI_ERROR_NOT_COMPATIBLE);
EQ(PM_CUPTI_ERROR_NOT_INITIALIZED, CUPTI_ERROR_NOT_INITIALIZED);
EQ(PM_CUPTI_ERROR_INVALID_KIND, CUPTI_ERROR_INVALID_KIND);
EQ(PM_CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED, CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED);
EQ(PM_KIND_MEMCPY, CUPTI_ACTIVITY_KIND_MEMCPY);
EQ(PM_KIND_MEMSET, CUPTI_ACTIVITY_KIND_MEMSET);
EQ(PM_KIND_KERNEL, CUPTI_ACTIVITY_KIND_KERNEL);
EQ(PM_KIND_DRIVER, CUPTI_ACTIVITY_KIND_DRIVER);
EQ(PM_KIND_RUNTIME, CUPTI_ACTIVITY_KIND_RUNTIME);
EQ(PM_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
EQ(PM_KIND_DEVICE, CUPTI_ACTIVITY_KIND_DEVICE);
EQ(PM_KIND_CONTEXT, CUPTI_ACTIVITY_KIND_CONTEXT);
EQ(PM_KIND_OVERHEAD, CUPTI_ACTIVITY_KIND_OVERHEAD);
EQ(PM_KIND_SYNCHRONIZATION, CUPTI_ACTIVITY_KIND_SYNCHRONIZATION);
EQ(PM_KIND_GRAPH_TRACE, CUPTI_ACTIVITY_KIND_GRAPH_TRACE);
EQ(PM_ATTR_DEVICE_BUFFER_SIZE, CUPTI_ACTIVITY_ATTR_DEVICE_BUFFER_SIZE);
EQ(PM_ATTR_DEVICE_BUFFER_POOL_LIMIT, CUPTI_ACTIVITY_ATTR_DEVICE_BUFFER_POOL_LIMIT);
EQ(PM_ATTR_ZEROED_OUT_ACTIVITY_BUFFER, CUPTI_ACTIVITY_ATTR_ZEROED_OUT_ACTIVITY_BUFFER);
EQ(PM_ATTR_DEVICE_BUFFER_PRE_ALLOCATE_VALUE, CUPTI_ACTIVITY_ATTR_DEVICE_BUFFER_PRE_ALLOCATE_VALUE);
EQ(PM_THREAD_ID_TYPE_SYSTEM, CUPTI_ACTIVITY_THREAD_ID_TYPE_SYSTEM);
EQ(PM_FLUSH_FORCED, CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
EQ(PM_CB_DOMAIN_DRIVER_API, CUPTI_CB_DOMAIN_DRIVER_API);
EQ(PM_CB_DOMAIN_RUNTIME_API, CUPTI_CB_DOMAIN_RUNTIME_API);

/* callback ids */
#define D(n) EQ(PM_DRV_##n, CUPTI_DRIVER_TRACE_CBID_##n)
D(cuCtxSynchronize); D(cuEventSynchronize); D(cuStreamSynchronize); D(cuMemsetD8Async); D(cuMemsetD16Async);
D(cuMemsetD32Async); D(cuMemcpyHtoD_v2); D(cuMemcpyHtoDAsync_v2); D(cuMemcpyDtoH_v2); D(cuMemcpyDtoHAsync_v2);
D(cuMemcpyDtoDAsync_v2); D(cuStreamWaitEvent); D(cuMemcpy); D(cuMemcpyAsync); D(cuLaunchKernel);
D(cuMemcpyPeerAsync); D(cuMemcpyAsync_ptsz); D(cuMemcpyHtoDAsync_v2_ptsz); D(cuMemcpyDtoHAsync_v2_ptsz);
D(cuMemcpyDtoDAsync_v2_ptsz); D(cuMemcpyPeerAsync_ptsz); D(cuMemsetD8Async_ptsz); D(cuMemsetD32Async_ptsz);
D(cuStreamWaitEvent_ptsz); D(cuStreamSynchronize_ptsz); D(cuLaunchKernel_ptsz); D(cuLaunchCooperativeKernel);
D(cuLaunchCooperativeKernel_ptsz); D(cuGraphLaunch); D(cuGraphLaunch_ptsz); D(cuLaunchKernelEx);
D(cuLaunchKernelEx_ptsz);
#if PM_EXPECT_MAJOR == 13
D(cuCtxSynchronize_v2);
#endif
#define R(n) EQ(PM_RT_##n, CUPTI_RUNTIME_TRACE_CBID_##n)
R(cudaMemcpy_v3020); R(cudaMemcpyAsync_v3020); R(cudaMemset_v3020); R(cudaMemsetAsync_v3020);
R(cudaStreamSynchronize_v3020); R(cudaEventSynchronize_v3020); R(cudaStreamWaitEvent_v3020);
R(cudaMemcpyPeerAsync_v4000); R(cudaDeviceSynchronize_v3020); R(cudaLaunchKernel_v7000);
R(cudaLaunchKernel_ptsz_v7000); R(cudaMemcpyAsync_ptsz_v7000); R(cudaMemsetAsync_ptsz_v7000);
R(cudaStreamSynchronize_ptsz_v7000); R(cudaStreamWaitEvent_ptsz_v7000); R(cudaLaunchCooperativeKernel_v9000);
R(cudaLaunchCooperativeKernel_ptsz_v9000); R(cudaGraphLaunch_v10000); R(cudaGraphLaunch_ptsz_v10000);
R(cudaLaunchKernelExC_v11060); R(cudaLaunchKernelExC_ptsz_v11060);

/* kernel prefix: the same in Kernel9 (12.x record, still declared in 13) and Kernel10 (13.x record) */
#define KERNEL(T)                                                                                                    \
	FIELD(pm_cupti_kernel, kind, T, kind); FIELD(pm_cupti_kernel, registersPerThread, T, registersPerThread);     \
	FIELD(pm_cupti_kernel, start, T, start); FIELD(pm_cupti_kernel, end, T, end);                                \
	FIELD(pm_cupti_kernel, completed, T, completed); FIELD(pm_cupti_kernel, deviceId, T, deviceId);              \
	FIELD(pm_cupti_kernel, contextId, T, contextId); FIELD(pm_cupti_kernel, streamId, T, streamId);              \
	FIELD(pm_cupti_kernel, gridX, T, gridX); FIELD(pm_cupti_kernel, gridY, T, gridY);                            \
	FIELD(pm_cupti_kernel, gridZ, T, gridZ); FIELD(pm_cupti_kernel, blockX, T, blockX);                          \
	FIELD(pm_cupti_kernel, blockY, T, blockY); FIELD(pm_cupti_kernel, blockZ, T, blockZ);                        \
	FIELD(pm_cupti_kernel, staticSharedMemory, T, staticSharedMemory);                                           \
	FIELD(pm_cupti_kernel, dynamicSharedMemory, T, dynamicSharedMemory);                                         \
	FIELD(pm_cupti_kernel, localMemoryPerThread, T, localMemoryPerThread);                                       \
	FIELD(pm_cupti_kernel, localMemoryTotal, T, localMemoryTotal);                                               \
	FIELD(pm_cupti_kernel, correlationId, T, correlationId); FIELD(pm_cupti_kernel, gridId, T, gridId);          \
	FIELD(pm_cupti_kernel, name, T, name); FIELD(pm_cupti_kernel, queued, T, queued);                            \
	FIELD(pm_cupti_kernel, submitted, T, submitted); FIELD(pm_cupti_kernel, launchType, T, launchType);          \
	FIELD(pm_cupti_kernel, sharedMemoryExecuted, T, sharedMemoryExecuted);                                       \
	FIELD(pm_cupti_kernel, graphNodeId, T, graphNodeId); FIELD(pm_cupti_kernel, graphId, T, graphId)
KERNEL(CUpti_ActivityKernel9);
EQ(sizeof(CUpti_ActivityKernel9), 208);
#if PM_EXPECT_MAJOR == 13
KERNEL(CUpti_ActivityKernel10);
EQ(sizeof(CUpti_ActivityKernel10), 216);
EQ(PM_KERNEL10_IS_DEVICE_LAUNCHED_OFF, offsetof(CUpti_ActivityKernel10, isDeviceLaunched));
#endif

#define MEMCPY(T)                                                                                                    \
	FIELD(pm_cupti_memcpy, kind, T, kind); FIELD(pm_cupti_memcpy, copyKind, T, copyKind);                        \
	FIELD(pm_cupti_memcpy, srcKind, T, srcKind); FIELD(pm_cupti_memcpy, dstKind, T, dstKind);                    \
	FIELD(pm_cupti_memcpy, flags, T, flags); FIELD(pm_cupti_memcpy, bytes, T, bytes);                            \
	FIELD(pm_cupti_memcpy, start, T, start); FIELD(pm_cupti_memcpy, end, T, end);                                \
	FIELD(pm_cupti_memcpy, deviceId, T, deviceId); FIELD(pm_cupti_memcpy, contextId, T, contextId);              \
	FIELD(pm_cupti_memcpy, streamId, T, streamId); FIELD(pm_cupti_memcpy, correlationId, T, correlationId);      \
	FIELD(pm_cupti_memcpy, runtimeCorrelationId, T, runtimeCorrelationId);                                       \
	FIELD(pm_cupti_memcpy, graphNodeId, T, graphNodeId); FIELD(pm_cupti_memcpy, graphId, T, graphId)
MEMCPY(CUpti_ActivityMemcpy5);
MEMCPY(CUpti_ActivityMemcpy6);

FIELD(pm_cupti_memset, kind, CUpti_ActivityMemset4, kind);
FIELD(pm_cupti_memset, value, CUpti_ActivityMemset4, value);
FIELD(pm_cupti_memset, bytes, CUpti_ActivityMemset4, bytes);
FIELD(pm_cupti_memset, start, CUpti_ActivityMemset4, start);
FIELD(pm_cupti_memset, end, CUpti_ActivityMemset4, end);
FIELD(pm_cupti_memset, deviceId, CUpti_ActivityMemset4, deviceId);
FIELD(pm_cupti_memset, contextId, CUpti_ActivityMemset4, contextId);
FIELD(pm_cupti_memset, streamId, CUpti_ActivityMemset4, streamId);
FIELD(pm_cupti_memset, correlationId, CUpti_ActivityMemset4, correlationId);
FIELD(pm_cupti_memset, flags, CUpti_ActivityMemset4, flags);
FIELD(pm_cupti_memset, memoryKind, CUpti_ActivityMemset4, memoryKind);
FIELD(pm_cupti_memset, graphNodeId, CUpti_ActivityMemset4, graphNodeId);
FIELD(pm_cupti_memset, graphId, CUpti_ActivityMemset4, graphId);

#define SYNC(T)                                                                                                      \
	FIELD(pm_cupti_sync, kind, T, kind); OFF(pm_cupti_sync, type, T, type);                                      \
	FIELD(pm_cupti_sync, start, T, start); FIELD(pm_cupti_sync, end, T, end);                                    \
	FIELD(pm_cupti_sync, correlationId, T, correlationId); FIELD(pm_cupti_sync, contextId, T, contextId);        \
	FIELD(pm_cupti_sync, streamId, T, streamId); FIELD(pm_cupti_sync, cudaEventId, T, cudaEventId)
SYNC(CUpti_ActivitySynchronization);
SYNC(CUpti_ActivitySynchronization2);
EQ(sizeof(CUpti_ActivitySynchronization), 40);
EQ(sizeof(CUpti_ActivitySynchronization2), 56);

EQ(sizeof(struct pm_cupti_api), sizeof(CUpti_ActivityAPI));
OFF(pm_cupti_api, cbid, CUpti_ActivityAPI, cbid);
FIELD(pm_cupti_api, start, CUpti_ActivityAPI, start);
FIELD(pm_cupti_api, end, CUpti_ActivityAPI, end);
FIELD(pm_cupti_api, processId, CUpti_ActivityAPI, processId);
FIELD(pm_cupti_api, threadId, CUpti_ActivityAPI, threadId);
FIELD(pm_cupti_api, correlationId, CUpti_ActivityAPI, correlationId);
FIELD(pm_cupti_api, returnValue, CUpti_ActivityAPI, returnValue);

FIELD(pm_cupti_graph_trace, kind, CUpti_ActivityGraphTrace2, kind);
FIELD(pm_cupti_graph_trace, correlationId, CUpti_ActivityGraphTrace2, correlationId);
FIELD(pm_cupti_graph_trace, start, CUpti_ActivityGraphTrace2, start);
FIELD(pm_cupti_graph_trace, end, CUpti_ActivityGraphTrace2, end);
FIELD(pm_cupti_graph_trace, deviceId, CUpti_ActivityGraphTrace2, deviceId);
FIELD(pm_cupti_graph_trace, graphId, CUpti_ActivityGraphTrace2, graphId);
FIELD(pm_cupti_graph_trace, contextId, CUpti_ActivityGraphTrace2, contextId);
FIELD(pm_cupti_graph_trace, streamId, CUpti_ActivityGraphTrace2, streamId);

FIELD(pm_cupti_device, kind, CUpti_ActivityDevice5, kind);
FIELD(pm_cupti_device, globalMemorySize, CUpti_ActivityDevice5, globalMemorySize);
FIELD(pm_cupti_device, numMultiprocessors, CUpti_ActivityDevice5, numMultiprocessors);
FIELD(pm_cupti_device, computeCapabilityMajor, CUpti_ActivityDevice5, computeCapabilityMajor);
FIELD(pm_cupti_device, computeCapabilityMinor, CUpti_ActivityDevice5, computeCapabilityMinor);
FIELD(pm_cupti_device, id, CUpti_ActivityDevice5, id);
FIELD(pm_cupti_device, name, CUpti_ActivityDevice5, name);
EQ(sizeof(CUpti_ActivityDevice5), 184);
FIELD(pm_cupti_context, kind, CUpti_ActivityContext3, kind);
FIELD(pm_cupti_context, contextId, CUpti_ActivityContext3, contextId);
FIELD(pm_cupti_context, deviceId, CUpti_ActivityContext3, deviceId);
EQ(sizeof(CUpti_ActivityContext3), 32);

FIELD(pm_cupti_overhead, kind, CUpti_ActivityOverhead3, kind);
OFF(pm_cupti_overhead, overheadKind, CUpti_ActivityOverhead3, overheadKind);
OFF(pm_cupti_overhead, objectKind, CUpti_ActivityOverhead3, objectKind);
OFF(pm_cupti_overhead, objectId, CUpti_ActivityOverhead3, objectId);
EQ(sizeof(((struct pm_cupti_overhead *)0)->objectId), sizeof(CUpti_ActivityObjectKindId));
FIELD(pm_cupti_overhead, start, CUpti_ActivityOverhead3, start);
FIELD(pm_cupti_overhead, end, CUpti_ActivityOverhead3, end);
FIELD(pm_cupti_overhead, correlationId, CUpti_ActivityOverhead3, correlationId);
OFF(pm_cupti_overhead, objectId[1], CUpti_ActivityOverhead3, objectId.pt.threadId);

#if CUPTI_API_VERSION >= 130000
FIELD(pm_cupti_subscriber_params, structSize, CUpti_SubscriberParams, structSize);
FIELD(pm_cupti_subscriber_params, subscriberName, CUpti_SubscriberParams, subscriberName);
FIELD(pm_cupti_subscriber_params, oldSubscriberName, CUpti_SubscriberParams, oldSubscriberName);
FIELD(pm_cupti_subscriber_params, oldSubscriberSize, CUpti_SubscriberParams, oldSubscriberSize);
EQ(sizeof(struct pm_cupti_subscriber_params), CUpti_SubscriberParams_STRUCT_SIZE);
#endif

/* function signatures the agent declares (pm_agent.c G.* pointers) */
static pm_buf_request_fn chk_req __attribute__((unused)) = (CUpti_BuffersCallbackRequestFunc)0;
static pm_buf_complete_fn chk_comp __attribute__((unused));
static void chk_fns(void) __attribute__((unused));
static void chk_fns(void)
{
	CUpti_BuffersCallbackCompleteFunc c = 0;
	(void)c;
	CUptiResult (*gv)(uint32_t *) = cuptiGetVersion;
	CUptiResult (*fl)(uint32_t) = cuptiActivityFlushAll;
	CUptiResult (*nr)(uint8_t *, size_t, CUpti_Activity **) = cuptiActivityGetNextRecord;
	CUptiResult (*dr)(CUcontext, uint32_t, size_t *) = cuptiActivityGetNumDroppedRecords;
	CUptiResult (*ts)(CUpti_TimestampCallbackFunc) = cuptiActivityRegisterTimestampCallback;
	CUptiResult (*ed)(CUpti_CallbackId, uint8_t) = cuptiActivityEnableDriverApi;
	CUptiResult (*er)(CUpti_CallbackId, uint8_t) = cuptiActivityEnableRuntimeApi;
	CUptiResult (*sa)(CUpti_ActivityAttribute, size_t *, void *) = cuptiActivitySetAttribute;
	CUptiResult (*st)(CUpti_ActivityThreadIdType) = cuptiSetThreadIdType;
	CUptiResult (*dd)(CUpti_ActivityKind) = cuptiActivityEnableAndDump;
	(void)dd;
	(void)gv, (void)fl, (void)nr, (void)dr, (void)ts, (void)ed, (void)er, (void)sa, (void)st;
}
