/* fakecuda.c — a stand-in libcuda.so.1 for tests without a GPU.
 *
 * cuInit behaves like the real driver towards an injection library: once per
 * process, on the calling thread and before returning, it dlopens
 * CUDA_INJECTION64_PATH and calls its InitializeInjection; in a child forked
 * after the parent's cuInit it returns CUDA_ERROR_NOT_INITIALIZED (3) and so does
 * every other call. Launch, graph, copy, memset and sync functions carry the
 * real driver names and argument orders, and tell the mock CUPTI (if the
 * process loaded one) what the GPU did.
 *
 * Built with -O0 -fno-omit-frame-pointer so every exported function starts with
 * a normal frame prologue (uprobes in the eBPF tests attach to these).
 *
 * FAKECUDA_ZERO_TS_EVERY=N: every Nth kernel launch has no timestamps.
 * FAKECUDA_DUP_NAMES=1: each cuModuleGetFunction returns a new function object whose name
 * has the same text at a new address (CUPTI may hand out such pointers).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mock_event.h"

#define EXPORT __attribute__((visibility("default")))
typedef int CUresult;
typedef uint64_t CUdeviceptr;
typedef struct fake_func *CUfunction;
typedef struct fake_stream *CUstream;
typedef struct fake_graph *CUgraph;
typedef struct fake_graph *CUgraphExec;
typedef void *CUgraphNode;
typedef void *CUmodule;
typedef void *CUcontext;
typedef struct fake_event *CUevent;
typedef int CUdevice;

enum { CUDA_SUCCESS = 0, CUDA_ERROR_INVALID_VALUE = 1, CUDA_ERROR_NOT_INITIALIZED = 3 };

struct fake_func {
	char name[512];
	struct fake_func *next;
};
struct fake_graph {
	uint32_t id;
	int n;
	const char *nodes[MOCK_MAX_NODES];
	int instantiated;
};
struct fake_event {
	uint32_t id;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pid_t init_pid;
static struct fake_func *funcs;
static uint32_t next_graph_id = 1, next_event_id = 1;
static uint64_t launches;
static pid_t emit_pid;
static mockcupti_event_fn emit_fn;

static int find_cupti(struct dl_phdr_info *info, size_t size, void *data)
{
	(void)size;
	const char *n = info->dlpi_name;
	if (n && strstr(n, "libcupti.so")) {
		snprintf((char *)data, 4096, "%s", n);
		return 1;
	}
	return 0;
}

static void emit(struct mock_event *ev)
{
	pid_t me = getpid();
	if (emit_pid != me) {
		emit_fn = NULL;
		char path[4096] = "";
		if (dl_iterate_phdr(find_cupti, path) && path[0]) {
			void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
			if (h)
				*(void **)(&emit_fn) = dlsym(h, "mockcupti_event");
		}
		emit_pid = me;
	}
	if (emit_fn)
		emit_fn(ev);
}

static int ready(void) { return init_pid == getpid(); }

static uint32_t stream_id(CUstream s) { return s ? (uint32_t)(uintptr_t)s : 7u; }

EXPORT CUresult cuInit(unsigned int flags)
{
	(void)flags;
	pthread_mutex_lock(&mu);
	if (init_pid) {
		CUresult r = init_pid == getpid() ? CUDA_SUCCESS : CUDA_ERROR_NOT_INITIALIZED;
		pthread_mutex_unlock(&mu);
		return r;
	}
	init_pid = getpid();
	const char *p = getenv("CUDA_INJECTION64_PATH");
	if (p && *p) {
		void *h = dlopen(p, RTLD_NOW | RTLD_LOCAL);
		if (h) {
			int (*fn)(void) = NULL;
			*(void **)(&fn) = dlsym(h, "InitializeInjection");
			if (fn)
				fn();
		} else if (getenv("FAKECUDA_LOG")) {
			fprintf(stderr, "[fakecuda] injection %s: %s\n", p, dlerror());
		}
	}
	pthread_mutex_unlock(&mu);
	return CUDA_SUCCESS;
}

EXPORT CUresult cuDriverGetVersion(int *v)
{
	if (!v)
		return CUDA_ERROR_INVALID_VALUE;
	*v = 13000;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetCount(int *n)
{
	if (!ready())
		return CUDA_ERROR_NOT_INITIALIZED;
	*n = 1;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGet(CUdevice *d, int ordinal)
{
	if (!ready())
		return CUDA_ERROR_NOT_INITIALIZED;
	*d = ordinal;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuModuleLoadData(CUmodule *m, const void *image)
{
	(void)image;
	if (!ready())
		return CUDA_ERROR_NOT_INITIALIZED;
	*m = (CUmodule)(uintptr_t)0x1000;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name)
{
	(void)m;
	if (!ready())
		return CUDA_ERROR_NOT_INITIALIZED;
	if (!f || !name || strlen(name) >= sizeof(((struct fake_func *)0)->name))
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	struct fake_func *p = NULL;
	if (!getenv("FAKECUDA_DUP_NAMES")) /* set: every lookup gets its own copy (same text, new pointer) */
		for (p = funcs; p; p = p->next)
			if (!strcmp(p->name, name))
				break;
	if (!p) {
		p = calloc(1, sizeof *p);
		snprintf(p->name, sizeof p->name, "%s", name);
		p->next = funcs;
		funcs = p;
	}
	pthread_mutex_unlock(&mu);
	*f = p;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamCreate(CUstream *s, unsigned int flags)
{
	(void)flags;
	static uint32_t next = 13;
	if (!ready())
		return CUDA_ERROR_NOT_INITIALIZED;
	*s = (CUstream)(uintptr_t)__atomic_fetch_add(&next, 1, __ATOMIC_RELAXED);
	return CUDA_SUCCESS;
}

EXPORT CUresult cuEventCreate(CUevent *e, unsigned int flags)
{
	(void)flags;
	if (!ready())
		return CUDA_ERROR_NOT_INITIALIZED;
	struct fake_event *ev = calloc(1, sizeof *ev);
	ev->id = __atomic_fetch_add(&next_event_id, 1, __ATOMIC_RELAXED);
	*e = ev;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuEventRecord(CUevent e, CUstream s)
{
	(void)e;
	(void)s;
	return ready() ? CUDA_SUCCESS : CUDA_ERROR_NOT_INITIALIZED;
}

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t bytes)
{
	static uint64_t next = 0x7f0000000000ull;
	if (!ready())
		return CUDA_ERROR_NOT_INITIALIZED;
	*p = __atomic_fetch_add(&next, (bytes + 4095) & ~4095ull, __ATOMIC_RELAXED);
	return CUDA_SUCCESS;
}

EXPORT CUresult cuMemFree_v2(CUdeviceptr p)
{
	(void)p;
	return ready() ? CUDA_SUCCESS : CUDA_ERROR_NOT_INITIALIZED;
}

static CUresult launch(uint32_t cbid, CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
		       unsigned bz, unsigned shmem, CUstream s, int coop)
{
	if (!ready())
		return CUDA_ERROR_NOT_INITIALIZED;
	if (!f)
		return CUDA_ERROR_INVALID_VALUE;
	struct mock_event ev;
	memset(&ev, 0, sizeof ev);
	ev.type = MOCK_EV_LAUNCH;
	ev.cbid = cbid;
	ev.stream = stream_id(s);
	ev.name = f->name;
	ev.grid[0] = (int)gx, ev.grid[1] = (int)gy, ev.grid[2] = (int)gz;
	ev.block[0] = (int)bx, ev.block[1] = (int)by, ev.block[2] = (int)bz;
	ev.shmem = (int)shmem;
	ev.cooperative = coop;
	static int zero_every = -1;
	if (zero_every < 0) {
		const char *z = getenv("FAKECUDA_ZERO_TS_EVERY");
		zero_every = z ? atoi(z) : 0;
	}
	uint64_t n = __atomic_add_fetch(&launches, 1, __ATOMIC_RELAXED);
	ev.zero_ts = zero_every > 0 && n % (uint64_t)zero_every == 0;
	emit(&ev);
	return CUDA_SUCCESS;
}

EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
			       unsigned bz, unsigned shmem, CUstream s, void **params, void **extra)
{
	(void)params;
	(void)extra;
	return launch(307, f, gx, gy, gz, bx, by, bz, shmem, s, 0);
}

EXPORT CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
				    unsigned bz, unsigned shmem, CUstream s, void **params, void **extra)
{
	(void)params;
	(void)extra;
	return launch(442, f, gx, gy, gz, bx, by, bz, shmem, s, 0);
}

typedef struct {
	unsigned gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes;
	CUstream hStream;
	void *attrs;
	unsigned numAttrs;
} CUlaunchConfig;

EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f, void **params, void **extra)
{
	(void)params;
	(void)extra;
	if (!c)
		return CUDA_ERROR_INVALID_VALUE;
	return launch(652, f, c->gridDimX, c->gridDimY, c->gridDimZ, c->blockDimX, c->blockDimY, c->blockDimZ,
		      c->sharedMemBytes, c->hStream, 0);
}

EXPORT CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
					  unsigned by, unsigned bz, unsigned shmem, CUstream s, void **params)
{
	(void)params;
	return launch(477, f, gx, gy, gz, bx, by, bz, shmem, s, 1);
}

EXPORT CUresult cuGraphCreate(CUgraph *g, unsigned int flags)
{
	(void)flags;
	if (!ready())
		return CUDA_ERROR_NOT_INITIALIZED;
	*g = calloc(1, sizeof(struct fake_graph));
	return CUDA_SUCCESS;
}

typedef struct {
	CUfunction func;
	unsigned gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes;
	void **kernelParams;
	void **extra;
} CUDA_KERNEL_NODE_PARAMS;

EXPORT CUresult cuGraphAddKernelNode_v2(CUgraphNode *node, CUgraph g, const CUgraphNode *deps, size_t ndeps,
					const CUDA_KERNEL_NODE_PARAMS *p)
{
	(void)deps;
	(void)ndeps;
	if (!ready())
		return CUDA_ERROR_NOT_INITIALIZED;
	if (!g || !p || !p->func || g->n >= MOCK_MAX_NODES)
		return CUDA_ERROR_INVALID_VALUE;
	g->nodes[g->n++] = p->func->name;
	if (node)
		*node = (CUgraphNode)(uintptr_t)g->n;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphAddKernelNode(CUgraphNode *node, CUgraph g, const CUgraphNode *deps, size_t ndeps,
				     const CUDA_KERNEL_NODE_PARAMS *p)
{
	return cuGraphAddKernelNode_v2(node, g, deps, ndeps, p);
}

EXPORT CUresult cuGraphInstantiateWithFlags(CUgraphExec *exec, CUgraph g, unsigned long long flags)
{
	(void)flags;
	if (!ready())
		return CUDA_ERROR_NOT_INITIALIZED;
	if (!g || !exec)
		return CUDA_ERROR_INVALID_VALUE;
	struct fake_graph *e = malloc(sizeof *e);
	*e = *g;
	e->id = __atomic_fetch_add(&next_graph_id, 1, __ATOMIC_RELAXED);
	e->instantiated = 1;
	*exec = e;
	struct mock_event ev; /* the mock CUPTI remembers whether GRAPH_TRACE was on at instantiation */
	memset(&ev, 0, sizeof ev);
	ev.type = MOCK_EV_INSTANTIATE;
	ev.graph_id = e->id;
	emit(&ev);
	return CUDA_SUCCESS;
}

static CUresult graph_launch(uint32_t cbid, CUgraphExec e, CUstream s)
{
	if (!ready())
		return CUDA_ERROR_NOT_INITIALIZED;
	if (!e || !e->instantiated)
		return CUDA_ERROR_INVALID_VALUE;
	struct mock_event ev;
	memset(&ev, 0, sizeof ev);
	ev.type = MOCK_EV_GRAPH;
	ev.cbid = cbid;
	ev.stream = stream_id(s);
	ev.graph_id = e->id;
	ev.nnodes = e->n;
	for (int i = 0; i < e->n; i++)
		ev.nodes[i] = e->nodes[i];
	emit(&ev);
	return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphLaunch(CUgraphExec e, CUstream s) { return graph_launch(514, e, s); }
EXPORT CUresult cuGraphLaunch_ptsz(CUgraphExec e, CUstream s) { return graph_launch(515, e, s); }

static CUresult copy(uint32_t cbid, size_t bytes, CUstream s, uint8_t kind, uint8_t src, uint8_t dst)
{
	if (!ready())
		return CUDA_ERROR_NOT_INITIALIZED;
	struct mock_event ev;
	memset(&ev, 0, sizeof ev);
	ev.type = MOCK_EV_MEMCPY;
	ev.cbid = cbid;
	ev.stream = stream_id(s);
	ev.bytes = bytes;
	ev.copy_kind = kind;
	ev.src_kind = src;
	ev.dst_kind = dst;
	emit(&ev);
	return CUDA_SUCCESS;
}

/* Memory kinds: 1 pageable, 2 pinned, 3 device. Copy kinds: 1 HtoD, 2 DtoH, 8 DtoD. */
EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t bytes, CUstream s)
{
	(void)dst;
	(void)src;
	return copy(277, bytes, s, 1, 2, 3);
}
EXPORT CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t bytes, CUstream s)
{
	(void)dst;
	(void)src;
	return copy(279, bytes, s, 2, 3, 2);
}
EXPORT CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream s)
{
	(void)dst;
	(void)src;
	return copy(281, bytes, s, 8, 3, 3);
}
EXPORT CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream s)
{
	(void)dst;
	(void)src;
	return copy(306, bytes, s, 8, 3, 3);
}
EXPORT CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t bytes)
{
	(void)dst;
	(void)src;
	return copy(276, bytes, NULL, 1, 1, 3);
}
EXPORT CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t bytes)
{
	(void)dst;
	(void)src;
	return copy(278, bytes, NULL, 2, 3, 1);
}

static CUresult memset_(uint32_t cbid, size_t bytes, uint32_t value, CUstream s)
{
	if (!ready())
		return CUDA_ERROR_NOT_INITIALIZED;
	struct mock_event ev;
	memset(&ev, 0, sizeof ev);
	ev.type = MOCK_EV_MEMSET;
	ev.cbid = cbid;
	ev.stream = stream_id(s);
	ev.bytes = bytes;
	ev.value = value;
	emit(&ev);
	return CUDA_SUCCESS;
}

EXPORT CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char uc, size_t n, CUstream s)
{
	(void)d;
	return memset_(216, n, uc, s);
}
EXPORT CUresult cuMemsetD32Async(CUdeviceptr d, unsigned int ui, size_t n, CUstream s)
{
	(void)d;
	return memset_(220, n * 4, ui, s);
}

static CUresult sync_(uint32_t cbid, uint32_t type, CUstream s, uint32_t event)
{
	if (!ready())
		return CUDA_ERROR_NOT_INITIALIZED;
	struct mock_event ev;
	memset(&ev, 0, sizeof ev);
	ev.type = MOCK_EV_SYNC;
	ev.cbid = cbid;
	ev.sync_type = type;
	ev.stream = stream_id(s);
	ev.event_id = event;
	emit(&ev);
	return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamSynchronize(CUstream s) { return sync_(126, 3, s, 0); }
EXPORT CUresult cuEventSynchronize(CUevent e) { return e ? sync_(121, 1, NULL, e->id) : CUDA_ERROR_INVALID_VALUE; }
EXPORT CUresult cuCtxSynchronize(void) { return sync_(17, 4, NULL, 0); }
EXPORT CUresult cuCtxSynchronize_v2(CUcontext c)
{
	(void)c;
	return sync_(800, 4, NULL, 0);
}
