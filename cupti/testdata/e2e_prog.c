/* e2e_prog.c — a small "CUDA application" for the agent's end-to-end tests.
 * It dlopens libcuda.so.1 (the fake one, through LD_LIBRARY_PATH) like torch
 * does and runs one scenario (argv[1]). It prints "KEY value" lines on stdout
 * and, where the test must inspect it alive, "READY" and then waits for a line
 * "quit" on stdin.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef int CUresult;
typedef void *CUfunction, *CUstream, *CUgraph, *CUgraphExec, *CUgraphNode, *CUmodule, *CUevent;
typedef uint64_t CUdeviceptr;
typedef struct {
	unsigned gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes;
	CUstream hStream;
	void *attrs;
	unsigned numAttrs;
} CUlaunchConfig;
typedef struct {
	CUfunction func;
	unsigned gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes;
	void **kernelParams;
	void **extra;
} CUDA_KERNEL_NODE_PARAMS;

static CUresult (*cuInit)(unsigned);
static CUresult (*cuModuleLoadData)(CUmodule *, const void *);
static CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
static CUresult (*cuStreamCreate)(CUstream *, unsigned);
static CUresult (*cuEventCreate)(CUevent *, unsigned);
static CUresult (*cuEventRecord)(CUevent, CUstream);
static CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
				  CUstream, void **, void **);
static CUresult (*cuLaunchKernel_ptsz)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
				       unsigned, CUstream, void **, void **);
static CUresult (*cuLaunchKernelEx)(const CUlaunchConfig *, CUfunction, void **, void **);
static CUresult (*cuLaunchCooperativeKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
					     unsigned, CUstream, void **);
static CUresult (*cuGraphCreate)(CUgraph *, unsigned);
static CUresult (*cuGraphAddKernelNode)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t,
					const CUDA_KERNEL_NODE_PARAMS *);
static CUresult (*cuGraphInstantiateWithFlags)(CUgraphExec *, CUgraph, unsigned long long);
static CUresult (*cuGraphLaunch)(CUgraphExec, CUstream);
static CUresult (*cuMemAlloc_v2)(CUdeviceptr *, size_t);
static CUresult (*cuMemcpyHtoDAsync_v2)(CUdeviceptr, const void *, size_t, CUstream);
static CUresult (*cuMemcpyDtoHAsync_v2)(void *, CUdeviceptr, size_t, CUstream);
static CUresult (*cuMemcpyAsync)(CUdeviceptr, CUdeviceptr, size_t, CUstream);
static CUresult (*cuMemsetD8Async)(CUdeviceptr, unsigned char, size_t, CUstream);
static CUresult (*cuMemsetD32Async)(CUdeviceptr, unsigned, size_t, CUstream);
static CUresult (*cuStreamSynchronize)(CUstream);
static CUresult (*cuEventSynchronize)(CUevent);
static CUresult (*cuCtxSynchronize)(void);

#define ATEN_NAME                                                                                                    \
	"_ZN2at6native29vectorized_elementwise_kernelILi4EZZZNS0_15sin_kernel_cudaERNS_18TensorIteratorBaseEENKUlvE_"  \
	"clEvENKUlvE0_clEvEUlfE_NS_6detail5ArrayIPcLi2EEEEEviT0_T1_"
#define NVJET_NAME "nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT"
#define TRITON_NAME "triton_poi_fused_add_0"

static CUfunction f_aten, f_nvjet, f_triton;
static CUstream s1;
static CUdeviceptr dbuf;
static char hbuf[1 << 16];

#define CHECK(x)                                                                                                     \
	do {                                                                                                         \
		CUresult r_ = (x);                                                                                   \
		if (r_) {                                                                                            \
			fprintf(stderr, "%s:%d: %s = %d\n", __FILE__, __LINE__, #x, r_);                             \
			exit(10);                                                                                    \
		}                                                                                                    \
	} while (0)

static void load(void)
{
	void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		fprintf(stderr, "dlopen libcuda.so.1: %s\n", dlerror());
		exit(9);
	}
#define L(n) *(void **)(&n) = dlsym(h, #n)
	L(cuInit); L(cuModuleLoadData); L(cuModuleGetFunction); L(cuStreamCreate); L(cuEventCreate);
	L(cuEventRecord); L(cuLaunchKernel); L(cuLaunchKernel_ptsz); L(cuLaunchKernelEx);
	L(cuLaunchCooperativeKernel); L(cuGraphCreate); L(cuGraphAddKernelNode); L(cuGraphInstantiateWithFlags);
	L(cuGraphLaunch); L(cuMemAlloc_v2); L(cuMemcpyHtoDAsync_v2); L(cuMemcpyDtoHAsync_v2); L(cuMemcpyAsync);
	L(cuMemsetD8Async); L(cuMemsetD32Async); L(cuStreamSynchronize); L(cuEventSynchronize);
	L(cuCtxSynchronize);
#undef L
}

static void setup(void)
{
	CHECK(cuInit(0));
	CUmodule m;
	CHECK(cuModuleLoadData(&m, "fatbin"));
	CHECK(cuModuleGetFunction(&f_aten, m, ATEN_NAME));
	CHECK(cuModuleGetFunction(&f_nvjet, m, NVJET_NAME));
	CHECK(cuModuleGetFunction(&f_triton, m, TRITON_NAME));
	CHECK(cuStreamCreate(&s1, 0));
	CHECK(cuMemAlloc_v2(&dbuf, 1 << 20));
}

static CUgraphExec make_graph(void)
{
	CUgraph g;
	CHECK(cuGraphCreate(&g, 0));
	CUfunction fs[3] = {f_aten, f_nvjet, f_triton};
	for (int i = 0; i < 3; i++) {
		CUDA_KERNEL_NODE_PARAMS p = {fs[i], 128, 1, 1, 256, 1, 1, 0, NULL, NULL};
		CUgraphNode n;
		CHECK(cuGraphAddKernelNode(&n, g, NULL, 0, &p));
	}
	CUgraphExec e;
	CHECK(cuGraphInstantiateWithFlags(&e, g, 0));
	return e;
}

static long gettid_(void) { return (long)syscall(SYS_gettid); }

static void *worker(void *arg)
{
	long *tid = arg;
	*tid = gettid_();
	for (int i = 0; i < 7; i++)
		CHECK(cuLaunchKernel(f_aten, 64, 1, 1, 128, 1, 1, 0, s1, NULL, NULL));
	return NULL;
}

/* The basic workload. Graph level: 27 kernels, 4 graph launches, 6 copies, 2 memsets, 4 syncs, 43 API calls. */
static void basic_workload(void)
{
	for (int i = 0; i < 10; i++)
		CHECK(cuLaunchKernel(f_aten, 1024, 1, 1, 256, 1, 1, 0, NULL, NULL, NULL));
	CUlaunchConfig cfg = {132, 2, 1, 384, 1, 1, 49152, s1, NULL, 0};
	for (int i = 0; i < 5; i++)
		CHECK(cuLaunchKernelEx(&cfg, f_nvjet, NULL, NULL));
	for (int i = 0; i < 3; i++)
		CHECK(cuLaunchKernel_ptsz(f_triton, 8, 4, 2, 32, 4, 1, 1024, NULL, NULL, NULL));
	for (int i = 0; i < 2; i++)
		CHECK(cuLaunchCooperativeKernel(f_triton, 16, 1, 1, 64, 1, 1, 0, s1, NULL));
	pthread_t t;
	long wtid = 0;
	pthread_create(&t, NULL, worker, &wtid);
	pthread_join(t, NULL);
	CUgraphExec g = make_graph();
	for (int i = 0; i < 4; i++)
		CHECK(cuGraphLaunch(g, s1));
	CHECK(cuMemcpyHtoDAsync_v2(dbuf, hbuf, 4096, s1));
	CHECK(cuMemcpyHtoDAsync_v2(dbuf, hbuf, 4096, s1));
	for (int i = 0; i < 3; i++)
		CHECK(cuMemcpyDtoHAsync_v2(hbuf, dbuf, 1024, s1));
	CHECK(cuMemcpyAsync(dbuf + 4096, dbuf, 512, s1));
	CHECK(cuMemsetD8Async(dbuf, 0, 100, s1));
	CHECK(cuMemsetD32Async(dbuf, 7, 25, s1));
	CUevent ev;
	CHECK(cuEventCreate(&ev, 0));
	CHECK(cuEventRecord(ev, s1));
	CHECK(cuStreamSynchronize(s1));
	CHECK(cuStreamSynchronize(NULL));
	CHECK(cuEventSynchronize(ev));
	CHECK(cuCtxSynchronize());
	printf("TIDS main=%ld worker=%ld\n", gettid_(), wtid);
	fflush(stdout);
}

static void wait_quit(void)
{
	printf("READY\n");
	fflush(stdout);
	char line[64];
	while (fgets(line, sizeof line, stdin))
		if (!strncmp(line, "quit", 4))
			return;
}

static int stdin_says(const char *what, int timeout_ms)
{
	struct pollfd p = {.fd = 0, .events = POLLIN};
	if (poll(&p, 1, timeout_ms) <= 0)
		return 0;
	char line[64];
	if (!fgets(line, sizeof line, stdin))
		return 1; /* EOF: stop */
	return !strncmp(line, what, strlen(what));
}

static void small_workload(int n)
{
	for (int i = 0; i < n; i++)
		CHECK(cuLaunchKernel(f_aten, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL));
}

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static uint8_t hj_buf[1 << 16] __attribute__((aligned(8)));
static void hj_req(uint8_t **b, size_t *sz, size_t *max)
{
	*b = hj_buf;
	*sz = sizeof hj_buf;
	*max = 0;
}
static void hj_comp(void *ctx, uint32_t stream, uint8_t *b, size_t sz, size_t valid)
{
	(void)ctx, (void)stream, (void)b, (void)sz, (void)valid;
}

static volatile sig_atomic_t got_term;
static void on_term(int s)
{
	(void)s;
	got_term = 1;
}

int main(int argc, char **argv)
{
	const char *sc = argc > 1 ? argv[1] : "basic";
	setvbuf(stdout, NULL, _IOLBF, 0);
	load();
	printf("PID %d\n", (int)getpid());
	if (!strcmp(sc, "basic")) {
		setup();
		basic_workload();
		wait_quit();
		return 0;
	}
	if (!strcmp(sc, "loop")) { /* aten kernel + graph replay + D2H copy every 10 ms until "quit" */
		setup();
		CUgraphExec g = make_graph();
		printf("READY\n");
		unsigned long iters = 0;
		for (;;) {
			CHECK(cuLaunchKernel(f_aten, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL));
			CHECK(cuGraphLaunch(g, s1));
			CHECK(cuMemcpyDtoHAsync_v2(hbuf, dbuf, 64, s1));
			iters++;
			if (stdin_says("quit", 10))
				break;
		}
		printf("ITERS %lu\n", iters);
		return 0;
	}
	if (!strcmp(sc, "forkbefore")) { /* child forked before any cuInit gets its own injection */
		pid_t c = fork();
		if (c == 0) {
			setup();
			small_workload(5);
			usleep(1500 * 1000);
			exit(0);
		}
		printf("CHILD %d\n", (int)c);
		setup();
		small_workload(3);
		int st;
		waitpid(c, &st, 0);
		printf("CHILD_STATUS %d\n", st);
		wait_quit();
		return 0;
	}
	if (!strcmp(sc, "forkafter")) { /* child forked after cuInit: CUDA unusable there, agent inert */
		setup();
		small_workload(4);
		uint64_t t0 = now_ns();
		pid_t c = fork();
		if (c == 0) {
			CUresult r1 = cuInit(0);
			CUresult r2 = cuLaunchKernel(f_aten, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL);
			printf("CHILD_CUINIT %d LAUNCH %d\n", r1, r2);
			fflush(stdout);
			exit(0); /* runs the inherited atexit handlers */
		}
		int st;
		waitpid(c, &st, 0);
		printf("CHILD_STATUS %d CHILD_MS %llu\n", st, (unsigned long long)((now_ns() - t0) / 1000000));
		small_workload(2);
		wait_quit();
		return 0;
	}
	if (!strcmp(sc, "oexit")) { /* child leaves through _exit, as multiprocessing children do */
		uint64_t t0 = now_ns();
		pid_t c = fork();
		if (c == 0) {
			setup();
			small_workload(5);
			usleep(600 * 1000); /* several flush periods */
			small_workload(3);
			_exit(0);
		}
		printf("CHILD %d\n", (int)c);
		int st;
		waitpid(c, &st, 0);
		printf("CHILD_STATUS %d CHILD_MS %llu\n", st, (unsigned long long)((now_ns() - t0) / 1000000));
		wait_quit();
		return 0;
	}
	if (!strcmp(sc, "sigterm") || !strcmp(sc, "sigterm-handler")) {
		if (!strcmp(sc, "sigterm-handler"))
			signal(SIGTERM, on_term);
		setup();
		printf("READY\n");
		while (!got_term) {
			small_workload(10);
			usleep(1000);
		}
		exit(0);
	}
	if (!strcmp(sc, "busy")) { /* another CUPTI client subscribed before cuInit, as Kineto would */
		void *cu = dlopen("libcupti.so.13", RTLD_NOW | RTLD_GLOBAL);
		if (!cu) {
			fprintf(stderr, "dlopen libcupti.so.13: %s\n", dlerror());
			return 9;
		}
		struct {
			size_t structSize;
			const char *subscriberName;
			char *old;
			size_t oldSize;
		} p = {sizeof p, "kineto-test", NULL, 0};
		int (*sub)(void **, void *, void *, void *) = NULL;
		*(void **)(&sub) = dlsym(cu, "cuptiSubscribe_v2");
		void *h;
		printf("SUBSCRIBE %d\n", sub(&h, NULL, NULL, &p));
		setup();
		basic_workload();
		wait_quit();
		return 0;
	}
	if (!strcmp(sc, "hijack")) { /* a client that ignores subscribe failure registers its callbacks */
		setup();
		small_workload(4);
		usleep(400 * 1000);
		int (*reg)(void (*)(uint8_t **, size_t *, size_t *), void (*)(void *, uint32_t, uint8_t *, size_t, size_t)) =
			NULL;
		*(void **)(&reg) = dlsym(RTLD_DEFAULT, "cuptiActivityRegisterCallbacks");
		printf("REGISTER %d\n", reg ? reg(hj_req, hj_comp) : -1);
		small_workload(6);
		wait_quit();
		return 0;
	}
	if (!strcmp(sc, "manynames")) { /* n distinct kernel names, each launched twice through two lookups */
		int n = argc > 2 ? atoi(argv[2]) : 3000;
		setup();
		CUmodule m;
		CHECK(cuModuleLoadData(&m, "fatbin"));
		char name[128];
		for (int i = 0; i < n; i++) {
			snprintf(name, sizeof name, "_Z%dkernel_number_%dPf", 15 + (i >= 10) + (i >= 100) + (i >= 1000) + (i >= 10000), i);
			for (int j = 0; j < 2; j++) {
				CUfunction f;
				CHECK(cuModuleGetFunction(&f, m, name));
				CHECK(cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL));
			}
		}
		wait_quit();
		return 0;
	}
	if (!strcmp(sc, "flood")) { /* n launches as fast as possible */
		int n = argc > 2 ? atoi(argv[2]) : 100000;
		setup();
		uint64_t t0 = now_ns();
		small_workload(n);
		printf("ELAPSED_NS %llu\n", (unsigned long long)(now_ns() - t0));
		wait_quit();
		return 0;
	}
	fprintf(stderr, "unknown scenario %s\n", sc);
	return 2;
}
