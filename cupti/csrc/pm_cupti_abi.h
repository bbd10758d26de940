/* pm_cupti_abi.h — the small part of the CUPTI ABI the agent uses, declared
 * without CUPTI headers (DESIGN decision 3).
 *
 * Records are *prefix* structs: only fields whose offsets are identical in
 * CUPTI 12.x (Kernel9, Memcpy5, Memset4, Synchronization, GraphTrace2,
 * Overhead3, API) and 13.x (Kernel10, Memcpy6, Memset4, Synchronization2, …).
 * Buffers are always walked with cuptiActivityGetNextRecord, never with
 * sizeof. Fields added later (Kernel10.isDeviceLaunched @208, Synchronization2
 * @40..) are read only when cuptiGetVersion() says the running CUPTI writes
 * them. Every offset below is checked against the real 12.9 and 13.0 headers
 * by cupti/testdata/abi_check.c (make -C cupti abi-check).
 */
#ifndef PM_CUPTI_ABI_H
#define PM_CUPTI_ABI_H

#include <stddef.h>
#include <stdint.h>

typedef int pm_CUptiResult; /* CUptiResult */
enum {
	PM_CUPTI_SUCCESS = 0,
	PM_CUPTI_ERROR_INVALID_PARAMETER = 1,
	PM_CUPTI_ERROR_MAX_LIMIT_REACHED = 12,
	PM_CUPTI_ERROR_NOT_COMPATIBLE = 14,
	PM_CUPTI_ERROR_NOT_INITIALIZED = 15,
	PM_CUPTI_ERROR_INVALID_KIND = 21,
	PM_CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED = 39,
};

/* CUpti_ActivityKind (stable values since CUDA 11) */
enum {
	PM_KIND_MEMCPY = 1,
	PM_KIND_MEMSET = 2,
	PM_KIND_KERNEL = 3,
	PM_KIND_DRIVER = 4,
	PM_KIND_RUNTIME = 5,
	PM_KIND_DEVICE = 8,
	PM_KIND_CONTEXT = 9,
	PM_KIND_CONCURRENT_KERNEL = 10,
	PM_KIND_OVERHEAD = 17,
	PM_KIND_SYNCHRONIZATION = 38,
	PM_KIND_GRAPH_TRACE = 51,
};

/* CUpti_ActivityAttribute */
enum {
	PM_ATTR_DEVICE_BUFFER_SIZE = 0,
	PM_ATTR_DEVICE_BUFFER_POOL_LIMIT = 2,
	PM_ATTR_ZEROED_OUT_ACTIVITY_BUFFER = 5,
	PM_ATTR_DEVICE_BUFFER_PRE_ALLOCATE_VALUE = 6,
};

enum { PM_THREAD_ID_TYPE_SYSTEM = 1 };        /* CUPTI_ACTIVITY_THREAD_ID_TYPE_SYSTEM */
enum { PM_FLUSH_FORCED = 1 };                 /* CUPTI_ACTIVITY_FLAG_FLUSH_FORCED */
enum { PM_CB_DOMAIN_DRIVER_API = 1, PM_CB_DOMAIN_RUNTIME_API = 2 };

/* CUpti_driver_api_trace_cbid (cupti_driver_cbid.h), same values in 12.9 and 13.0 */
enum {
	PM_DRV_cuCtxSynchronize = 17,
	PM_DRV_cuEventSynchronize = 121,
	PM_DRV_cuStreamSynchronize = 126,
	PM_DRV_cuMemsetD8Async = 216,
	PM_DRV_cuMemsetD16Async = 218,
	PM_DRV_cuMemsetD32Async = 220,
	PM_DRV_cuMemcpyHtoD_v2 = 276,
	PM_DRV_cuMemcpyHtoDAsync_v2 = 277,
	PM_DRV_cuMemcpyDtoH_v2 = 278,
	PM_DRV_cuMemcpyDtoHAsync_v2 = 279,
	PM_DRV_cuMemcpyDtoDAsync_v2 = 281,
	PM_DRV_cuStreamWaitEvent = 295,
	PM_DRV_cuMemcpy = 305,
	PM_DRV_cuMemcpyAsync = 306,
	PM_DRV_cuLaunchKernel = 307,
	PM_DRV_cuMemcpyPeerAsync = 319,
	PM_DRV_cuMemcpyAsync_ptsz = 418,
	PM_DRV_cuMemcpyHtoDAsync_v2_ptsz = 421,
	PM_DRV_cuMemcpyDtoHAsync_v2_ptsz = 422,
	PM_DRV_cuMemcpyDtoDAsync_v2_ptsz = 423,
	PM_DRV_cuMemcpyPeerAsync_ptsz = 426,
	PM_DRV_cuMemsetD8Async_ptsz = 428,
	PM_DRV_cuMemsetD32Async_ptsz = 430,
	PM_DRV_cuStreamWaitEvent_ptsz = 436,
	PM_DRV_cuStreamSynchronize_ptsz = 440,
	PM_DRV_cuLaunchKernel_ptsz = 442,
	PM_DRV_cuLaunchCooperativeKernel = 477,
	PM_DRV_cuLaunchCooperativeKernel_ptsz = 478,
	PM_DRV_cuGraphLaunch = 514,
	PM_DRV_cuGraphLaunch_ptsz = 515,
	PM_DRV_cuLaunchKernelEx = 652,
	PM_DRV_cuLaunchKernelEx_ptsz = 653,
	PM_DRV_cuCtxSynchronize_v2 = 800, /* 13.0+ only */
};

/* CUpti_runtime_api_trace_cbid (cupti_runtime_cbid.h), same values in 12.9 and 13.0 */
enum {
	PM_RT_cudaMemcpy_v3020 = 31,
	PM_RT_cudaMemcpyAsync_v3020 = 41,
	PM_RT_cudaMemset_v3020 = 49,
	PM_RT_cudaMemsetAsync_v3020 = 51,
	PM_RT_cudaStreamSynchronize_v3020 = 131,
	PM_RT_cudaEventSynchronize_v3020 = 137,
	PM_RT_cudaStreamWaitEvent_v3020 = 147,
	PM_RT_cudaMemcpyPeerAsync_v4000 = 161,
	PM_RT_cudaDeviceSynchronize_v3020 = 165,
	PM_RT_cudaLaunchKernel_v7000 = 211,
	PM_RT_cudaLaunchKernel_ptsz_v7000 = 214,
	PM_RT_cudaMemcpyAsync_ptsz_v7000 = 225,
	PM_RT_cudaMemsetAsync_ptsz_v7000 = 235,
	PM_RT_cudaStreamSynchronize_ptsz_v7000 = 239,
	PM_RT_cudaStreamWaitEvent_ptsz_v7000 = 247,
	PM_RT_cudaLaunchCooperativeKernel_v9000 = 269,
	PM_RT_cudaLaunchCooperativeKernel_ptsz_v9000 = 270,
	PM_RT_cudaGraphLaunch_v10000 = 311,
	PM_RT_cudaGraphLaunch_ptsz_v10000 = 312,
	PM_RT_cudaLaunchKernelExC_v11060 = 430,
	PM_RT_cudaLaunchKernelExC_ptsz_v11060 = 431,
};

/* Record prefixes. Offsets in comments; asserted below and against real headers. */
struct pm_cupti_kernel { /* CUpti_ActivityKernel9 (12.x, 208 B) / Kernel10 (13.x, 216 B) */
	uint32_t kind;                 /* 0 */
	uint8_t cacheConfig;           /* 4 */
	uint8_t sharedMemoryConfig;    /* 5 */
	uint16_t registersPerThread;   /* 6 */
	int32_t partitionedReq;        /* 8 */
	int32_t partitionedExec;       /* 12 */
	uint64_t start;                /* 16 */
	uint64_t end;                  /* 24 */
	uint64_t completed;            /* 32 */
	uint32_t deviceId;             /* 40 */
	uint32_t contextId;            /* 44 */
	uint32_t streamId;             /* 48 */
	int32_t gridX, gridY, gridZ;   /* 52 56 60 */
	int32_t blockX, blockY, blockZ;/* 64 68 72 */
	int32_t staticSharedMemory;    /* 76 */
	int32_t dynamicSharedMemory;   /* 80 */
	uint32_t localMemoryPerThread; /* 84 */
	uint32_t localMemoryTotal;     /* 88 */
	uint32_t correlationId;        /* 92 */
	int64_t gridId;                /* 96 */
	const char *name;              /* 104 */
	void *reserved0;               /* 112 */
	uint64_t queued;               /* 120 */
	uint64_t submitted;            /* 128 */
	uint8_t launchType;            /* 136 */
	uint8_t isSharedMemoryCarveoutRequested; /* 137 */
	uint8_t sharedMemoryCarveoutRequested;   /* 138 */
	uint8_t padding;               /* 139 */
	uint32_t sharedMemoryExecuted; /* 140 */
	uint64_t graphNodeId;          /* 144 */
	uint32_t shmemLimitConfig;     /* 152 */
	uint32_t graphId;              /* 156 */
};
#define PM_KERNEL10_IS_DEVICE_LAUNCHED_OFF 208 /* u8, Kernel10 (CUPTI >= 130000) */

struct pm_cupti_memcpy { /* Memcpy5 (12.x) / Memcpy6 (12.8+, 13.x) */
	uint32_t kind;           /* 0 */
	uint8_t copyKind;        /* 4 */
	uint8_t srcKind;         /* 5 */
	uint8_t dstKind;         /* 6 */
	uint8_t flags;           /* 7 */
	uint64_t bytes;          /* 8 */
	uint64_t start;          /* 16 */
	uint64_t end;            /* 24 */
	uint32_t deviceId;       /* 32 */
	uint32_t contextId;      /* 36 */
	uint32_t streamId;       /* 40 */
	uint32_t correlationId;  /* 44 */
	uint32_t runtimeCorrelationId; /* 48 */
	uint32_t pad;            /* 52 */
	void *reserved0;         /* 56 */
	uint64_t graphNodeId;    /* 64 */
	uint32_t graphId;        /* 72 */
};

struct pm_cupti_memset { /* Memset4 */
	uint32_t kind;           /* 0 */
	uint32_t value;          /* 4 */
	uint64_t bytes;          /* 8 */
	uint64_t start;          /* 16 */
	uint64_t end;            /* 24 */
	uint32_t deviceId;       /* 32 */
	uint32_t contextId;      /* 36 */
	uint32_t streamId;       /* 40 */
	uint32_t correlationId;  /* 44 */
	uint16_t flags;          /* 48 */
	uint16_t memoryKind;     /* 50 */
	uint32_t pad;            /* 52 */
	void *reserved0;         /* 56 */
	uint64_t graphNodeId;    /* 64 */
	uint32_t graphId;        /* 72 */
};

struct pm_cupti_sync { /* Synchronization (12.x, 40 B) prefix of Synchronization2 (13.x, 56 B) */
	uint32_t kind;           /* 0 */
	uint32_t type;           /* 4 */
	uint64_t start;          /* 8 */
	uint64_t end;            /* 16 */
	uint32_t correlationId;  /* 24 */
	uint32_t contextId;      /* 28 */
	uint32_t streamId;       /* 32 */
	uint32_t cudaEventId;    /* 36 */
};

struct pm_cupti_api { /* CUpti_ActivityAPI (40 B, unchanged) */
	uint32_t kind;           /* 0 */
	uint32_t cbid;           /* 4 */
	uint64_t start;          /* 8 */
	uint64_t end;            /* 16 */
	uint32_t processId;      /* 24 */
	uint32_t threadId;       /* 28 */
	uint32_t correlationId;  /* 32 */
	uint32_t returnValue;    /* 36 */
};

struct pm_cupti_graph_trace { /* GraphTrace2 prefix (through streamId) */
	uint32_t kind;           /* 0 */
	uint32_t correlationId;  /* 4 */
	uint64_t start;          /* 8 */
	uint64_t end;            /* 16 */
	uint32_t deviceId;       /* 24 */
	uint32_t graphId;        /* 28 */
	uint32_t contextId;      /* 32 */
	uint32_t streamId;       /* 36 */
};

struct pm_cupti_overhead { /* Overhead3 prefix (through correlationId) */
	uint32_t kind;           /* 0 */
	uint32_t overheadKind;   /* 4 */
	uint32_t objectKind;     /* 8 */
	uint32_t objectId[3];    /* 12 (union: {processId, threadId} or {deviceId, contextId, streamId}) */
	uint64_t start;          /* 24 */
	uint64_t end;            /* 32 */
	uint32_t correlationId;  /* 40 */
};

struct pm_cupti_device { /* Device5 prefix (184 B in 12.9 and 13.0; only through name is read) */
	uint32_t kind;                   /* 0 */
	uint32_t flags;                  /* 4 */
	uint64_t globalMemoryBandwidth;  /* 8 (KB/s) */
	uint64_t globalMemorySize;       /* 16 (bytes) */
	uint32_t constantMemorySize;     /* 24 */
	uint32_t l2CacheSize;            /* 28 */
	uint32_t numThreadsPerWarp;      /* 32 */
	uint32_t coreClockRate;          /* 36 (kHz) */
	uint32_t numMemcpyEngines;       /* 40 */
	uint32_t numMultiprocessors;     /* 44 */
	uint8_t _skip0[56];              /* 48 */
	uint32_t computeCapabilityMajor; /* 104 */
	uint32_t computeCapabilityMinor; /* 108 */
	uint32_t id;                     /* 112 */
	uint32_t eccEnabled;             /* 116 */
	uint8_t uuid[16];                /* 120 */
	const char *name;                /* 136 */
};

struct pm_cupti_context { /* Context3 prefix (32 B in 12.9 and 13.0) */
	uint32_t kind;           /* 0 */
	uint32_t contextId;      /* 4 */
	uint32_t deviceId;       /* 8 */
};

/* CUpti_SubscriberParams (13.0+) */
struct pm_cupti_subscriber_params {
	size_t structSize;             /* 0 */
	const char *subscriberName;    /* 8 */
	char *oldSubscriberName;       /* 16 */
	size_t oldSubscriberSize;      /* 24 */
};

#define PM_ASSERT_OFF(t, f, o) _Static_assert(offsetof(struct t, f) == (o), #t "." #f)
PM_ASSERT_OFF(pm_cupti_device, computeCapabilityMajor, 104);
PM_ASSERT_OFF(pm_cupti_device, name, 136);
PM_ASSERT_OFF(pm_cupti_kernel, registersPerThread, 6);
PM_ASSERT_OFF(pm_cupti_kernel, start, 16);
PM_ASSERT_OFF(pm_cupti_kernel, end, 24);
PM_ASSERT_OFF(pm_cupti_kernel, deviceId, 40);
PM_ASSERT_OFF(pm_cupti_kernel, contextId, 44);
PM_ASSERT_OFF(pm_cupti_kernel, streamId, 48);
PM_ASSERT_OFF(pm_cupti_kernel, gridX, 52);
PM_ASSERT_OFF(pm_cupti_kernel, blockX, 64);
PM_ASSERT_OFF(pm_cupti_kernel, staticSharedMemory, 76);
PM_ASSERT_OFF(pm_cupti_kernel, dynamicSharedMemory, 80);
PM_ASSERT_OFF(pm_cupti_kernel, correlationId, 92);
PM_ASSERT_OFF(pm_cupti_kernel, name, 104);
PM_ASSERT_OFF(pm_cupti_kernel, launchType, 136);
PM_ASSERT_OFF(pm_cupti_kernel, graphNodeId, 144);
PM_ASSERT_OFF(pm_cupti_kernel, graphId, 156);
_Static_assert(sizeof(struct pm_cupti_kernel) == 160, "kernel prefix");
PM_ASSERT_OFF(pm_cupti_memcpy, bytes, 8);
PM_ASSERT_OFF(pm_cupti_memcpy, start, 16);
PM_ASSERT_OFF(pm_cupti_memcpy, correlationId, 44);
PM_ASSERT_OFF(pm_cupti_memcpy, graphNodeId, 64);
PM_ASSERT_OFF(pm_cupti_memcpy, graphId, 72);
PM_ASSERT_OFF(pm_cupti_memset, bytes, 8);
PM_ASSERT_OFF(pm_cupti_memset, correlationId, 44);
PM_ASSERT_OFF(pm_cupti_memset, flags, 48);
PM_ASSERT_OFF(pm_cupti_memset, memoryKind, 50);
PM_ASSERT_OFF(pm_cupti_memset, graphNodeId, 64);
PM_ASSERT_OFF(pm_cupti_memset, graphId, 72);
PM_ASSERT_OFF(pm_cupti_sync, cudaEventId, 36);
_Static_assert(sizeof(struct pm_cupti_sync) == 40, "sync prefix");
PM_ASSERT_OFF(pm_cupti_api, correlationId, 32);
_Static_assert(sizeof(struct pm_cupti_api) == 40, "api");
PM_ASSERT_OFF(pm_cupti_graph_trace, graphId, 28);
PM_ASSERT_OFF(pm_cupti_graph_trace, streamId, 36);
PM_ASSERT_OFF(pm_cupti_overhead, start, 24);
PM_ASSERT_OFF(pm_cupti_overhead, correlationId, 40);
_Static_assert(sizeof(struct pm_cupti_subscriber_params) == 32, "subscriber params");

/* Function types (CUPTIAPI is empty on Linux). */
typedef void (*pm_buf_request_fn)(uint8_t **buffer, size_t *size, size_t *maxNumRecords);
typedef void (*pm_buf_complete_fn)(void *ctx, uint32_t streamId, uint8_t *buffer, size_t size, size_t validSize);
typedef uint64_t (*pm_timestamp_fn)(void);
typedef void (*pm_callback_fn)(void *userdata, int domain, uint32_t cbid, const void *cbdata);

#endif
