/* pm_agent.c — the in-process CUPTI agent (libprofilemate.so).
 *
 * C11, no C++ runtime, no Go runtime, no CUPTI headers or link (see
 * pm_cupti_abi.h). Entry points: the LD_PRELOAD constructor (arms
 * CUDA_INJECTION64_PATH only), InitializeInjection (called by libcuda inside
 * each process's first cuInit), pm_inject_start (late start in a running
 * process, docs/injection.md), InitializeInjectionNvtx2 (opt-in NVTX
 * forwarding). Policy: cupti/README.md. Every entry point returns quietly on
 * failure; nothing here may crash or hang the target.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "pm_cupti_abi.h"
#include "pm_records.h"
#include "pm_ring.h"

#define PM_EXPORT __attribute__((visibility("default")))
#define PM_UNUSED __attribute__((unused))

/* ------------------------------------------------------------------ config */

enum { PM_DETAIL_OFF = 0, PM_DETAIL_GRAPH = 1, PM_DETAIL_NODES = 2 };
enum { PM_REASON_TRACER = 0, PM_REASON_ENV = 1, PM_REASON_ORPHAN = 2, PM_REASON_YIELD = 3, PM_REASON_WINDOW_OPEN = 4,
       PM_REASON_WINDOW_CLOSE = 5, PM_REASON_DETACH = 6 };
enum { PM_LOG_DEBUG = 0, PM_LOG_INFO = 1, PM_LOG_WARN = 2, PM_LOG_ERROR = 3 };
enum {
	PM_AF_ARMED = 1u << 0, PM_AF_LATE = 1u << 1, PM_AF_PASSIVE = 1u << 2, PM_AF_TSCB = 1u << 3,
	PM_AF_SYSTID = 1u << 4, PM_AF_ALLOWLIST = 1u << 5, PM_AF_REFUSED = 1u << 6,
};

struct pm_config {
	int debug;
	int start_enable;      /* PROFILEMATE_START */
	uint32_t start_detail;
	uint64_t max_bytes;    /* PROFILEMATE_MAX_MB */
	uint64_t ring_bytes;   /* PROFILEMATE_RING_KB (power of two) */
	uint64_t buf_bytes;    /* PROFILEMATE_BUFFER_KB */
	uint32_t flush_ms;     /* PROFILEMATE_FLUSH_MS */
	uint64_t orphan_ns;    /* PROFILEMATE_ORPHAN_TIMEOUT (s; 0 = never) */
	uint32_t exit_flush_ms;/* PROFILEMATE_EXIT_FLUSH_MS */
	uint64_t dev_buf_bytes;/* PROFILEMATE_DEVICE_BUFFER_KB (0: CUPTI's default, 3.2 MB) */
	int yield;             /* PROFILEMATE_YIELD */
	int nvtx;              /* PROFILEMATE_NVTX */
	int api;               /* PROFILEMATE_API */
	int arm_full;          /* PROFILEMATE_ARM=full: CONCURRENT_KERNEL + GRAPH_TRACE at cuInit */
	int arm_graph;         /* PROFILEMATE_ARM=graph (or full): GRAPH_TRACE at cuInit */
	int arm_lazy;          /* PROFILEMATE_ARM=lazy: GRAPH_TRACE may be enabled mid-run (crashes CUPTI 13.0U1) */
	int arm_light;         /* PROFILEMATE_ARM=light: subscribe and register callbacks at cuInit even while dormant */
	uint32_t kinds_mask;   /* PROFILEMATE_KINDS (experiments; KB_* bits, re-read at each control change) */
	const char *cupti_path;/* PROFILEMATE_CUPTI_PATH */
	const char *ctl_socket;/* PROFILEMATE_CONTROL_SOCKET */
};

static struct pm_config C;

/* ------------------------------------------------------------------ injection (pm_inject_start) */

/* inject.conf (docs/injection.md §1), parsed on the caller's thread by pm_inject_start. */
struct pm_inject_conf {
	char path[PATH_MAX];       /* the conf file itself (passed on to late.start) */
	char pyhook_dir[PATH_MAX];
	char log[PATH_MAX];
	char cupti_path[PATH_MAX]; /* agent extra: libcupti to use */
	int pyhook_from_agent;
	int start_enable;
	uint32_t start_detail;
	double orphan_s;           /* < 0: default (30 s) */
	uint32_t flush_ms;         /* agent extras, 0: default */
	uint32_t ring_kb;
	uint32_t kinds;            /* agent extra (experiments): PROFILEMATE_KINDS mask, 0: default */
	int debug;
	char bad[256];             /* keys with invalid values, logged by the agent thread */
};

/* Process-lifetime injection state (survives detach, unlike one session's G below). */
static struct {
	int state;              /* PM_INJ_*: written with atomics */
	int log_fd;             /* the conf's log, O_APPEND; agent thread only once started */
	uint64_t start_ns;      /* CLOCK_MONOTONIC of the current pm_inject_start */
	uint32_t gen;           /* session generation: a Python bootstrap of an ended session does nothing */
	int sessions;           /* started so far in this process */
	struct pm_inject_conf conf;
} I = {.log_fd = -1};
/* I.state: who owns this copy of the agent. IDLE: nobody yet (or an injected session ended);
 * RUNNING: an injected session, from pm_inject_start until its thread's last instruction;
 * CUINIT: InitializeInjection ran (a preloaded or CUDA_INJECTION64_PATH agent, for good). */
enum { PM_INJ_IDLE = 0, PM_INJ_RUNNING = 1, PM_INJ_CUINIT = 2 };
/* The current session was started by pm_inject_start (not by cuInit): no environment is read,
 * warnings go to the conf's log (the target's stderr is not ours), detach ends the session. */
static int pm_injected;

/* Environment lookup for the configuration: an injected agent reads none (the target's
 * environment was not written for it, and getenv off the main thread races with setenv). */
static const char *cfg_env(const char *name) { return pm_injected ? NULL : getenv(name); }

static void pm_vlog(int force, const char *fmt, va_list ap)
{
	if (!force && !C.debug)
		return;
	int fd = 2;
	if (pm_injected) {
		fd = __atomic_load_n(&I.log_fd, __ATOMIC_RELAXED);
		if (fd < 0)
			return;
	}
	char buf[512];
	int n = snprintf(buf, sizeof buf, "[profilemate] pid %d: ", (int)getpid());
	if (n < 0 || n >= (int)sizeof buf)
		return;
	int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
	if (m < 0)
		return;
	size_t len = strlen(buf);
	buf[len++] = '\n';
	ssize_t w PM_UNUSED = write(fd, buf, len);
}
__attribute__((format(printf, 1, 2))) static void pm_dbg(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	pm_vlog(0, fmt, ap);
	va_end(ap);
}
__attribute__((format(printf, 1, 2))) static void pm_warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	pm_vlog(1, fmt, ap);
	va_end(ap);
}

static const char *const pm_known_env[] = {
	"PROFILEMATE_START", "PROFILEMATE_MAX_MB", "PROFILEMATE_RING_KB", "PROFILEMATE_BUFFER_KB",
	"PROFILEMATE_FLUSH_MS", "PROFILEMATE_ORPHAN_TIMEOUT", "PROFILEMATE_EXIT_FLUSH_MS",
	"PROFILEMATE_YIELD", "PROFILEMATE_NVTX", "PROFILEMATE_API", "PROFILEMATE_ARM",
	"PROFILEMATE_CUPTI_PATH", "PROFILEMATE_CONTROL_SOCKET", "PROFILEMATE_DEBUG", "PROFILEMATE_DEVICE_BUFFER_KB", "PROFILEMATE_KINDS", NULL,
};
/* Names and prefixes owned by other parts of profilemate-trace (the Python hook, the
 * CLI and daemon flags' environment variables, tests): not warned about here. */
static const char *const pm_other_prefixes[] = {
	"PROFILEMATE_PYHOOK", "PROFILEMATE_TRACER", "PROFILEMATE_SESSION", "PROFILEMATE_TRACE_BIN", "PROFILEMATE_DETAIL",
	"PROFILEMATE_AGENT", "PROFILEMATE_TOKEN", "PROFILEMATE_WINDOW", "PROFILEMATE_SCHEDULE", "PROFILEMATE_RETAIN",
	"PROFILEMATE_METRICS", "PROFILEMATE_MAX_RUNNING", "PROFILEMATE_TEST", NULL};

static int env_bool(const char *name, int def)
{
	const char *v = cfg_env(name);
	if (!v || !*v)
		return def;
	if (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on"))
		return 1;
	if (!strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcasecmp(v, "off"))
		return 0;
	pm_warn("%s=%s is not a boolean; using %d", name, v, def);
	return def;
}

static uint64_t env_u64(const char *name, uint64_t def, uint64_t lo, uint64_t hi)
{
	const char *v = cfg_env(name);
	if (!v || !*v)
		return def;
	char *end;
	errno = 0;
	unsigned long long x = strtoull(v, &end, 10);
	if (errno || *end || x < lo || x > hi) {
		pm_warn("%s=%s is invalid (want an integer in %llu..%llu); using %llu", name, v,
			(unsigned long long)lo, (unsigned long long)hi, (unsigned long long)def);
		return def;
	}
	return x;
}

static void load_kinds_mask(void);

static void pm_config_load(void)
{
	memset(&C, 0, sizeof C);
	const char *vv = cfg_env("VLLM_PROFILING_VERBOSE");
	C.debug = env_bool("PROFILEMATE_DEBUG", 0) || (vv && !strcmp(vv, "1"));
	const char *s = cfg_env("PROFILEMATE_START");
	C.start_detail = PM_DETAIL_GRAPH;
	if (s && *s) {
		if (!strcmp(s, "graph"))
			C.start_enable = 1;
		else if (!strcmp(s, "nodes"))
			C.start_enable = 1, C.start_detail = PM_DETAIL_NODES;
		else if (!strcmp(s, "off") || !strcmp(s, "dormant") || !strcmp(s, "0"))
			C.start_enable = 0;
		else
			pm_warn("PROFILEMATE_START=%s is invalid (want graph, nodes or off); staying dormant", s);
	}
	C.max_bytes = env_u64("PROFILEMATE_MAX_MB", 64, 4, 65536) << 20;
	uint64_t rk = env_u64("PROFILEMATE_RING_KB", 16384, 4, 1u << 22);
	uint64_t rb = 1;
	while (rb * 2 <= rk * 1024)
		rb *= 2;
	C.ring_bytes = rb;
	C.buf_bytes = env_u64("PROFILEMATE_BUFFER_KB", 4096, 16, 65536) << 10;
	C.flush_ms = (uint32_t)env_u64("PROFILEMATE_FLUSH_MS", 150, 10, 5000);
	C.exit_flush_ms = (uint32_t)env_u64("PROFILEMATE_EXIT_FLUSH_MS", 300, 0, 10000);
	C.dev_buf_bytes = env_u64("PROFILEMATE_DEVICE_BUFFER_KB", 0, 0, 1u << 20) << 10;
	C.orphan_ns = 30ull * 1000000000ull;
	const char *o = cfg_env("PROFILEMATE_ORPHAN_TIMEOUT");
	if (o && *o) {
		char *end;
		double d = strtod(o, &end);
		if (*end || d < 0 || d > 86400)
			pm_warn("PROFILEMATE_ORPHAN_TIMEOUT=%s is invalid (seconds, 0 = never); using 30", o);
		else
			C.orphan_ns = (uint64_t)(d * 1e9);
	}
	C.yield = env_bool("PROFILEMATE_YIELD", 0);
	C.nvtx = env_bool("PROFILEMATE_NVTX", 0);
	C.api = env_bool("PROFILEMATE_API", 1);
	const char *a = cfg_env("PROFILEMATE_ARM");
	if (a && *a) {
		if (!strcmp(a, "full"))
			C.arm_full = C.arm_graph = 1;
		else if (!strcmp(a, "graph"))
			C.arm_graph = 1;
		else if (!strcmp(a, "lazy"))
			C.arm_lazy = 1;
		else if (!strcmp(a, "light"))
			C.arm_light = 1;
		else if (strcmp(a, "none"))
			pm_warn("PROFILEMATE_ARM=%s is invalid (want none, light, graph, full or lazy); using none", a);
	}
	load_kinds_mask();
	C.cupti_path = cfg_env("PROFILEMATE_CUPTI_PATH");
	C.ctl_socket = cfg_env("PROFILEMATE_CONTROL_SOCKET");
	if (pm_injected) { /* inject.conf instead of the environment */
		struct pm_inject_conf *ic = &I.conf;
		C.debug = ic->debug;
		C.start_enable = ic->start_enable;
		C.start_detail = ic->start_detail;
		if (ic->orphan_s >= 0)
			C.orphan_ns = (uint64_t)(ic->orphan_s * 1e9);
		if (ic->flush_ms)
			C.flush_ms = ic->flush_ms;
		if (ic->ring_kb) {
			uint64_t b = 1;
			while (b * 2 <= (uint64_t)ic->ring_kb * 1024)
				b *= 2;
			C.ring_bytes = b;
		}
		C.cupti_path = ic->cupti_path[0] ? ic->cupti_path : NULL;
		return; /* no environment warnings: it is not ours */
	}
	/* Unknown PROFILEMATE_* names: warn once per process. */
	extern char **environ;
	for (char **e = environ; e && *e; e++) {
		if (strncmp(*e, "PROFILEMATE_", 12))
			continue;
		size_t n = strcspn(*e, "=");
		int known = 0;
		for (int i = 0; pm_known_env[i] && !known; i++)
			known = strlen(pm_known_env[i]) == n && !strncmp(*e, pm_known_env[i], n);
		for (int i = 0; pm_other_prefixes[i] && !known; i++)
			known = !strncmp(*e, pm_other_prefixes[i], strlen(pm_other_prefixes[i]));
		if (!known)
			pm_warn("unknown environment variable %.*s ignored", (int)n, *e);
	}
}

/* ------------------------------------------------------------------ state */

struct pm_buf {
	uint64_t magic;
	size_t size;   /* usable bytes after the header */
	size_t valid;
	int discard;
	int shared;
	struct pm_buf *next;
};
#define PM_BUF_HDR 64
#define PM_BUF_MAGIC 0x70726f666d627566ull
_Static_assert(sizeof(struct pm_buf) <= PM_BUF_HDR, "buf header");

struct pm_name {
	const char *ptr;  /* CUPTI's pointer (key of the pointer table) */
	uint32_t id;
};
struct pm_name_ent {
	uint64_t hash;
	char *str;
	uint32_t len;
	uint32_t epoch_emitted;
};

static struct {
	int inited;             /* InitializeInjection ran in this process */
	int running;            /* subscribed and callbacks registered */
	int passive;
	volatile int poisoned;  /* fork child after init */
	pid_t pid;
	struct pm_ring ring;
	int have_ring;
	void *lib;
	char lib_path[PATH_MAX];
	uint32_t version;
	uint32_t driver_version;
	uint32_t agent_flags;
	void *subscriber;
	/* CUPTI entry points */
	pm_CUptiResult (*GetVersion)(uint32_t *);
	pm_CUptiResult (*Subscribe)(void **, pm_callback_fn, void *);
	pm_CUptiResult (*Subscribe_v2)(void **, pm_callback_fn, void *, struct pm_cupti_subscriber_params *);
	pm_CUptiResult (*Unsubscribe)(void *);
	pm_CUptiResult (*RegisterCallbacks)(pm_buf_request_fn, pm_buf_complete_fn);
	pm_CUptiResult (*Enable)(uint32_t);
	pm_CUptiResult (*Disable)(uint32_t);
	pm_CUptiResult (*FlushAll)(uint32_t);
	pm_CUptiResult (*GetNextRecord)(uint8_t *, size_t, void **);
	pm_CUptiResult (*GetNumDropped)(void *, uint32_t, size_t *);
	pm_CUptiResult (*RegisterTimestampCallback)(pm_timestamp_fn);
	pm_CUptiResult (*SetThreadIdType)(uint32_t);
	pm_CUptiResult (*SetAttribute)(uint32_t, size_t *, void *);
	pm_CUptiResult (*EnableDriverApi)(uint32_t, uint8_t);
	pm_CUptiResult (*EnableRuntimeApi)(uint32_t, uint8_t);
	pm_CUptiResult (*GetResultString)(pm_CUptiResult, const char **);
	pm_CUptiResult (*EnableAndDump)(uint32_t);
	/* buffers (mu). The pool outlives an injected session (detach): CUPTI may keep empty
	 * buffers it was handed, so they are never unmapped; a later session reuses them. */
	int pool_inited;
	pthread_mutex_t mu;
	struct pm_buf *free_list;
	struct pm_buf *done_head, *done_tail;
	struct pm_buf *discard_free;
	struct pm_buf *emergency;
	uint64_t pool_bytes, pool_budget;
	struct pm_buf *registry[256]; /* every buffer we ever handed out (bounded by the budget) */
	uint32_t nregistry;
	/* agent thread */
	pthread_t thread;
	int thread_started;
	pthread_mutex_t tmu;
	pthread_cond_t tcv;
	int final_req, final_done, stop;
	/* collection state (agent thread, or init before the thread starts) */
	int enabled;
	uint32_t detail;
	uint32_t sample_every;
	uint32_t applied_seq;
	uint32_t epoch;
	uint32_t kinds_on; /* bitmask over pm_kind_bits */
	uint32_t api_on; /* KB_DRV | KB_RT: allowlists enabled per domain */
	int orphaned;
	int yielded;
	int deferred; /* dormant with CUPTI untouched (PROFILEMATE_ARM=none): armed at the first enable */
	int hijacked;           /* another client replaced our buffer callbacks */
	int sample_on;          /* kernel sampling: CONCURRENT_KERNEL enabled in this window */
	int gt_allowed;         /* GRAPH_TRACE may be (re-)enabled: only inside InitializeInjection, see wanted_kinds */
	int gt_fallback_logged;
	uint32_t dump_kinds;    /* DEVICE/CONTEXT enabled by cuptiActivityEnableAndDump at a late arm (bit 0, 1) */
	uint64_t sample_tick;
	/* names (agent thread only) */
	struct pm_name *ptab;
	uint32_t ptab_cap, ptab_n;
	uint32_t *ctab; /* content table: index into names+1 */
	uint32_t ctab_cap;
	struct pm_name_ent *names;
	uint32_t names_n, names_cap;
	uint64_t name_bytes;
	int name_warned;
	/* counters (atomics where touched by CUPTI threads) */
	uint64_t buffers_requested, buffers_discard, buffers_completed;
	uint64_t records_converted, records_unknown, records_discarded, cupti_dropped;
	uint64_t records_dormant; /* produced by kinds armed while dormant: dropped, not a loss */
	uint64_t kernels_zero_ts, flush_count, flush_ns_total;
	uint64_t last_stats_sig;
	uint64_t api_allow[2][16]; /* [driver, runtime] bitmaps of cbid < 1024 */
} G = {
	.mu = PTHREAD_MUTEX_INITIALIZER,
	.tmu = PTHREAD_MUTEX_INITIALIZER,
	.tcv = PTHREAD_COND_INITIALIZER,
};

static const uint32_t pm_drv_allow[] = {
	PM_DRV_cuLaunchKernel, PM_DRV_cuLaunchKernel_ptsz, PM_DRV_cuLaunchKernelEx, PM_DRV_cuLaunchKernelEx_ptsz,
	PM_DRV_cuLaunchCooperativeKernel, PM_DRV_cuLaunchCooperativeKernel_ptsz, PM_DRV_cuGraphLaunch,
	PM_DRV_cuGraphLaunch_ptsz, PM_DRV_cuMemcpyHtoD_v2, PM_DRV_cuMemcpyHtoDAsync_v2, PM_DRV_cuMemcpyDtoH_v2,
	PM_DRV_cuMemcpyDtoHAsync_v2, PM_DRV_cuMemcpyDtoDAsync_v2, PM_DRV_cuMemcpy, PM_DRV_cuMemcpyAsync,
	PM_DRV_cuMemcpyPeerAsync, PM_DRV_cuMemcpyAsync_ptsz, PM_DRV_cuMemcpyHtoDAsync_v2_ptsz,
	PM_DRV_cuMemcpyDtoHAsync_v2_ptsz, PM_DRV_cuMemcpyDtoDAsync_v2_ptsz, PM_DRV_cuMemcpyPeerAsync_ptsz,
	PM_DRV_cuMemsetD8Async, PM_DRV_cuMemsetD16Async, PM_DRV_cuMemsetD32Async, PM_DRV_cuMemsetD8Async_ptsz,
	PM_DRV_cuMemsetD32Async_ptsz, PM_DRV_cuStreamSynchronize, PM_DRV_cuStreamSynchronize_ptsz,
	PM_DRV_cuEventSynchronize, PM_DRV_cuCtxSynchronize, PM_DRV_cuCtxSynchronize_v2, PM_DRV_cuStreamWaitEvent,
	PM_DRV_cuStreamWaitEvent_ptsz,
};
static const uint32_t pm_rt_allow[] = {
	PM_RT_cudaLaunchKernel_v7000, PM_RT_cudaLaunchKernel_ptsz_v7000, PM_RT_cudaLaunchKernelExC_v11060,
	PM_RT_cudaLaunchKernelExC_ptsz_v11060, PM_RT_cudaLaunchCooperativeKernel_v9000,
	PM_RT_cudaLaunchCooperativeKernel_ptsz_v9000, PM_RT_cudaGraphLaunch_v10000, PM_RT_cudaGraphLaunch_ptsz_v10000,
	PM_RT_cudaMemcpy_v3020, PM_RT_cudaMemcpyAsync_v3020, PM_RT_cudaMemcpyAsync_ptsz_v7000,
	PM_RT_cudaMemcpyPeerAsync_v4000, PM_RT_cudaMemset_v3020, PM_RT_cudaMemsetAsync_v3020,
	PM_RT_cudaMemsetAsync_ptsz_v7000, PM_RT_cudaStreamSynchronize_v3020, PM_RT_cudaStreamSynchronize_ptsz_v7000,
	PM_RT_cudaDeviceSynchronize_v3020, PM_RT_cudaEventSynchronize_v3020, PM_RT_cudaStreamWaitEvent_v3020,
	PM_RT_cudaStreamWaitEvent_ptsz_v7000,
};

static int api_allowed(int rt, uint32_t cbid)
{
	return cbid < 1024 && (G.api_allow[rt][cbid >> 6] >> (cbid & 63)) & 1;
}

static uint64_t add64(uint64_t *p, uint64_t v) { return __atomic_add_fetch(p, v, __ATOMIC_RELAXED); }
static uint64_t ld64(uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

/* ------------------------------------------------------------------ records */

static void rec_hdr(void *p, uint16_t type, uint32_t size)
{
	struct pm_rec_hdr *h = (struct pm_rec_hdr *)p;
	h->type = type;
	h->flags = 0;
	h->size = size;
}

static void emit_log(uint32_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit_log(uint32_t level, const char *fmt, ...)
{
	char text[400];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n >= (int)sizeof text)
		n = sizeof text - 1;
	pm_dbg("%s", text);
	if (!G.have_ring)
		return;
	struct pm_rec_log r;
	memset(&r, 0, sizeof r);
	rec_hdr(&r, PM_REC_LOG, 0);
	r.ts_ns = pm_now_ns();
	r.level = level;
	r.text_len = (uint32_t)n;
	pm_ring_write2(&G.ring, &r, sizeof r, text, (uint32_t)n);
}

static void emit_control_change(uint32_t reason)
{
	struct pm_rec_control_change r;
	memset(&r, 0, sizeof r);
	rec_hdr(&r, PM_REC_CONTROL_CHANGE, sizeof r);
	r.ts_ns = pm_now_ns();
	r.enable = (uint32_t)G.enabled;
	r.detail = G.detail;
	r.seq = G.applied_seq;
	r.sample_every = G.sample_every;
	r.reason = reason;
	pm_ring_write(&G.ring, &r, sizeof r);
}

static void emit_process_info(void)
{
	char text[PATH_MAX + 64];
	int n = snprintf(text, sizeof text, "cupti=%s", G.lib_path[0] ? G.lib_path : "-");
	if (n < 0)
		return;
	if (n >= (int)sizeof text)
		n = sizeof text - 1;
	struct pm_rec_process_info r;
	memset(&r, 0, sizeof r);
	rec_hdr(&r, PM_REC_PROCESS_INFO, 0);
	r.start_ns = G.ring.hdr->created_ns;
	r.pid = (uint32_t)getpid();
	r.ppid = (uint32_t)getppid();
	r.source = PM_SRC_CUPTI;
	r.cupti_version = G.version;
	r.cuda_driver_version = G.driver_version;
	r.agent_flags = G.agent_flags;
	r.text_len = (uint32_t)n;
	pm_ring_write2(&G.ring, &r, sizeof r, text, (uint32_t)n);
}

static void emit_agent_stats(int force)
{
	struct pm_rec_agent_stats r;
	memset(&r, 0, sizeof r);
	rec_hdr(&r, PM_REC_AGENT_STATS, sizeof r);
	r.buffers_requested = ld64(&G.buffers_requested);
	r.buffers_discard = ld64(&G.buffers_discard);
	r.buffers_completed = ld64(&G.buffers_completed);
	r.records_converted = G.records_converted;
	r.records_unknown = G.records_unknown;
	r.records_discarded = ld64(&G.records_discarded);
	r.cupti_dropped = G.cupti_dropped;
	r.kernels_zero_ts = G.kernels_zero_ts;
	r.names_interned = G.names_n;
	pthread_mutex_lock(&G.mu);
	r.pool_bytes = G.pool_bytes;
	pthread_mutex_unlock(&G.mu);
	r.flush_count = G.flush_count;
	r.flush_ns_total = G.flush_ns_total;
	uint64_t sig = r.buffers_requested * 31 + r.buffers_completed * 7 + r.records_converted * 3 +
		       r.records_unknown + r.records_discarded * 5 + r.cupti_dropped * 11 + r.kernels_zero_ts * 13;
	if (!force && sig == G.last_stats_sig)
		return;
	G.last_stats_sig = sig;
	r.ts_ns = pm_now_ns();
	pm_ring_write(&G.ring, &r, sizeof r);
}

static void update_source_dropped(void)
{
	__atomic_store_n(&G.ring.hdr->source_dropped, G.cupti_dropped + ld64(&G.records_discarded), __ATOMIC_RELAXED);
}

static void emit_stream_stats(void)
{
	update_source_dropped();
	struct pm_rec_stream_stats r;
	memset(&r, 0, sizeof r);
	rec_hdr(&r, PM_REC_STREAM_STATS, sizeof r);
	struct pm_ring_hdr *h = G.ring.hdr;
	r.ts_ns = pm_now_ns();
	r.records_written = __atomic_load_n(&h->records_written, __ATOMIC_RELAXED) + 1; /* including this one */
	r.records_dropped = __atomic_load_n(&h->records_dropped, __ATOMIC_RELAXED);
	r.bytes_dropped = __atomic_load_n(&h->bytes_dropped, __ATOMIC_RELAXED);
	r.source_dropped = __atomic_load_n(&h->source_dropped, __ATOMIC_RELAXED);
	pm_ring_write(&G.ring, &r, sizeof r);
}

/* ------------------------------------------------------------------ names */

static uint64_t fnv1a(const char *s, uint32_t *lenp)
{
	uint64_t h = 1469598103934665603ull;
	uint32_t n = 0;
	for (; s[n] && n < 65536; n++)
		h = (h ^ (uint8_t)s[n]) * 1099511628211ull;
	*lenp = n;
	return h;
}

static int grow_tables(void)
{
	if (G.ptab_n * 2 >= G.ptab_cap) {
		uint32_t cap = G.ptab_cap ? G.ptab_cap * 2 : 1024;
		struct pm_name *t = calloc(cap, sizeof *t);
		if (!t)
			return -1;
		for (uint32_t i = 0; i < G.ptab_cap; i++) {
			if (!G.ptab[i].ptr)
				continue;
			uint32_t j = (uint32_t)(((uintptr_t)G.ptab[i].ptr >> 3) * 2654435761u) & (cap - 1);
			while (t[j].ptr)
				j = (j + 1) & (cap - 1);
			t[j] = G.ptab[i];
		}
		free(G.ptab);
		G.ptab = t;
		G.ptab_cap = cap;
	}
	if (G.names_n + 1 >= G.names_cap) {
		uint32_t cap = G.names_cap ? G.names_cap * 2 : 512;
		struct pm_name_ent *n = realloc(G.names, cap * sizeof *n);
		if (!n)
			return -1;
		G.names = n;
		G.names_cap = cap;
		uint32_t ccap = cap * 2;
		uint32_t *c = calloc(ccap, sizeof *c);
		if (!c)
			return -1;
		for (uint32_t i = 1; i <= G.names_n; i++) {
			uint32_t j = (uint32_t)G.names[i].hash & (ccap - 1);
			while (c[j])
				j = (j + 1) & (ccap - 1);
			c[j] = i;
		}
		free(G.ctab);
		G.ctab = c;
		G.ctab_cap = ccap;
	}
	return 0;
}

#define PM_MAX_NAMES 65536
#define PM_MAX_NAME_BYTES (8u << 20) /* interned text; beyond it kernels get name_id 0 */

/* Returns name id (≥1) or 0 when unavailable. Agent thread only. */
static uint32_t intern_name(const char *p)
{
	if (!p)
		return 0;
	if (G.ptab_cap) {
		uint32_t j = (uint32_t)(((uintptr_t)p >> 3) * 2654435761u) & (G.ptab_cap - 1);
		while (G.ptab[j].ptr) {
			if (G.ptab[j].ptr == p)
				return G.ptab[j].id;
			j = (j + 1) & (G.ptab_cap - 1);
		}
	}
	if (G.names_n >= PM_MAX_NAMES || grow_tables())
		return 0; /* bounded memory: see PM_MAX_NAME_BYTES */
	uint32_t len;
	uint64_t h = fnv1a(p, &len);
	uint32_t id = 0;
	uint32_t j = (uint32_t)h & (G.ctab_cap - 1);
	while (G.ctab[j]) {
		struct pm_name_ent *e = &G.names[G.ctab[j]];
		if (e->hash == h && e->len == len && !memcmp(e->str, p, len)) {
			id = G.ctab[j];
			break;
		}
		j = (j + 1) & (G.ctab_cap - 1);
	}
	if (!id) {
		if (G.name_bytes + len + 1 > PM_MAX_NAME_BYTES) {
			if (!G.name_warned) {
				G.name_warned = 1;
				emit_log(PM_LOG_WARN, "kernel name table full (%u names, %llu bytes): further new names get id 0",
					 G.names_n, (unsigned long long)G.name_bytes);
			}
			return 0;
		}
		G.name_bytes += len + 1;
		char *s = malloc(len + 1);
		if (!s)
			return 0;
		memcpy(s, p, len);
		s[len] = 0;
		id = ++G.names_n;
		G.names[id] = (struct pm_name_ent){.hash = h, .str = s, .len = len, .epoch_emitted = 0};
		G.ctab[j] = id;
	}
	uint32_t k = (uint32_t)(((uintptr_t)p >> 3) * 2654435761u) & (G.ptab_cap - 1);
	while (G.ptab[k].ptr)
		k = (k + 1) & (G.ptab_cap - 1);
	G.ptab[k] = (struct pm_name){.ptr = p, .id = id};
	G.ptab_n++;
	return id;
}

static void ensure_name_emitted(uint32_t id)
{
	if (!id || G.names[id].epoch_emitted == G.epoch)
		return;
	struct pm_rec_kernel_name r;
	memset(&r, 0, sizeof r);
	rec_hdr(&r, PM_REC_KERNEL_NAME, 0);
	r.name_id = id;
	r.name_len = G.names[id].len;
	if (pm_ring_write2(&G.ring, &r, sizeof r, G.names[id].str, G.names[id].len))
		G.names[id].epoch_emitted = G.epoch;
}

/* ------------------------------------------------------------------ conversion */

static uint32_t pm_u32(const void *p, size_t off)
{
	uint32_t v;
	memcpy(&v, (const uint8_t *)p + off, 4);
	return v;
}

static int keep_graph_detail(uint32_t kind, uint32_t graph_id)
{
	/* Only needed when kinds stay enabled while the detail says otherwise
	 * (PROFILEMATE_ARM=full, or records in flight after a switch to off). */
	if (G.detail == PM_DETAIL_OFF)
		return 0;
	if (kind == PM_KIND_GRAPH_TRACE && G.detail != PM_DETAIL_GRAPH)
		return 0;
	/* per-node records at graph level only while GRAPH_TRACE is off (the per-node fallback) */
	if (kind == PM_KIND_CONCURRENT_KERNEL && graph_id && G.detail == PM_DETAIL_GRAPH && (G.kinds_on & 2 /* KB_GT */))
		return 0;
	return 1;
}

static void convert_record(const void *rec)
{
	uint32_t kind = pm_u32(rec, 0);
	switch (kind) {
	case PM_KIND_CONCURRENT_KERNEL:
	case PM_KIND_KERNEL: {
		const struct pm_cupti_kernel *k = rec;
		if (!keep_graph_detail(PM_KIND_CONCURRENT_KERNEL, k->graphId)) {
			add64(&G.records_discarded, 1);
			return;
		}
		struct pm_rec_kernel r;
		memset(&r, 0, sizeof r);
		rec_hdr(&r, PM_REC_KERNEL, sizeof r);
		r.start_ns = k->start;
		r.end_ns = k->end;
		if (!k->start && !k->end) {
			G.kernels_zero_ts++;
			r.flags |= 1;
		}
		r.graph_node_id = k->graphNodeId;
		r.correlation_id = k->correlationId;
		r.device_id = k->deviceId;
		r.context_id = k->contextId;
		r.stream_id = k->streamId;
		r.graph_id = k->graphId;
		r.name_id = intern_name(k->name);
		r.grid[0] = k->gridX, r.grid[1] = k->gridY, r.grid[2] = k->gridZ;
		r.block[0] = k->blockX, r.block[1] = k->blockY, r.block[2] = k->blockZ;
		r.static_shared = (uint32_t)k->staticSharedMemory;
		r.dynamic_shared = (uint32_t)k->dynamicSharedMemory;
		r.registers = k->registersPerThread;
		r.launch_type = k->launchType;
		if (G.version >= 130000)
			r.is_device_launched = ((const uint8_t *)rec)[PM_KERNEL10_IS_DEVICE_LAUNCHED_OFF];
		ensure_name_emitted(r.name_id);
		pm_ring_write(&G.ring, &r, sizeof r);
		break;
	}
	case PM_KIND_GRAPH_TRACE: {
		const struct pm_cupti_graph_trace *g = rec;
		if (!keep_graph_detail(kind, g->graphId)) {
			add64(&G.records_discarded, 1);
			return;
		}
		struct pm_rec_graph_trace r;
		memset(&r, 0, sizeof r);
		rec_hdr(&r, PM_REC_GRAPH_TRACE, sizeof r);
		r.start_ns = g->start;
		r.end_ns = g->end;
		r.correlation_id = g->correlationId;
		r.device_id = g->deviceId;
		r.context_id = g->contextId;
		r.stream_id = g->streamId;
		r.graph_id = g->graphId;
		pm_ring_write(&G.ring, &r, sizeof r);
		break;
	}
	case PM_KIND_MEMCPY: {
		const struct pm_cupti_memcpy *m = rec;
		struct pm_rec_memcpy r;
		memset(&r, 0, sizeof r);
		rec_hdr(&r, PM_REC_MEMCPY, sizeof r);
		r.start_ns = m->start;
		r.end_ns = m->end;
		r.bytes = m->bytes;
		r.graph_node_id = m->graphNodeId;
		r.correlation_id = m->correlationId;
		r.device_id = m->deviceId;
		r.context_id = m->contextId;
		r.stream_id = m->streamId;
		r.graph_id = m->graphId;
		r.copy_kind = m->copyKind;
		r.src_kind = m->srcKind;
		r.dst_kind = m->dstKind;
		r.flags = m->flags;
		pm_ring_write(&G.ring, &r, sizeof r);
		break;
	}
	case PM_KIND_MEMSET: {
		const struct pm_cupti_memset *m = rec;
		struct pm_rec_memset r;
		memset(&r, 0, sizeof r);
		rec_hdr(&r, PM_REC_MEMSET, sizeof r);
		r.start_ns = m->start;
		r.end_ns = m->end;
		r.bytes = m->bytes;
		r.graph_node_id = m->graphNodeId;
		r.correlation_id = m->correlationId;
		r.device_id = m->deviceId;
		r.context_id = m->contextId;
		r.stream_id = m->streamId;
		r.graph_id = m->graphId;
		r.value = m->value;
		r.memory_kind = m->memoryKind;
		r.flags = m->flags;
		pm_ring_write(&G.ring, &r, sizeof r);
		break;
	}
	case PM_KIND_SYNCHRONIZATION: {
		const struct pm_cupti_sync *s = rec;
		struct pm_rec_sync r;
		memset(&r, 0, sizeof r);
		rec_hdr(&r, PM_REC_SYNC, sizeof r);
		r.start_ns = s->start;
		r.end_ns = s->end;
		r.correlation_id = s->correlationId;
		r.sync_type = s->type;
		r.context_id = s->contextId;
		r.stream_id = s->streamId;
		r.event_id = s->cudaEventId;
		pm_ring_write(&G.ring, &r, sizeof r);
		break;
	}
	case PM_KIND_DRIVER:
	case PM_KIND_RUNTIME: {
		const struct pm_cupti_api *a = rec;
		if (!api_allowed(kind == PM_KIND_RUNTIME, a->cbid)) {
			add64(&G.records_discarded, 1);
			return;
		}
		struct pm_rec_api r;
		memset(&r, 0, sizeof r);
		rec_hdr(&r, PM_REC_API, sizeof r);
		r.start_ns = a->start;
		r.end_ns = a->end;
		r.domain = kind;
		r.cbid = a->cbid;
		r.tid = a->threadId;
		r.correlation_id = a->correlationId;
		r.return_value = a->returnValue;
		r.pid = a->processId;
		pm_ring_write(&G.ring, &r, sizeof r);
		break;
	}
	case PM_KIND_OVERHEAD: {
		const struct pm_cupti_overhead *o = rec;
		struct pm_rec_overhead r;
		memset(&r, 0, sizeof r);
		rec_hdr(&r, PM_REC_OVERHEAD, sizeof r);
		r.start_ns = o->start;
		r.end_ns = o->end;
		r.overhead_kind = o->overheadKind;
		r.object_kind = o->objectKind;
		r.object_id = o->objectKind == 2 /* THREAD */ ? o->objectId[1] : o->objectId[0];
		r.correlation_id = o->correlationId;
		pm_ring_write(&G.ring, &r, sizeof r);
		break;
	}
	case PM_KIND_DEVICE: { /* from cuptiActivityEnableAndDump at a late arm: one log line per device */
		const struct pm_cupti_device *d = rec;
		emit_log(PM_LOG_INFO, "device %u: %.200s (sm_%u%u, %u SMs, %llu MiB)", d->id, d->name ? d->name : "?",
			 d->computeCapabilityMajor, d->computeCapabilityMinor, d->numMultiprocessors,
			 (unsigned long long)(d->globalMemorySize >> 20));
		break;
	}
	case PM_KIND_CONTEXT: {
		const struct pm_cupti_context *c = rec;
		emit_log(PM_LOG_INFO, "context %u on device %u", c->contextId, c->deviceId);
		break;
	}
	default:
		G.records_unknown++;
		return;
	}
	G.records_converted++;
}

static void process_buffer(struct pm_buf *b)
{
	uint8_t *data = (uint8_t *)b + PM_BUF_HDR;
	size_t valid = b->valid > b->size ? b->size : b->valid;
	if (b->shared) { /* emergency buffer shared between requests: contents unreliable */
		add64(&G.records_discarded, 1); /* contents unreliable: count the buffer, a lower bound */
		return;
	}
	void *rec = NULL;
	uint64_t n = 0;
	for (;;) {
		pm_CUptiResult st = G.GetNextRecord(data, valid, &rec);
		if (st != PM_CUPTI_SUCCESS) {
			if (st != PM_CUPTI_ERROR_MAX_LIMIT_REACHED)
				G.records_unknown++;
			break;
		}
		n++;
		if (b->discard)
			add64(&G.records_discarded, 1);
		else if (!G.enabled)
			G.records_dormant++;
		else
			convert_record(rec);
	}
	(void)n;
	memset(data, 0, valid); /* CUPTI is told buffers come zeroed */
}

/* Takes the completed queue and converts it. Agent thread (or atexit when the thread is gone). */
static void drain_completed(void)
{
	pthread_mutex_lock(&G.mu);
	struct pm_buf *list = G.done_head;
	G.done_head = G.done_tail = NULL;
	pthread_mutex_unlock(&G.mu);
	if (!list)
		return;
	struct timespec t0, t1;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
	while (list) {
		struct pm_buf *b = list;
		list = b->next;
		process_buffer(b);
		b->valid = 0;
		pthread_mutex_lock(&G.mu);
		if (b->shared) {
			/* emergency buffer is never freed */
		} else if (b->discard) {
			b->next = G.discard_free;
			G.discard_free = b;
		} else {
			b->next = G.free_list;
			G.free_list = b;
		}
		pthread_mutex_unlock(&G.mu);
	}
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
	G.flush_ns_total += (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000ull + (uint64_t)(t1.tv_nsec - t0.tv_nsec);
	update_source_dropped();
}

/* ------------------------------------------------------------------ CUPTI callbacks */

static struct pm_buf *buf_alloc(size_t size, int discard)
{
	void *p = mmap(NULL, size + PM_BUF_HDR, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	struct pm_buf *b = p;
	b->magic = PM_BUF_MAGIC;
	b->size = size;
	b->discard = discard;
	pthread_mutex_lock(&G.mu);
	if (G.nregistry < sizeof G.registry / sizeof *G.registry) {
		G.registry[G.nregistry++] = b;
	} else {
		pthread_mutex_unlock(&G.mu);
		munmap(p, size + PM_BUF_HDR);
		return NULL;
	}
	pthread_mutex_unlock(&G.mu);
	return b;
}

/* Maps a buffer pointer from CUPTI back to our header, or NULL if it is not ours. */
static struct pm_buf *buf_lookup(uint8_t *buffer)
{
	struct pm_buf *found = NULL;
	pthread_mutex_lock(&G.mu);
	for (uint32_t i = 0; i < G.nregistry; i++)
		if ((uint8_t *)G.registry[i] + PM_BUF_HDR == buffer) {
			found = G.registry[i];
			break;
		}
	pthread_mutex_unlock(&G.mu);
	return found;
}

#define PM_DISCARD_SIZE (256u << 10)
#define PM_DISCARD_COUNT 8

static void pm_buffer_requested(uint8_t **buffer, size_t *size, size_t *maxNumRecords)
{
	*maxNumRecords = 0;
	struct pm_buf *b = NULL;
	int fresh = 0;
	pthread_mutex_lock(&G.mu);
	if (G.free_list) {
		b = G.free_list;
		G.free_list = b->next;
	} else if (G.pool_bytes + C.buf_bytes + PM_BUF_HDR <= G.pool_budget) {
		G.pool_bytes += C.buf_bytes + PM_BUF_HDR; /* reserve before allocating outside the lock */
		fresh = 1;
	} else if (G.discard_free) {
		b = G.discard_free;
		G.discard_free = b->next;
	} else {
		b = G.emergency;
	}
	pthread_mutex_unlock(&G.mu);
	if (fresh) {
		b = buf_alloc(C.buf_bytes, 0);
		if (!b) {
			pthread_mutex_lock(&G.mu);
			G.pool_bytes -= C.buf_bytes + PM_BUF_HDR;
			b = G.emergency;
			pthread_mutex_unlock(&G.mu);
		}
	}
	if (!b) { /* cannot happen after a successful init; never decline a buffer */
		static uint8_t last_resort[4096] __attribute__((aligned(64))); /* not in the registry: ignored on completion */
		*buffer = last_resort;
		*size = sizeof last_resort;
		add64(&G.buffers_discard, 1);
		return;
	}
	b->next = NULL;
	b->valid = 0;
	add64(&G.buffers_requested, 1);
	if (b->discard)
		add64(&G.buffers_discard, 1);
	*buffer = (uint8_t *)b + PM_BUF_HDR;
	*size = b->size;
}

static void pm_buffer_completed(void *ctx, uint32_t streamId, uint8_t *buffer, size_t size, size_t validSize)
{
	(void)ctx;
	(void)streamId;
	(void)size;
	if (!buffer || G.poisoned)
		return;
	struct pm_buf *b = buf_lookup(buffer);
	if (!b)
		return; /* not ours (the last-resort buffer, or another client's buffer after a hijack) */
	add64(&G.buffers_completed, 1);
	if (b->shared) {
		/* shared emergency buffer (every discard buffer was out): its contents may mix
		 * several writers, so it is not walked; count it as one lost record (a lower bound) */
		add64(&G.records_discarded, 1);
		return;
	}
	if (b->discard) {
		/* over budget: count the records now and recycle the buffer at once, so the
		 * small discard pool never runs dry while the agent thread sleeps */
		uint8_t *data = (uint8_t *)b + PM_BUF_HDR;
		size_t valid = validSize > b->size ? b->size : validSize;
		void *rec = NULL;
		uint64_t n = 0;
		while (G.GetNextRecord(data, valid, &rec) == PM_CUPTI_SUCCESS)
			n++;
		memset(data, 0, valid);
		add64(&G.records_discarded, n);
		pthread_mutex_lock(&G.mu);
		b->valid = 0;
		b->next = G.discard_free;
		G.discard_free = b;
		pthread_mutex_unlock(&G.mu);
		return;
	}
	pthread_mutex_lock(&G.mu);
	b->valid = validSize;
	b->next = NULL;
	if (G.done_tail)
		G.done_tail->next = b;
	else
		G.done_head = b;
	G.done_tail = b;
	pthread_mutex_unlock(&G.mu);
}

static uint64_t pm_timestamp(void) { return pm_now_ns(); }

static void pm_subscriber_cb(void *userdata, int domain, uint32_t cbid, const void *cbdata)
{
	(void)userdata;
	(void)domain;
	(void)cbid;
	(void)cbdata;
}

/* ------------------------------------------------------------------ kinds */

enum { KB_CK = 1, KB_GT = 2, KB_MEMCPY = 4, KB_MEMSET = 8, KB_SYNC = 16, KB_OVH = 32, KB_DRV = 64, KB_RT = 128,
       KB_API_CBID_ONLY = 512 /* PROFILEMATE_KINDS only: per-cbid enables without the API kinds (gave no
				 records on CUPTI 13.0U1 + H200, see docs/notes-agent.md) */ };
/* Default: kernels, graph launches, copies, memsets and the allowlisted driver/runtime API
 * records (the join to CPU threads: torch's kernels carry the runtime call's correlation id and
 * make no driver-API record on CUDA 13; Triton's direct cuLaunchKernel carries the driver one).
 * SYNCHRONIZATION and OVERHEAD are opt-in (PROFILEMATE_KINDS): the non-kernel kinds together
 * made a synchronized CUDA-graph decode loop 15-30 % slower on an H200 (docs/notes-agent.md). */
#define PM_KINDS_DEFAULT (KB_CK | KB_GT | KB_MEMCPY | KB_MEMSET | KB_DRV | KB_RT)

/* PROFILEMATE_KINDS: a debug mask over the KB_* bits (decimal or 0x…) that narrows what a
 * detail level enables, for overhead experiments. Read at each applied control change, so an
 * experiment can change it (putenv) between two control writes. */
static int pm_kinds_env; /* PROFILEMATE_KINDS was set at start: only then re-read (getenv off the app threads is racy) */
static void load_kinds_mask(void)
{
	static int first = 1;
	if (pm_injected && I.conf.kinds) { /* inject.conf kinds= (experiments) */
		C.kinds_mask = I.conf.kinds;
		return;
	}
	if (!first && !pm_kinds_env) {
		C.kinds_mask = PM_KINDS_DEFAULT; /* pm_config_load cleared it (a later injected session) */
		return;
	}
	const char *v = cfg_env("PROFILEMATE_KINDS");
	if (first)
		pm_kinds_env = v != NULL;
	first = 0;
	uint32_t m = PM_KINDS_DEFAULT;
	if (v && *v) {
		char *end;
		errno = 0;
		unsigned long x = strtoul(v, &end, 0);
		if (errno || *end || x > 0x2ff)
			pm_warn("PROFILEMATE_KINDS=%s is invalid (want a mask <= 0x2ff); using 0x%x", v, m);
		else
			m = (uint32_t)x;
	}
	C.kinds_mask = m;
}
static const struct { uint32_t bit, kind; } pm_kind_bits[] = {
	{KB_CK, PM_KIND_CONCURRENT_KERNEL}, {KB_GT, PM_KIND_GRAPH_TRACE}, {KB_MEMCPY, PM_KIND_MEMCPY},
	{KB_MEMSET, PM_KIND_MEMSET}, {KB_SYNC, PM_KIND_SYNCHRONIZATION}, {KB_OVH, PM_KIND_OVERHEAD},
	{KB_DRV, PM_KIND_DRIVER}, {KB_RT, PM_KIND_RUNTIME},
};

static uint32_t wanted_kinds(int enabled, uint32_t detail)
{
	/* GRAPH_TRACE is enabled only inside InitializeInjection (PROFILEMATE_START=graph, or
	 * PROFILEMATE_ARM=graph|full), before any graph exists, and then kept on. Enabled later, CUPTI
	 * 13.0U1 crashed (SIGSEGV in libcupti under cuGraphLaunch) on the first replay of a graph
	 * instantiated while it was off (H200, docs/notes-agent.md). Once off, it stays off; graph
	 * level then records graph launches per node (CONCURRENT_KERNEL). */
	int gt_ok = G.gt_allowed || C.arm_lazy;
	uint32_t k = 0;
	if (C.arm_full)
		k |= KB_CK;
	/* once on, GRAPH_TRACE stays on while dormant or at detail off (its records are dropped):
	 * turning it off would forbid it for the rest of the process */
	if (gt_ok && (C.arm_graph || (G.kinds_on & KB_GT)))
		k |= KB_GT;
	if (!enabled)
		return k;
	uint32_t m = C.kinds_mask;
	k |= (KB_MEMCPY | KB_MEMSET | KB_SYNC | KB_OVH) & m;
	/* API records: the DRIVER/RUNTIME kinds, then every cbid outside the allowlist switched off
	 * (api_deny_others); without the per-cbid switch, conversion filters. */
	if (C.api && !((G.agent_flags & PM_AF_ALLOWLIST) && (m & KB_API_CBID_ONLY)))
		k |= (KB_DRV | KB_RT) & m;
	int win = G.sample_every <= 1 || G.sample_on; /* sampled: kernels only inside a window */
	int ck = win && (m & KB_CK);
	int gt = (m & KB_GT) && gt_ok;
	if (detail == PM_DETAIL_GRAPH)
		k = (k & ~KB_GT) | (ck ? KB_CK : 0) | (gt ? KB_GT : 0);
	else if (detail == PM_DETAIL_NODES) /* GRAPH_TRACE would replace the per-node records */
		k = (k & ~KB_GT) | (ck ? KB_CK : 0);
	return k;
}

/* After the DRIVER/RUNTIME kind was (re-)enabled — which turns every cbid of it on — switch
 * off each cbid outside the allowlist. CUPTI 13.0 has 807 driver and 523 runtime cbids;
 * ids beyond what the library knows fail harmlessly, and conversion filters anything left. */
static void api_deny_others(uint32_t newly)
{
	if (!(G.agent_flags & PM_AF_ALLOWLIST))
		return;
	for (uint32_t cb = 1; cb < 1024; cb++) {
		if ((newly & KB_DRV) && !api_allowed(0, cb))
			(void)G.EnableDriverApi(cb, 0);
		if ((newly & KB_RT) && !api_allowed(1, cb))
			(void)G.EnableRuntimeApi(cb, 0);
	}
}

static void set_api_allowlist(int on)
{
	if (!(G.agent_flags & PM_AF_ALLOWLIST) || !(C.kinds_mask & KB_API_CBID_ONLY)) {
		G.api_on = 0;
		return;
	}
	uint32_t want = on ? C.kinds_mask & (KB_DRV | KB_RT) : 0;
	if ((want ^ G.api_on) & KB_DRV)
		for (size_t i = 0; i < sizeof pm_drv_allow / sizeof *pm_drv_allow; i++)
			(void)G.EnableDriverApi(pm_drv_allow[i], (uint8_t)!!(want & KB_DRV));
	if ((want ^ G.api_on) & KB_RT)
		for (size_t i = 0; i < sizeof pm_rt_allow / sizeof *pm_rt_allow; i++)
			(void)G.EnableRuntimeApi(pm_rt_allow[i], (uint8_t)!!(want & KB_RT));
	G.api_on = want;
}

static void set_kinds(uint32_t want)
{
	/* Disable first, then enable: switching graph→nodes drops GRAPH_TRACE
	 * before anything else changes. */
	for (size_t i = 0; i < sizeof pm_kind_bits / sizeof *pm_kind_bits; i++) {
		uint32_t b = pm_kind_bits[i].bit;
		if ((G.kinds_on & b) && !(want & b)) {
			pm_CUptiResult st = G.Disable(pm_kind_bits[i].kind);
			if (st != PM_CUPTI_SUCCESS)
				emit_log(PM_LOG_WARN, "cuptiActivityDisable(%u) = %d", pm_kind_bits[i].kind, st);
			G.kinds_on &= ~b;
			if (b == KB_GT)
				G.gt_allowed = 0; /* never again in this process (see wanted_kinds) */
		}
	}
	uint32_t newly = 0;
	for (size_t i = 0; i < sizeof pm_kind_bits / sizeof *pm_kind_bits; i++) {
		uint32_t b = pm_kind_bits[i].bit;
		if (!(G.kinds_on & b) && (want & b)) {
			pm_CUptiResult st = G.Enable(pm_kind_bits[i].kind);
			if (st != PM_CUPTI_SUCCESS)
				emit_log(PM_LOG_WARN, "cuptiActivityEnable(%u) = %d", pm_kind_bits[i].kind, st);
			else
				G.kinds_on |= b, newly |= b;
		}
	}
	api_deny_others(newly);
	if (G.enabled && G.detail == PM_DETAIL_GRAPH && !(G.kinds_on & KB_GT) && (C.kinds_mask & KB_GT) &&
	    !G.gt_fallback_logged) {
		G.gt_fallback_logged = 1;
		emit_log(PM_LOG_INFO, "graph_trace_unavailable: GRAPH_TRACE can only be enabled at cuInit (PROFILEMATE_START=graph "
				      "or PROFILEMATE_ARM=graph); graph launches are recorded per node");
	}
}

/* Applies (enable, detail). Agent thread, or InitializeInjection before the thread exists. */
static void apply_control(int enable, uint32_t detail, uint32_t sample_every, uint32_t reason)
{
	if (detail > PM_DETAIL_NODES)
		detail = PM_DETAIL_GRAPH;
	int was = G.enabled;
	if (was && !enable) {
		/* Going dormant: stop producing, then collect what was produced while enabled. */
		set_kinds(wanted_kinds(0, detail));
		set_api_allowlist(0);
		G.FlushAll(PM_FLUSH_FORCED);
		drain_completed();
	}
	if (enable && !was && G.kinds_on) {
		/* kinds armed while dormant (PROFILEMATE_ARM=graph|full): drop what they produced
		 * before this enable, so the capture starts clean */
		G.FlushAll(PM_FLUSH_FORCED);
		drain_completed();
	}
	if (enable && !was)
		G.epoch++; /* names are emitted again in each enabled epoch */
	if (enable) {
		load_kinds_mask();
		if (was) { /* the mask may have changed: re-apply the allowlists from scratch */
			set_api_allowlist(0);
		}
	}
	G.enabled = enable;
	G.detail = detail;
	G.sample_every = sample_every;
	G.sample_on = 1; /* a sampled capture starts with a kernel window */
	G.sample_tick = 0;
	if (enable) {
		set_kinds(wanted_kinds(1, detail));
		set_api_allowlist(C.api);
	}
	emit_control_change(reason);
	pm_dbg("control: enable=%d detail=%u reason=%u kinds=0x%x api=0x%x", enable, detail, reason, G.kinds_on, G.api_on);
}

/* ------------------------------------------------------------------ yield */

static void undump_kinds(void);
static void do_yield(void)
{
	if (!G.running)
		return;
	undump_kinds();
	set_kinds(0);
	set_api_allowlist(0);
	G.FlushAll(PM_FLUSH_FORCED);
	drain_completed();
	G.enabled = 0;
	if (G.Unsubscribe && G.subscriber)
		G.Unsubscribe(G.subscriber);
	G.subscriber = NULL;
	__atomic_store_n(&G.running, 0, __ATOMIC_RELEASE);
	G.passive = 1;
	G.yielded = 1;
	emit_control_change(PM_REASON_YIELD);
	emit_log(PM_LOG_INFO, "yielded CUPTI to another tool; passive from now on");
	__atomic_store_n(&G.ring.hdr->producer_state, PM_STATE_PASSIVE, __ATOMIC_RELEASE);
}

/* After a yield, a tracer's enable tries to take CUPTI back: subscribe again (another
 * tool still holding it → stay passive, log who), re-register our callbacks and clock. */
static pm_CUptiResult pm_subscribe(char *holder, size_t cap);
static int do_rearm(void)
{
	char holder[256] = "";
	pm_CUptiResult st = pm_subscribe(holder, sizeof holder);
	if (st != PM_CUPTI_SUCCESS) {
		/* busy only when another subscriber holds CUPTI (39); any other error (no driver: 999) is
		 * cupti_unavailable, as at a preloaded start */
		const char *rs = NULL;
		if (st == PM_CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED)
			emit_log(PM_LOG_WARN, "cupti_busy: %s (cuptiSubscribe error %d); still passive",
				 holder[0] ? holder : "unknown", st);
		else if (!G.GetResultString || G.GetResultString(st, &rs) != PM_CUPTI_SUCCESS || !rs)
			emit_log(PM_LOG_WARN, "cupti_unavailable: cuptiSubscribe error %d; still passive", st);
		else
			emit_log(PM_LOG_WARN, "cupti_unavailable: cuptiSubscribe error %d %s; still passive", st, rs);
		__atomic_store_n(&G.ring.hdr->producer_state, PM_STATE_PASSIVE, __ATOMIC_RELEASE);
		return 0;
	}
	if (G.RegisterCallbacks(pm_buffer_requested, pm_buffer_completed) != PM_CUPTI_SUCCESS) {
		G.Unsubscribe(G.subscriber);
		G.subscriber = NULL;
		emit_log(PM_LOG_ERROR, "re-arm: cuptiActivityRegisterCallbacks failed; still passive");
		return 0;
	}
	if (G.RegisterTimestampCallback)
		(void)G.RegisterTimestampCallback(pm_timestamp);
	if (G.SetThreadIdType)
		(void)G.SetThreadIdType(PM_THREAD_ID_TYPE_SYSTEM);
	G.kinds_on = 0;
	G.api_on = 0;
	__atomic_store_n(&G.running, 1, __ATOMIC_RELEASE);
	G.passive = 0;
	if (G.deferred) {
		G.deferred = 0;
		G.agent_flags |= PM_AF_ARMED | PM_AF_LATE;
		G.ring.hdr->producer_flags |= PM_PFLAG_LATE_START;
		emit_log(PM_LOG_INFO, "armed CUPTI at the first enable (it was left untouched while dormant)");
	} else {
		emit_log(PM_LOG_INFO, "re-armed: CUPTI taken back after a yield");
	}
	G.yielded = 0;
	__atomic_store_n(&G.ring.hdr->producer_state, PM_STATE_RUNNING, __ATOMIC_RELEASE);
	return 1;
}

/* DEVICE and CONTEXT records are written when a device or context is created, long before a
 * late arm: cuptiActivityEnableAndDump enables the kind and writes the existing ones (they
 * become log records, convert_record). The kinds stay on (records only at creation) until a
 * yield or detach. */
static const uint32_t pm_dump_kinds[2] = {PM_KIND_DEVICE, PM_KIND_CONTEXT};
static void dump_device_context(void)
{
	if (!G.EnableAndDump)
		return;
	for (int i = 0; i < 2; i++) {
		if (G.dump_kinds & (1u << i))
			continue;
		pm_CUptiResult st = G.EnableAndDump(pm_dump_kinds[i]);
		if (st == PM_CUPTI_SUCCESS)
			G.dump_kinds |= 1u << i;
		else
			emit_log(PM_LOG_WARN, "cuptiActivityEnableAndDump(%u) = %d", pm_dump_kinds[i], st);
	}
}
static void undump_kinds(void)
{
	for (int i = 0; i < 2; i++)
		if (G.dump_kinds & (1u << i))
			(void)G.Disable(pm_dump_kinds[i]);
	G.dump_kinds = 0;
}

/* An enable for an agent that left CUPTI untouched (PROFILEMATE_ARM=none, or injected) or
 * yielded it: subscribe, callbacks, clock, thread ids, then the kinds of the level, then the
 * DEVICE/CONTEXT dump. The first such arm is timed (CLOCK_MONOTONIC around every arming call,
 * including the kernel enable that may stall while CUPTI instruments loaded modules) and
 * published in the ring header (first_enable_ns). */
static void arm_and_enable(uint32_t det, uint32_t se, uint32_t reason)
{
	int first = G.deferred;
	uint64_t t0 = pm_now_ns();
	if (!do_rearm())
		return;
	apply_control(1, det, se, reason);
	dump_device_context();
	if (first) {
		uint64_t dt = pm_now_ns() - t0;
		__atomic_store_n(&G.ring.hdr->first_enable_ns, dt ? dt : 1, __ATOMIC_RELEASE);
		emit_log(PM_LOG_INFO, "first enable: CUPTI armed late in %.3f ms", (double)dt / 1e6);
	}
}

/* Detach (injected agent: control_enable=3, or its tracer stopped heart-beating): every kind
 * off, forced flush converted into the ring while still "enabled" (nothing collected is lost),
 * unsubscribe (never cuptiFinalize: heavy, and re-init after it crashed CUDA-graph processes),
 * final agent_stats + stream_stats, producer_state=5. The caller acknowledges; the thread then
 * leaves its loop and pm_session_end unmaps and closes the ring. */
static void do_detach(uint32_t reason)
{
	if (G.running) {
		undump_kinds();
		set_kinds(0);
		set_api_allowlist(0);
		G.FlushAll(PM_FLUSH_FORCED);
		drain_completed();
		size_t dropped = 0;
		if (G.GetNumDropped(NULL, 0, &dropped) == PM_CUPTI_SUCCESS && dropped)
			G.cupti_dropped += dropped;
		if (G.Unsubscribe && G.subscriber)
			G.Unsubscribe(G.subscriber);
		G.subscriber = NULL;
		__atomic_store_n(&G.running, 0, __ATOMIC_RELEASE);
	} else {
		drain_completed();
	}
	G.enabled = 0;
	emit_control_change(reason);
	emit_log(PM_LOG_INFO, "detached (%s): CUPTI unsubscribed, ring closed; the library stays loaded",
		 reason == PM_REASON_ORPHAN ? "tracer heartbeat lost" : "tracer request");
	emit_agent_stats(1);
	emit_stream_stats();
	__atomic_store_n(&G.ring.hdr->producer_state, PM_STATE_DETACHED, __ATOMIC_RELEASE);
	G.stop = 1;
}

/* ------------------------------------------------------------------ agent thread */

static void handle_hijack(void)
{
	if (!__atomic_load_n(&G.hijacked, __ATOMIC_ACQUIRE) || !G.running)
		return;
	/* Our callbacks are gone: buffers now go to the other client. Make no further
	 * CUPTI call (disabling kinds would break the other client too). */
	__atomic_store_n(&G.running, 0, __ATOMIC_RELEASE);
	G.passive = 1;
	G.enabled = 0;
	G.kinds_on = 0;
	drain_completed();
	emit_log(PM_LOG_WARN, "cupti_hijacked: another CUPTI client registered activity callbacks while the agent "
			      "held CUPTI (KINETO_USE_DAEMON?); passive from now on");
	__atomic_store_n(&G.ring.hdr->producer_state, PM_STATE_PASSIVE, __ATOMIC_RELEASE);
}

static void poll_control(void)
{
	struct pm_ring_hdr *h = G.ring.hdr;
	handle_hijack();
	uint32_t seq = __atomic_load_n(&h->control_seq, __ATOMIC_ACQUIRE);
	if (seq != G.applied_seq) {
		uint32_t en = __atomic_load_n(&h->control_enable, __ATOMIC_RELAXED);
		uint32_t det = __atomic_load_n(&h->control_detail, __ATOMIC_RELAXED);
		uint32_t se = __atomic_load_n(&h->sample_every, __ATOMIC_RELAXED);
		G.applied_seq = seq;
		G.orphaned = 0;
		if (en == 3 && pm_injected) {
			do_detach(PM_REASON_DETACH); /* producer_state=5 before the acknowledgement */
			__atomic_store_n(&h->control_ack, seq, __ATOMIC_RELEASE);
			return;
		}
		if (en == 2 || en == 3) /* 3 (detach) on a preloaded agent: yield; it keeps its ring */
			do_yield();
		else if (G.running)
			apply_control(en == 1, det, se, PM_REASON_TRACER);
		else if ((G.yielded || G.deferred) && en == 1)
			arm_and_enable(det, se, PM_REASON_TRACER);
		__atomic_store_n(&h->control_ack, seq, __ATOMIC_RELEASE);
	}
	if (pm_injected) {
		/* Nobody but the tracer that injected us knows this ring: once its heartbeat (or, before
		 * the first one, the start) is older than orphan_timeout_s, detach whatever the state. */
		uint64_t hb = __atomic_load_n(&h->consumer_heartbeat_ns, __ATOMIC_RELAXED);
		uint64_t ref = hb ? hb : I.start_ns;
		if (C.orphan_ns && pm_now_ns() > ref + C.orphan_ns) {
			emit_log(PM_LOG_WARN, "tracer heartbeat older than %.1f s: detaching", (double)C.orphan_ns / 1e9);
			do_detach(PM_REASON_ORPHAN);
		}
		return;
	}
	if (G.running && G.enabled && C.orphan_ns) {
		uint64_t hb = __atomic_load_n(&h->consumer_heartbeat_ns, __ATOMIC_RELAXED);
		if (hb && pm_now_ns() > hb + C.orphan_ns) {
			emit_log(PM_LOG_WARN, "tracer heartbeat older than %.1f s: going dormant", (double)C.orphan_ns / 1e9);
			apply_control(0, G.detail, G.sample_every, PM_REASON_ORPHAN);
			G.orphaned = 1;
		}
	}
}

/* Kernel sampling (sample_every = N > 1): CONCURRENT_KERNEL is enabled for one flush
 * period out of N, so CUPTI's per-kernel cost is paid only inside windows. GRAPH_TRACE and
 * everything else stay on. Each window edge is a control_change record (reason 4 opened,
 * 5 closed) so consumers can scale counts. Agent thread only. */
static void sample_tick(void)
{
	if (!G.running || !G.enabled || G.sample_every <= 1 || G.detail == PM_DETAIL_OFF)
		return;
	G.sample_tick++;
	int on = G.sample_tick % G.sample_every == 0;
	if (on == G.sample_on)
		return;
	G.sample_on = on;
	set_kinds(wanted_kinds(1, G.detail));
	emit_control_change(on ? PM_REASON_WINDOW_OPEN : PM_REASON_WINDOW_CLOSE);
}

static void flush_once(int forced)
{
	if (G.running && (G.kinds_on || forced))
		G.FlushAll(forced ? PM_FLUSH_FORCED : 0);
	drain_completed();
	/* Outside every lock of ours (cupti-notes §6). */
	if (G.running && G.kinds_on) {
		size_t dropped = 0;
		if (G.GetNumDropped(NULL, 0, &dropped) == PM_CUPTI_SUCCESS && dropped)
			G.cupti_dropped += dropped;
	}
	G.flush_count++;
	update_source_dropped();
	__atomic_store_n(&G.ring.hdr->last_flush_ns, pm_now_ns(), __ATOMIC_RELAXED);
}

static void final_flush(void)
{
	if (G.running && G.enabled) {
		flush_once(1);
	} else {
		drain_completed();
	}
	emit_agent_stats(1);
	emit_stream_stats();
	uint32_t running = PM_STATE_RUNNING; /* passive and failed stay as they are */
	__atomic_compare_exchange_n(&G.ring.hdr->producer_state, &running, PM_STATE_EXITED, 0, __ATOMIC_RELEASE,
				    __ATOMIC_RELAXED);
}

/* Threads CUPTI starts (its activity and callback workers) inherit the name of the thread whose
 * call started them. The agent thread makes its CUPTI calls under the process's own name (the
 * main thread's comm), as when the application arms CUPTI itself, and is "pm-cupti" between
 * them: a tracer that checks a detach by looking for pm-cupti threads then sees only ours. */
static char pm_app_comm[16];
static void pm_load_app_comm(void)
{
	pm_app_comm[0] = 0;
	int fd = open("/proc/self/comm", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, pm_app_comm, sizeof pm_app_comm - 1);
	close(fd);
	if (n <= 0) {
		pm_app_comm[0] = 0;
		return;
	}
	pm_app_comm[n] = 0;
	pm_app_comm[strcspn(pm_app_comm, "\n")] = 0;
	if (!strcmp(pm_app_comm, "pm-cupti"))
		pm_app_comm[0] = 0;
}
static void cupti_calls_begin(void)
{
	if (pm_app_comm[0])
		prctl(PR_SET_NAME, pm_app_comm, 0, 0, 0);
}
static void cupti_calls_end(void)
{
	if (pm_app_comm[0])
		prctl(PR_SET_NAME, "pm-cupti", 0, 0, 0);
}

static void *pm_thread_main(void *arg)
{
	(void)arg;
	pm_load_app_comm();
	const uint64_t tick_ns = 25000000ull; /* control poll period */
	uint64_t next_flush = pm_now_ns() + (uint64_t)C.flush_ms * 1000000ull;
	uint64_t next_stats = pm_now_ns() + 1000000000ull;
	pthread_mutex_lock(&G.tmu);
	while (!G.stop && !G.poisoned) {
		if (G.final_req) {
			pthread_mutex_unlock(&G.tmu);
			cupti_calls_begin();
			final_flush();
			cupti_calls_end();
			pthread_mutex_lock(&G.tmu);
			G.final_done = 1;
			pthread_cond_broadcast(&G.tcv);
			break;
		}
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		uint64_t t = (uint64_t)ts.tv_nsec + tick_ns;
		ts.tv_sec += (time_t)(t / 1000000000ull);
		ts.tv_nsec = (long)(t % 1000000000ull);
		pthread_cond_timedwait(&G.tcv, &G.tmu, &ts);
		if (G.stop || G.poisoned || G.final_req)
			continue;
		pthread_mutex_unlock(&G.tmu);
		cupti_calls_begin();
		poll_control();
		if (G.stop) { /* detached: stream_stats was the last record */
			cupti_calls_end();
			pthread_mutex_lock(&G.tmu);
			break;
		}
		uint64_t now = pm_now_ns();
		if (now >= next_flush) {
			flush_once(0);
			sample_tick();
			next_flush = now + (uint64_t)C.flush_ms * 1000000ull;
		}
		cupti_calls_end();
		if (now >= next_stats) {
			emit_agent_stats(0);
			next_stats = now + 1000000000ull;
		}
		pthread_mutex_lock(&G.tmu);
	}
	pthread_mutex_unlock(&G.tmu);
	return NULL;
}

/* Asks the agent thread for the final forced flush (convert, stream_stats, state
 * exited) and waits at most exit_flush_ms: exit never hangs on CUPTI. The calling
 * thread makes no CUPTI call and takes no lock of ours beyond tmu (timed), so this
 * is bounded even when it runs from a signal handler that interrupted one of our
 * buffer callbacks (the agent thread then times out waiting, not this one). */
static int pm_final_request(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t t = (uint64_t)ts.tv_nsec + (uint64_t)C.exit_flush_ms * 1000000ull;
	ts.tv_sec += (time_t)(t / 1000000000ull);
	ts.tv_nsec = (long)(t % 1000000000ull);
	if (pthread_mutex_timedlock(&G.tmu, &ts) != 0)
		return 0;
	G.final_req = 1;
	pthread_cond_broadcast(&G.tcv);
	while (!G.final_done) {
		if (pthread_cond_timedwait(&G.tcv, &G.tmu, &ts) == ETIMEDOUT)
			break;
	}
	int done = G.final_done;
	pthread_mutex_unlock(&G.tmu);
	return done;
}

/* 1 when the agent is collecting in *this* process (not a fork child, not passive,
 * not failed, not already finished). Cheap and lock-free: _exit calls it first. */
static int pm_active_here(void)
{
	return !G.poisoned && G.have_ring && G.pid == (pid_t)syscall(SYS_getpid) &&
	       __atomic_load_n(&G.running, __ATOMIC_ACQUIRE) && !__atomic_load_n(&G.final_done, __ATOMIC_ACQUIRE);
}

static void pm_atexit(void)
{
	if (G.poisoned || G.pid != getpid() || !G.have_ring)
		return;
	if (!G.thread_started) {
		final_flush();
		return;
	}
	if (!pm_final_request())
		pm_dbg("exit flush did not finish within %u ms; leaving", C.exit_flush_ms);
}

/* _exit/_Exit interposition (LD_PRELOAD only; as an injection-only library these
 * exports are not in the global scope and never called). Python's os._exit — how
 * multiprocessing children leave — runs no exit handler, so without this a
 * short-lived child loses everything since the last flush period. Only when the
 * agent collects in this very process (not a vfork/fork child: pid checked by
 * syscall; not poisoned; not passive) and its thread exists, the thread is asked for
 * the final forced flush, bounded by PROFILEMATE_EXIT_FLUSH_MS; then the real
 * function runs. Never recursive (guard), never a CUPTI call on the caller's thread.
 * glibc's own exit() reaches _exit internally (not through this symbol), after our
 * atexit handler already did the same work. */
static void (*pm_real_exit)(int);
static void (*pm_real_Exit)(int);
static int pm_exit_guard;

static __attribute__((noreturn)) void pm_exit_common(int status, void (*real)(int))
{
	if (pm_active_here() && G.thread_started && !__atomic_exchange_n(&pm_exit_guard, 1, __ATOMIC_ACQ_REL)) {
		int saved = errno;
		if (!pm_final_request())
			pm_dbg("_exit flush did not finish within %u ms; leaving", C.exit_flush_ms);
		errno = saved;
	}
	if (real)
		real(status);
	for (;;)
		syscall(SYS_exit_group, status);
}

PM_EXPORT __attribute__((noreturn)) void _exit(int status) { pm_exit_common(status, pm_real_exit); }
PM_EXPORT __attribute__((noreturn)) void _Exit(int status) { pm_exit_common(status, pm_real_Exit); }

static void pm_atfork_child(void)
{
	/* Child of a process where the agent was initialized: no CUPTI calls, no
	 * ring writes, no thread (it did not survive fork). Async-signal-safe only. */
	G.poisoned = 1;
	if (G.have_ring && G.ring.fd >= 0) {
		close(G.ring.fd); /* the tracer must not find the parent's ring in the child */
		G.ring.fd = -1;
	}
}

/* ------------------------------------------------------------------ discovery */

struct find_ctx {
	char path[PATH_MAX];
};
static int find_cupti_cb(struct dl_phdr_info *info, size_t size, void *data)
{
	(void)size;
	struct find_ctx *f = data;
	const char *n = info->dlpi_name;
	if (!n || !*n)
		return 0;
	const char *base = strrchr(n, '/');
	base = base ? base + 1 : n;
	if (!strncmp(base, "libcupti.so", 11)) {
		snprintf(f->path, sizeof f->path, "%s", n);
		return 1;
	}
	return 0;
}

static void *open_cupti(char *path_out, size_t cap)
{
	void *h = NULL;
	struct find_ctx f = {{0}};
	int mapped = dl_iterate_phdr(find_cupti_cb, &f) && f.path[0];
	if (C.cupti_path && *C.cupti_path) {
		h = dlopen(C.cupti_path, RTLD_NOW | RTLD_LOCAL);
		snprintf(path_out, cap, "%s", C.cupti_path);
		if (!h)
			pm_warn("PROFILEMATE_CUPTI_PATH=%s: %s", C.cupti_path, dlerror());
		else if (mapped && dlopen(f.path, RTLD_NOW | RTLD_NOLOAD) != h)
			pm_warn("PROFILEMATE_CUPTI_PATH=%s is not the libcupti this process already uses (%s): two CUPTI "
				"instances, the framework's profiler and ours will not see each other", C.cupti_path, f.path);
		return h;
	}
	if (mapped) {
		h = dlopen(f.path, RTLD_NOW | RTLD_LOCAL);
		if (h) {
			snprintf(path_out, cap, "%s", f.path);
			return h;
		}
	}
	static const char *const names[] = {"libcupti.so.13", "libcupti.so.12", NULL};
	for (int i = 0; names[i]; i++) {
		h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
		if (h) {
			struct link_map *lm = NULL;
			if (dlinfo(h, RTLD_DI_LINKMAP, &lm) == 0 && lm && lm->l_name && lm->l_name[0])
				snprintf(path_out, cap, "%s", lm->l_name);
			else
				snprintf(path_out, cap, "%s", names[i]);
			return h;
		}
	}
	return NULL;
}

static const char *pm_missing_sym;
#define SYM(field, name, required)                                                                     \
	do {                                                                                           \
		*(void **)(&G.field) = dlsym(G.lib, name);                                              \
		if (!G.field && (required)) {                                                          \
			pm_missing_sym = name;                                                         \
			return -1;                                                                     \
		}                                                                                      \
	} while (0)

static int resolve(void)
{
	SYM(GetVersion, "cuptiGetVersion", 1);
	SYM(Subscribe, "cuptiSubscribe", 1);
	SYM(Subscribe_v2, "cuptiSubscribe_v2", 0);
	SYM(Unsubscribe, "cuptiUnsubscribe", 1);
	SYM(RegisterCallbacks, "cuptiActivityRegisterCallbacks", 1);
	SYM(Enable, "cuptiActivityEnable", 1);
	SYM(Disable, "cuptiActivityDisable", 1);
	SYM(FlushAll, "cuptiActivityFlushAll", 1);
	SYM(GetNextRecord, "cuptiActivityGetNextRecord", 1);
	SYM(GetNumDropped, "cuptiActivityGetNumDroppedRecords", 1);
	SYM(RegisterTimestampCallback, "cuptiActivityRegisterTimestampCallback", 0);
	SYM(SetThreadIdType, "cuptiSetThreadIdType", 0);
	SYM(SetAttribute, "cuptiActivitySetAttribute", 0);
	SYM(EnableDriverApi, "cuptiActivityEnableDriverApi", 0);
	SYM(EnableRuntimeApi, "cuptiActivityEnableRuntimeApi", 0);
	SYM(GetResultString, "cuptiGetResultString", 0);
	SYM(EnableAndDump, "cuptiActivityEnableAndDump", 0);
	return 0;
}

static void send_ring_fd(void)
{
	if (!C.ctl_socket || !*C.ctl_socket || strlen(C.ctl_socket) >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return;
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s < 0)
		return;
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	strcpy(sa.sun_path, C.ctl_socket);
	if (connect(s, (struct sockaddr *)&sa, sizeof sa) != 0) {
		pm_dbg("control socket %s: connect: %s", C.ctl_socket, strerror(errno));
		close(s);
		return;
	}
	char msg[48];
	int n = snprintf(msg, sizeof msg, "cupti %d\n", (int)getpid());
	struct iovec iov = {.iov_base = msg, .iov_len = (size_t)n};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	memset(&u, 0, sizeof u);
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &G.ring.fd, sizeof(int));
	if (sendmsg(s, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		pm_dbg("control socket %s: sendmsg: %s", C.ctl_socket, strerror(errno));
	close(s);
}

static uint32_t query_driver_version(void)
{
	void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
	if (!h)
		return 0;
	int (*fn)(int *) = NULL;
	*(void **)(&fn) = dlsym(h, "cuDriverGetVersion");
	int v = 0;
	if (fn && fn(&v) != 0)
		v = 0;
	dlclose(h);
	return (uint32_t)v;
}

static int version_supported(uint32_t v)
{
	if (v == 130000)
		return 0; /* 13.0 GA: missing sync records, FlushAll crash, Disable deadlock */
	return v >= 18;   /* CUDA 12.0 or newer */
}

static pm_CUptiResult pm_subscribe(char *holder, size_t cap)
{
	pm_CUptiResult st;
	if (G.version >= 130000 && G.Subscribe_v2) {
		struct pm_cupti_subscriber_params p = {
			.structSize = sizeof p, .subscriberName = "profilemate", .oldSubscriberName = holder,
			.oldSubscriberSize = cap};
		st = G.Subscribe_v2(&G.subscriber, pm_subscriber_cb, NULL, &p);
	} else {
		st = G.Subscribe(&G.subscriber, pm_subscriber_cb, NULL);
	}
	holder[cap - 1] = 0;
	return st;
}

static void go_passive(const char *why)
{
	G.passive = 1;
	G.agent_flags |= PM_AF_PASSIVE;
	emit_process_info();
	emit_log(PM_LOG_WARN, "%s", why);
	__atomic_store_n(&G.ring.hdr->producer_state, PM_STATE_PASSIVE, __ATOMIC_RELEASE);
}

static void go_failed(const char *why)
{
	emit_process_info();
	emit_log(PM_LOG_ERROR, "%s", why);
	__atomic_store_n(&G.ring.hdr->producer_state, PM_STATE_FAILED, __ATOMIC_RELEASE);
}

static void start_agent_thread(void)
{
	if (pm_injected) { /* pm_inject_main is the agent thread: it enters the loop after pm_init */
		G.thread = pthread_self();
		G.thread_started = 1;
		return;
	}
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	if (pthread_create(&G.thread, NULL, pm_thread_main, NULL) == 0) {
		G.thread_started = 1;
		pthread_setname_np(G.thread, "pm-cupti");
	} else {
		emit_log(PM_LOG_ERROR, "cannot start the agent thread; records are flushed only at exit");
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

#ifdef PM_SEGV_DIAG
/* Diagnostic builds only (-DPM_SEGV_DIAG, never the shipped agent): print the faulting
 * thread's name and backtrace, then die as before. */
#include <execinfo.h>
#include <sys/prctl.h>
static void pm_segv_diag(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	char name[32] = "?", buf[160];
	prctl(PR_GET_NAME, name, 0, 0, 0);
	int n = snprintf(buf, sizeof buf, "[profilemate-diag] signal %d addr %p thread %s tid %ld\n", sig, si->si_addr, name,
			 (long)syscall(SYS_gettid));
	ssize_t w PM_UNUSED = write(2, buf, (size_t)n);
	void *bt[64];
	int k = backtrace(bt, 64);
	backtrace_symbols_fd(bt, k, 2);
	signal(sig, SIG_DFL);
	raise(sig);
}
static void pm_segv_install(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = pm_segv_diag;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGABRT, &sa, NULL);
}
#endif

static void pm_init(void)
{
#ifdef PM_SEGV_DIAG
	pm_segv_install();
#endif
	pm_config_load();
	G.pid = getpid();
	static int atfork_done;
	if (!atfork_done) {
		atfork_done = 1;
		pthread_atfork(NULL, NULL, pm_atfork_child);
	}
	if (pm_ring_create(&G.ring, "cupti", PM_SRC_CUPTI, C.ring_bytes) != 0) {
		pm_warn("cannot create the ring (%s); CUPTI left alone", strerror(errno));
		return;
	}
	G.have_ring = 1;
	G.ring.hdr->control_enable = (uint32_t)C.start_enable;
	G.ring.hdr->control_detail = C.start_detail;
	if (pm_injected) {
		/* Started in a running process: CUDA is initialised, so CUPTI can only be armed late. No
		 * control socket: the tracer finds the ring in /proc/PID/fd. */
		G.ring.hdr->producer_flags = PM_PFLAG_LATE_START;
		G.ring.hdr->late_start_ns = I.start_ns;
		G.agent_flags |= PM_AF_LATE;
	}
	send_ring_fd();
	static int atexit_done; /* once per process: an injected agent may start many sessions */
	if (!atexit_done) {
		atexit_done = 1;
		atexit(pm_atexit);
	}
	G.driver_version = query_driver_version();

	if (C.yield) {
		go_passive("PROFILEMATE_YIELD set: CUPTI left to other tools");
		start_agent_thread(); /* only acknowledges control changes */
		return;
	}
	if (!G.lib) /* a later injected session keeps the first one's libcupti (never dlclosed) */
		G.lib = open_cupti(G.lib_path, sizeof G.lib_path);
	if (!G.lib) {
		go_failed("no libcupti found (set PROFILEMATE_CUPTI_PATH)");
		return;
	}
	if (resolve() != 0) {
		char why[PATH_MAX + 96];
		snprintf(why, sizeof why, "libcupti %s lacks %s", G.lib_path, pm_missing_sym ? pm_missing_sym : "?");
		go_failed(why);
		return;
	}
	if (G.GetVersion(&G.version) != PM_CUPTI_SUCCESS)
		G.version = 0;
	if (!version_supported(G.version)) {
		G.agent_flags |= PM_AF_REFUSED;
		char why[160];
		snprintf(why, sizeof why, "unsupported CUPTI version %u (need 12.x >= 18, or 13.0 Update 1 = 130001 and later)",
			 G.version);
		go_failed(why);
		return;
	}
	/* Dormant without arming (PROFILEMATE_ARM=none, the default when no tracer asked for a
	 * start): no CUPTI call at all until a tracer enables collection. Measured on an H100, a
	 * process whose CUPTI is merely subscribed with activity callbacks registered (no kind on)
	 * ran a synchronised CUDA-graph decode loop 3.5 % slower; untouched, it costs nothing.
	 * The price: the first enable arms CUPTI late (GRAPH_TRACE cannot be enabled late, so
	 * graphs are recorded per node, and the first kernel enable may stall while CUPTI
	 * instruments loaded modules), and another CUPTI user is only detected then. */
	int deferred = pm_injected || (!C.start_enable && !C.arm_light && !C.arm_graph && !C.arm_full && !C.arm_lazy);
	/* Subscribe first: the advisory lock that tells other tools (and us) who owns CUPTI. */
	char holder[256] = "";
	pm_CUptiResult st = deferred ? PM_CUPTI_SUCCESS : pm_subscribe(holder, sizeof holder);
	if (st != PM_CUPTI_SUCCESS) {
		char why[400];
		if (st == PM_CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED) {
			snprintf(why, sizeof why, "cupti_busy: %s (cuptiSubscribe error %d)", holder[0] ? holder : "unknown", st);
		} else {
			const char *rs = NULL;
			if (!G.GetResultString || G.GetResultString(st, &rs) != PM_CUPTI_SUCCESS || !rs)
				rs = "";
			snprintf(why, sizeof why, "cupti_unavailable: cuptiSubscribe error %d %s", st, rs);
		}
		go_passive(why); /* zero further CUPTI calls */
		start_agent_thread(); /* only acknowledges control changes */
		return;
	}
	/* Before enabling any kind: clock, thread ids, buffer attributes. */
	/* (warnings are written after process_info, which must be the stream's first record) */
	int devbuf_refused = 0;
	if (!deferred && G.RegisterTimestampCallback && G.RegisterTimestampCallback(pm_timestamp) == PM_CUPTI_SUCCESS)
		G.agent_flags |= PM_AF_TSCB;
	if (!deferred && G.SetThreadIdType && G.SetThreadIdType(PM_THREAD_ID_TYPE_SYSTEM) == PM_CUPTI_SUCCESS)
		G.agent_flags |= PM_AF_SYSTID;
	if (!deferred && G.SetAttribute) {
		uint8_t one = 1;
		size_t sz = sizeof one;
		(void)G.SetAttribute(PM_ATTR_ZEROED_OUT_ACTIVITY_BUFFER, &sz, &one);
		if (C.dev_buf_bytes) { /* device-side record buffer per context; must precede context creation */
			size_t v = (size_t)C.dev_buf_bytes, vs = sizeof v;
			pm_CUptiResult ast = G.SetAttribute(PM_ATTR_DEVICE_BUFFER_SIZE, &vs, &v);
			if (ast != PM_CUPTI_SUCCESS)
				devbuf_refused = ast;
		}
	}
	if (G.EnableDriverApi && G.EnableRuntimeApi)
		G.agent_flags |= PM_AF_ALLOWLIST;
	for (size_t i = 0; i < sizeof pm_drv_allow / sizeof *pm_drv_allow; i++)
		G.api_allow[0][pm_drv_allow[i] >> 6] |= 1ull << (pm_drv_allow[i] & 63);
	for (size_t i = 0; i < sizeof pm_rt_allow / sizeof *pm_rt_allow; i++)
		G.api_allow[1][pm_rt_allow[i] >> 6] |= 1ull << (pm_rt_allow[i] & 63);
	/* Buffer pool: budget = max - ring - discard reserve; two buffers pre-allocated. Once per
	 * process (an injected agent's later sessions reuse it, see pool_inited). */
	uint64_t reserve = C.ring_bytes + PM_DISCARD_COUNT * (PM_DISCARD_SIZE + PM_BUF_HDR);
	pthread_mutex_lock(&G.mu);
	int pool_done = G.pool_inited;
	G.pool_inited = 1;
	if (!pool_done) {
		G.pool_budget = C.max_bytes > reserve ? C.max_bytes - reserve : 0;
		if (G.pool_budget < 2 * (C.buf_bytes + PM_BUF_HDR))
			G.pool_budget = 2 * (C.buf_bytes + PM_BUF_HDR);
	}
	pthread_mutex_unlock(&G.mu);
	for (int i = 0; i < 2 && !pool_done; i++) {
		struct pm_buf *b = buf_alloc(C.buf_bytes, 0);
		if (b) {
			b->next = G.free_list;
			G.free_list = b;
			G.pool_bytes += C.buf_bytes + PM_BUF_HDR;
		}
	}
	for (int i = 0; i < PM_DISCARD_COUNT && !pool_done; i++) {
		struct pm_buf *b = buf_alloc(PM_DISCARD_SIZE, 1);
		if (b) {
			b->next = G.discard_free;
			G.discard_free = b;
		}
	}
	if (!pool_done) {
		G.emergency = buf_alloc(PM_DISCARD_SIZE, 1);
		if (G.emergency)
			G.emergency->shared = 1;
	}
	if (deferred) {
		G.deferred = 1;
		emit_process_info();
		__atomic_store_n(&G.ring.hdr->producer_state, PM_STATE_RUNNING, __ATOMIC_RELEASE);
		start_agent_thread();
		pm_dbg("dormant, CUPTI untouched until the first enable: cupti %u at %s, driver %u", G.version, G.lib_path,
		       G.driver_version);
		return;
	}
	st = G.RegisterCallbacks(pm_buffer_requested, pm_buffer_completed);
	if (st != PM_CUPTI_SUCCESS) {
		G.Unsubscribe(G.subscriber);
		G.subscriber = NULL;
		char why[96];
		snprintf(why, sizeof why, "cuptiActivityRegisterCallbacks error %d", st);
		go_failed(why);
		return;
	}
	__atomic_store_n(&G.running, 1, __ATOMIC_RELEASE);
	G.agent_flags |= PM_AF_ARMED;
	G.ring.hdr->producer_flags = PM_PFLAG_ARMED_AT_INIT;
	emit_process_info();
	if (!(G.agent_flags & PM_AF_TSCB))
		emit_log(PM_LOG_WARN, "timestamp callback unavailable: CUPTI timestamps are not CLOCK_MONOTONIC");
	if (devbuf_refused)
		emit_log(PM_LOG_WARN, "CUPTI_ACTIVITY_ATTR_DEVICE_BUFFER_SIZE=%llu refused (%d)",
			 (unsigned long long)C.dev_buf_bytes, devbuf_refused);
	if (G.version >= 24 && G.version < 130100)
		pm_dbg("CUPTI %u: zero kernel timestamps possible with the timestamp callback; counted", G.version);
	G.gt_allowed = 1; /* no graph can exist yet: we are inside the process's first cuInit */
	set_kinds(wanted_kinds(0, PM_DETAIL_GRAPH)); /* PROFILEMATE_ARM=graph|full arms kernel kinds now */
	if (C.start_enable)
		apply_control(1, C.start_detail, 0, PM_REASON_ENV);
	G.gt_allowed = (G.kinds_on & KB_GT) != 0; /* from here on GRAPH_TRACE can only stay on */
	__atomic_store_n(&G.ring.hdr->producer_state, PM_STATE_RUNNING, __ATOMIC_RELEASE);

	start_agent_thread();
	pm_dbg("armed: cupti %u at %s, driver %u, flags 0x%x, ring %llu KiB, start=%d/%u", G.version, G.lib_path,
	       G.driver_version, G.agent_flags, (unsigned long long)(C.ring_bytes >> 10), C.start_enable,
	       C.start_detail);
}

/* ------------------------------------------------------------------ exports */

PM_EXPORT int InitializeInjection(void)
{
	static int once;
	int idle = PM_INJ_IDLE;
	if (!__atomic_compare_exchange_n(&I.state, &idle, PM_INJ_CUINIT, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE) &&
	    idle != PM_INJ_CUINIT)
		return 1; /* an injected session runs in this process: it arms CUPTI itself */
	if (__atomic_exchange_n(&once, 1, __ATOMIC_ACQ_REL))
		return 1;
	if (G.poisoned)
		return 0;
	G.inited = 1;
	pm_init();
	return 1;
}

/* ------------------------------------------------------------------ late start (pm_inject_start) */

/* Ends an injected session on its own thread, after detach: unmaps and closes the ring, frees
 * the name tables, gives the idle buffers' pages back (the pool itself stays, see pool_inited),
 * resets the collection state and finally marks the agent idle, so that a later
 * pm_inject_start starts afresh. The library stays loaded. */
static void pm_session_end(void)
{
	pm_ring_close(&G.ring);
	G.have_ring = 0;
	for (uint32_t i = 1; i <= G.names_n; i++)
		free(G.names[i].str);
	free(G.names);
	free(G.ptab);
	free(G.ctab);
	G.names = NULL, G.ptab = NULL, G.ctab = NULL;
	G.names_n = G.names_cap = G.ptab_cap = G.ptab_n = G.ctab_cap = 0;
	G.name_bytes = 0, G.name_warned = 0;
	long pg = sysconf(_SC_PAGESIZE);
	pthread_mutex_lock(&G.mu);
	struct pm_buf *lists[2] = {G.free_list, G.discard_free};
	for (int l = 0; l < 2; l++)
		for (struct pm_buf *b = lists[l]; b; b = b->next) {
			size_t total = b->size + PM_BUF_HDR;
			if (pg > 0 && total > (size_t)pg) /* keep the header page; the rest reads as zeros */
				madvise((uint8_t *)b + pg, total - (size_t)pg, MADV_DONTNEED);
		}
	pthread_mutex_unlock(&G.mu);
	G.running = 0, G.passive = 0, G.agent_flags = 0, G.subscriber = NULL;
	G.enabled = 0, G.detail = 0, G.sample_every = 0, G.applied_seq = 0, G.kinds_on = 0, G.api_on = 0;
	G.orphaned = 0, G.yielded = 0, G.deferred = 0, G.hijacked = 0, G.sample_on = 0, G.sample_tick = 0;
	G.gt_allowed = 0, G.gt_fallback_logged = 0, G.dump_kinds = 0;
	G.buffers_requested = G.buffers_discard = G.buffers_completed = 0;
	G.records_converted = G.records_unknown = G.records_discarded = G.cupti_dropped = 0;
	G.records_dormant = G.kernels_zero_ts = G.flush_count = G.flush_ns_total = G.last_stats_sig = 0;
	G.thread_started = 0, G.final_req = 0, G.final_done = 0, G.stop = 0;
	int fd = I.log_fd;
	__atomic_store_n(&I.log_fd, -1, __ATOMIC_RELAXED);
	pm_injected = 0;
	if (fd >= 0)
		close(fd);
	__atomic_store_n(&I.state, PM_INJ_IDLE, __ATOMIC_RELEASE);
}

/* One line to the conf's log file, opened per call (threads other than the agent's). */
static void log_to_path(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_to_path(const char *path, const char *fmt, ...)
{
	if (!path || !*path)
		return;
	char buf[512];
	int n = snprintf(buf, sizeof buf, "[profilemate] pid %d: ", (int)getpid());
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n < 0 || m < 0)
		return;
	size_t len = strlen(buf);
	buf[len++] = '\n';
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
	if (fd < 0)
		return;
	ssize_t w PM_UNUSED = write(fd, buf, len);
	close(fd);
}

/* Python bootstrap (pyhook_from_agent=1). The Python C API is reached with dlsym(RTLD_DEFAULT)
 * (a python3 executable or a libpython loaded RTLD_GLOBAL exports it; no Python headers:
 * PyGILState_STATE is an int enum). It runs on its own short-lived thread, never the agent's:
 * PyGILState_Ensure waits for the GIL as long as an application thread holds it (a long C call
 * that does not release it), and the agent must keep serving its control word meanwhile. */
struct pm_pyboot {
	uint32_t gen;
	int (*ensure)(void);
	void (*release)(int);
	int (*run)(const char *);
	int (*runf)(const char *, void *);
	int (*finalizing)(void);
	char log[PATH_MAX];
	char code[];
};

static void *pm_pyboot_main(void *arg)
{
	struct pm_pyboot *b = arg;
	char app[16] = "";
	int cfd = open("/proc/self/comm", O_RDONLY | O_CLOEXEC); /* the main thread's name */
	if (cfd >= 0) {
		ssize_t n = read(cfd, app, sizeof app - 1);
		close(cfd);
		app[n > 0 ? n : 0] = 0;
		app[strcspn(app, "\n")] = 0;
	}
	prctl(PR_SET_NAME, "pm-pyboot", 0, 0, 0);
	int rc = 0, ran = 0;
	int st = b->ensure();
	/* "pm-pyboot" only while waiting for the GIL: threads the hook starts from here inherit the
	 * name of their creator, and must carry the process's name, not one that looks like ours. */
	if (app[0])
		prctl(PR_SET_NAME, app, 0, 0, 0);
	/* Still the session that asked (not detached meanwhile), and the interpreter not exiting. */
	if (__atomic_load_n(&I.gen, __ATOMIC_ACQUIRE) == b->gen &&
	    __atomic_load_n(&I.state, __ATOMIC_ACQUIRE) == PM_INJ_RUNNING && !(b->finalizing && b->finalizing())) {
		rc = b->run ? b->run(b->code) : b->runf(b->code, NULL);
		ran = 1;
	}
	b->release(st);
	if (!ran)
		log_to_path(b->log, "Python hook bootstrap skipped: the agent detached (or Python finalized) before the GIL came");
	else if (rc != 0)
		log_to_path(b->log, "Python hook bootstrap: PyRun_SimpleString returned %d", rc);
	else if (C.debug)
		log_to_path(b->log, "Python hook bootstrap ran");
	free(b);
	return NULL;
}

static char *hex_append(char *dst, const char *s)
{
	static const char hx[] = "0123456789abcdef";
	for (; *s; s++) {
		*dst++ = hx[(uint8_t)*s >> 4];
		*dst++ = hx[(uint8_t)*s & 15];
	}
	*dst = 0;
	return dst;
}

/* The statement run in __main__ binds no name there: exec of a compiled block in a fresh dict.
 * Paths travel hex-encoded (no quoting problem). Every exception (the hook's too) is caught and
 * written to the log, never printed into the target. */
static const char pm_pyboot_src_fmt[] =
	"import sys\n"
	"d = bytes.fromhex('%s').decode('utf-8', 'surrogateescape')\n"
	"c = bytes.fromhex('%s').decode('utf-8', 'surrogateescape')\n"
	"g = bytes.fromhex('%s').decode('utf-8', 'surrogateescape')\n"
	"try:\n"
	"    if d:\n"
	"        while d in sys.path:\n"
	"            sys.path.remove(d)\n"
	"        sys.path.insert(0, d)\n"
	"    from profilemate_trace import late\n"
	"    late.start(c)\n"
	"except BaseException:\n"
	"    if g:\n"
	"        try:\n"
	"            import os, traceback\n"
	"            with open(g, 'a') as f:\n"
	"                f.write('[profilemate] pid %%d: Python hook late start failed:\\n%%s' %% (os.getpid(), traceback.format_exc()))\n"
	"        except BaseException:\n"
	"            pass\n";

static void pm_python_bootstrap(void)
{
	if (!I.conf.pyhook_from_agent)
		return;
	int (*is_init)(void) = NULL;
	struct pm_pyboot tmp;
	memset(&tmp, 0, sizeof tmp);
	*(void **)(&is_init) = dlsym(RTLD_DEFAULT, "Py_IsInitialized");
	*(void **)(&tmp.ensure) = dlsym(RTLD_DEFAULT, "PyGILState_Ensure");
	*(void **)(&tmp.release) = dlsym(RTLD_DEFAULT, "PyGILState_Release");
	*(void **)(&tmp.run) = dlsym(RTLD_DEFAULT, "PyRun_SimpleString");
	*(void **)(&tmp.runf) = dlsym(RTLD_DEFAULT, "PyRun_SimpleStringFlags");
	*(void **)(&tmp.finalizing) = dlsym(RTLD_DEFAULT, "Py_IsFinalizing"); /* 3.13+ */
	if (!tmp.finalizing)
		*(void **)(&tmp.finalizing) = dlsym(RTLD_DEFAULT, "_Py_IsFinalizing");
	if (!is_init || !tmp.ensure || !tmp.release || (!tmp.run && !tmp.runf)) {
		emit_log(PM_LOG_WARN, "pyhook_from_agent=1 but no CPython C API in this process's global scope "
				      "(Py_IsInitialized not found): the Python hook was not started");
		return;
	}
	if (is_init() != 1 || (tmp.finalizing && tmp.finalizing())) {
		emit_log(PM_LOG_WARN, "pyhook_from_agent=1 but CPython is not running (not initialised or finalizing): "
				      "the Python hook was not started");
		return;
	}
	/* inner source: three hex-encoded paths; outer statement: the inner source hex-encoded */
	size_t plen = strlen(I.conf.pyhook_dir) + strlen(I.conf.path) + strlen(I.conf.log);
	size_t inner_cap = sizeof pm_pyboot_src_fmt + 2 * plen + 16;
	char *hx = malloc(2 * plen + 3);
	char *inner = malloc(inner_cap);
	struct pm_pyboot *b = malloc(sizeof *b + 2 * inner_cap + 256);
	if (!hx || !inner || !b) {
		free(hx), free(inner), free(b);
		emit_log(PM_LOG_ERROR, "Python hook bootstrap: out of memory");
		return;
	}
	char *h1 = hx, *h2 = hex_append(h1, I.conf.pyhook_dir) + 1;
	char *h3 = hex_append(h2, I.conf.path) + 1;
	hex_append(h3, I.conf.log);
	snprintf(inner, inner_cap, pm_pyboot_src_fmt, h1, h2, h3);
	*b = tmp;
	b->gen = __atomic_load_n(&I.gen, __ATOMIC_ACQUIRE);
	snprintf(b->log, sizeof b->log, "%s", I.conf.log);
	char *p = b->code;
	p += sprintf(p, "exec(compile(bytes.fromhex('");
	p = hex_append(p, inner);
	sprintf(p, "').decode('utf-8', 'surrogateescape'), '<profilemate late start>', 'exec'), "
		   "{'__name__': 'profilemate_late_boot'})\n");
	free(hx);
	free(inner);
	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_t t;
	int err = pthread_create(&t, &at, pm_pyboot_main, b);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&at);
	if (err) {
		free(b);
		emit_log(PM_LOG_ERROR, "Python hook bootstrap: cannot start a thread (%s)", strerror(err));
		return;
	}
	emit_log(PM_LOG_INFO, "Python hook bootstrap: profilemate_trace.late.start(%.200s) runs under the GIL on thread pm-pyboot",
		 I.conf.path);
}

/* The injected agent's thread: what InitializeInjection and the agent thread do for a preloaded
 * agent, with CUPTI untouched until the first enable (PROFILEMATE_ARM=none's path), then the
 * loop until detach, then the end of the session. */
static void *pm_inject_main(void *arg)
{
	(void)arg;
	prctl(PR_SET_NAME, "pm-cupti", 0, 0, 0);
	pm_init();
	if (G.have_ring) {
		if (I.conf.bad[0])
			emit_log(PM_LOG_WARN, "inject.conf %.200s: invalid value for%.150s (defaults used)", I.conf.path,
				 I.conf.bad);
		emit_log(PM_LOG_INFO, "started by pm_inject_start (session %d)", I.sessions);
		if (C.start_enable && G.deferred) { /* start=graph|nodes: arm at once */
			pm_load_app_comm();
			cupti_calls_begin();
			arm_and_enable(C.start_detail, 0, PM_REASON_ENV);
			cupti_calls_end();
		}
		pm_python_bootstrap();
		G.thread = pthread_self();
		G.thread_started = 1;
		pm_thread_main(NULL);
	}
	pm_session_end();
	return NULL;
}

static void conf_set(char *dst, size_t cap, const char *v, const char *key, struct pm_inject_conf *ic)
{
	if (strlen(v) >= cap) {
		size_t n = strlen(ic->bad);
		snprintf(ic->bad + n, sizeof ic->bad - n, " %s", key);
		return;
	}
	memcpy(dst, v, strlen(v) + 1);
}

/* inject.conf: "key=value" lines, '#' comments, blanks around key and value ignored, unknown
 * keys ignored, invalid values noted (logged by the agent thread) and replaced by defaults. */
static int parse_conf(const char *path, struct pm_inject_conf *ic)
{
	static char buf[16384]; /* not on the caller's stack (a hijacked thread's stack is not ours) */
	memset(ic, 0, sizeof *ic);
	ic->orphan_s = -1;
	ic->start_detail = PM_DETAIL_GRAPH;
	if (!path || !*path)
		return 0;
	if (strlen(path) >= sizeof ic->path)
		return -ENAMETOOLONG;
	memcpy(ic->path, path, strlen(path) + 1);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	size_t n = 0;
	for (;;) {
		ssize_t r = read(fd, buf + n, sizeof buf - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			close(fd);
			return -e;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n == sizeof buf - 1) {
			close(fd);
			return -EFBIG;
		}
	}
	close(fd);
	buf[n] = 0;
	char *save = NULL;
	for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *eq = strchr(line, '=');
		if (line[strspn(line, " \t\r")] == '#' || !eq)
			continue;
		*eq = 0;
		char *k = line, *v = eq + 1;
		while (*k == ' ' || *k == '\t')
			k++;
		for (char *e = eq - 1; e >= k && (*e == ' ' || *e == '\t'); e--)
			*e = 0;
		while (*v == ' ' || *v == '\t')
			v++;
		for (char *e = v + strlen(v) - 1; e >= v && (*e == ' ' || *e == '\t' || *e == '\r'); e--)
			*e = 0;
		char *end = NULL;
		int bad = 0;
		if (!strcmp(k, "pyhook_dir"))
			conf_set(ic->pyhook_dir, sizeof ic->pyhook_dir, v, k, ic);
		else if (!strcmp(k, "log"))
			conf_set(ic->log, sizeof ic->log, v, k, ic);
		else if (!strcmp(k, "cupti_path"))
			conf_set(ic->cupti_path, sizeof ic->cupti_path, v, k, ic);
		else if (!strcmp(k, "pyhook_from_agent") || !strcmp(k, "debug")) {
			int b = !strcmp(v, "1") || !strcasecmp(v, "true") ? 1 : !strcmp(v, "0") || !strcasecmp(v, "false") ? 0 : -1;
			if (b < 0)
				bad = 1;
			else if (k[0] == 'p')
				ic->pyhook_from_agent = b;
			else
				ic->debug = b;
		} else if (!strcmp(k, "start")) {
			if (!strcmp(v, "graph"))
				ic->start_enable = 1, ic->start_detail = PM_DETAIL_GRAPH;
			else if (!strcmp(v, "nodes"))
				ic->start_enable = 1, ic->start_detail = PM_DETAIL_NODES;
			else if (strcmp(v, "none") && strcmp(v, "off") && strcmp(v, "dormant"))
				bad = 1;
		} else if (!strcmp(k, "orphan_timeout_s")) {
			double d = strtod(v, &end);
			if (!*v || *end || !(d >= 0 && d <= 86400))
				bad = 1;
			else
				ic->orphan_s = d;
		} else if (!strcmp(k, "kinds")) {
			unsigned long x = strtoul(v, &end, 0);
			if (!*v || *end || !x || x > 0x2ff)
				bad = 1;
			else
				ic->kinds = (uint32_t)x;
		} else if (!strcmp(k, "flush_ms") || !strcmp(k, "ring_kb")) {
			unsigned long x = strtoul(v, &end, 10);
			int fl = k[0] == 'f';
			if (!*v || *end || (fl ? (x < 10 || x > 5000) : (x < 4 || x > (1ul << 22))))
				bad = 1;
			else if (fl)
				ic->flush_ms = (uint32_t)x;
			else
				ic->ring_kb = (uint32_t)x;
		}
		if (bad) {
			size_t m = strlen(ic->bad);
			snprintf(ic->bad + m, sizeof ic->bad - m, " %s", k);
		}
	}
	return 0;
}

/* 1 when this process already has a CUPTI agent ring (a preloaded agent, or an injected one
 * from another copy of this library, e.g. an earlier staging directory). */
static int pm_ring_present(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return 0;
	int found = 0;
	char tgt[128];
	for (struct dirent *e; !found && (e = readdir(d));) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		ssize_t n = readlinkat(dirfd(d), e->d_name, tgt, sizeof tgt - 1);
		if (n <= 0)
			continue;
		tgt[n] = 0;
		found = !strncmp(tgt, "/memfd:profilemate-cupti", 24);
	}
	closedir(d);
	return found;
}

/* Late start in a running process (docs/injection.md §2, §3). Called by a thread the tracer
 * borrowed with ptrace, or by Python's ctypes: it returns at once. No CUDA, CUPTI or Python
 * call and no wait here; it reads the configuration and starts the agent's own thread.
 * Returns 0 started, 1 already running in this process (an injected session of this copy,
 * an agent started by cuInit, or another copy's ring), a negative errno on error. */
PM_EXPORT int pm_inject_start(const char *conf_path)
{
	if (G.poisoned)
		return -EPERM; /* a child forked after the agent started: nothing may run here */
	int st = PM_INJ_IDLE;
	if (!__atomic_compare_exchange_n(&I.state, &st, PM_INJ_RUNNING, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return 1;
	if (pm_ring_present()) {
		__atomic_store_n(&I.state, PM_INJ_IDLE, __ATOMIC_RELEASE);
		return 1;
	}
	int err = parse_conf(conf_path, &I.conf);
	if (err < 0) {
		__atomic_store_n(&I.state, PM_INJ_IDLE, __ATOMIC_RELEASE);
		return err;
	}
	int fd = -1;
	if (I.conf.log[0])
		fd = open(I.conf.log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
	__atomic_store_n(&I.log_fd, fd, __ATOMIC_RELAXED);
	I.start_ns = pm_now_ns();
	I.sessions++;
	__atomic_add_fetch(&I.gen, 1, __ATOMIC_ACQ_REL);
	pm_injected = 1;
	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED); /* nobody joins it: it ends the session itself */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_t t;
	err = pthread_create(&t, &at, pm_inject_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&at);
	if (err) {
		pm_injected = 0;
		__atomic_store_n(&I.log_fd, -1, __ATOMIC_RELAXED);
		if (fd >= 0)
			close(fd);
		__atomic_store_n(&I.state, PM_INJ_IDLE, __ATOMIC_RELEASE);
		return -err;
	}
	return 0;
}

/* NVTX injection (NVTX_INJECTION64_PATH points here). Opt-in with
 * PROFILEMATE_NVTX=1: forwards to the libcupti the process already mapped so
 * one CUPTI instance sees the markers (cupti-notes §9). Otherwise declines,
 * which leaves NVTX a no-op. */
PM_EXPORT int InitializeInjectionNvtx2(void *getExportTable)
{
	const char *v = getenv("PROFILEMATE_NVTX");
	if (!v || strcmp(v, "1"))
		return 0;
	struct find_ctx f = {{0}};
	if (!dl_iterate_phdr(find_cupti_cb, &f) || !f.path[0])
		return 0;
	void *h = dlopen(f.path, RTLD_NOW | RTLD_NOLOAD);
	if (!h)
		return 0;
	int r = 0;
	pm_CUptiResult (*gv)(uint32_t *) = NULL;
	int (*fwd)(void *) = NULL;
	*(void **)(&gv) = dlsym(h, "cuptiGetVersion");
	*(void **)(&fwd) = dlsym(h, "InitializeInjectionNvtx2");
	uint32_t ver = 0;
	if (gv && fwd && gv(&ver) == PM_CUPTI_SUCCESS && ver != 130000) /* NVIDIA/NVTX#125 on 13.0 GA */
		r = fwd(getExportTable);
	dlclose(h);
	return r;
}

/* Hijack detection (cupti-notes §4.4). Subscription is only an advisory lock: a client
 * that ignores a failed cuptiSubscribe (Kineto with KINETO_USE_DAEMON=1) can still
 * register its own buffer callbacks, and then both sides lose data. When the agent is
 * LD_PRELOADed, this export interposes such a call (the global scope is searched before
 * a framework's local libcupti). It always forwards to the real function; if the agent
 * holds CUPTI at that moment, the agent goes passive and says so. The agent's own
 * registrations go straight to libcupti and never pass here. */
PM_EXPORT pm_CUptiResult cuptiActivityRegisterCallbacks(pm_buf_request_fn req, pm_buf_complete_fn comp)
{
	pm_CUptiResult (*real)(pm_buf_request_fn, pm_buf_complete_fn) = NULL;
	void *h = G.lib;
	int close_h = 0;
	if (!h) {
		struct find_ctx f = {{0}};
		if (dl_iterate_phdr(find_cupti_cb, &f) && f.path[0]) {
			h = dlopen(f.path, RTLD_NOW | RTLD_NOLOAD);
			close_h = h != NULL;
		}
	}
	if (h)
		*(void **)(&real) = dlsym(h, "cuptiActivityRegisterCallbacks");
	if (!real || (void *)real == (void *)&cuptiActivityRegisterCallbacks) {
		if (close_h)
			dlclose(h);
		return PM_CUPTI_ERROR_NOT_INITIALIZED;
	}
	if (!G.poisoned && G.pid == getpid() && __atomic_load_n(&G.running, __ATOMIC_ACQUIRE) &&
	    req != pm_buffer_requested) {
		__atomic_store_n(&G.hijacked, 1, __ATOMIC_RELEASE);
		pm_dbg("another CUPTI client registers activity callbacks while we hold CUPTI");
	}
	pm_CUptiResult st = real(req, comp);
	if (close_h)
		dlclose(h);
	return st;
}

/* 1 when path is named in one of the preload lists (LD_PRELOAD, /etc/ld.so.preload): as
 * written, as a bare file name (searched by ld.so), or resolving to the same file. */
static int pm_listed_in(const char *list, const char *path, const char *real)
{
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	char tok[PATH_MAX], rp[PATH_MAX];
	for (const char *p = list; p && *p;) {
		size_t n = strcspn(p, " :\t\n");
		if (n && n < sizeof tok) {
			memcpy(tok, p, n);
			tok[n] = 0;
			if (!strcmp(tok, path) || (!strchr(tok, '/') && !strcmp(tok, base)) ||
			    (real && strchr(tok, '/') && realpath(tok, rp) && !strcmp(rp, real)))
				return 1;
		}
		p += n;
		p += strspn(p, " :\t\n");
	}
	return 0;
}

static int pm_is_preloaded(const char *path)
{
	char real[PATH_MAX];
	const char *r = realpath(path, real) ? real : NULL;
	if (pm_listed_in(getenv("LD_PRELOAD"), path, r))
		return 1;
	int fd = open("/etc/ld.so.preload", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	char buf[4096];
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	return pm_listed_in(buf, path, r);
}

/* LD_PRELOAD constructor: only arm the injection variables; no CUDA, no thread.
 * It arms only when this library is actually preloaded. Loaded late instead (dlopen by the
 * attach loader or ctypes, pm_inject_start), the process's CUDA is usually initialised already:
 * setting CUDA_INJECTION64_PATH then would arm only its *children*, with a copy of the agent in
 * a staging directory that is removed at detach. So a late load changes no environment. */
__attribute__((constructor)) static void pm_preload_ctor(void)
{
	/* Resolved here, never on the exit path (no dlsym in a vfork child or a signal handler). */
	*(void **)(&pm_real_exit) = dlsym(RTLD_NEXT, "_exit");
	*(void **)(&pm_real_Exit) = dlsym(RTLD_NEXT, "_Exit");
	if (pm_real_exit == _exit)
		pm_real_exit = NULL;
	if (pm_real_Exit == _Exit)
		pm_real_Exit = NULL;
	if (getenv("CUDA_INJECTION64_PATH"))
		return; /* another tool, or libcuda loading us by that variable: touch nothing */
	Dl_info di;
	if (!dladdr((void *)&pm_preload_ctor, &di) || !di.dli_fname || !di.dli_fname[0])
		return;
	char abs[PATH_MAX];
	const char *path = di.dli_fname;
	if (path[0] != '/') {
		if (!realpath(path, abs))
			return;
		path = abs;
	}
	if (!pm_is_preloaded(path))
		return;
	setenv("CUDA_INJECTION64_PATH", path, 0);
	setenv("NVTX_INJECTION64_PATH", path, 0);
}
