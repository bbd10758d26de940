/* inject_prog.c — a running "CUDA application" the agent is injected into late (tests).
 *
 * Usage: inject_prog <libprofilemate.so>
 * It maps libcupti.so.13 (the mock, as torch maps its CUPTI), initialises the fake libcuda,
 * instantiates a graph and starts a launcher thread (kernels, a graph replay and a copy every
 * few hundred µs) — all without the agent. Then it prints "PID n" and "READY" and obeys stdin:
 *   inject <conf>   dlopen(agent, RTLD_NOW) (the first time) and pm_inject_start(conf): "INJECT rc"
 *   env             "ENV <CUDA_INJECTION64_PATH or ->"
 *   launches        "LAUNCHES n" (kernel launches so far)
 *   quit            exit(0)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int CUresult;
typedef void *CUfunction, *CUstream, *CUgraph, *CUgraphExec, *CUgraphNode, *CUmodule;
typedef uint64_t CUdeviceptr;
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
static CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
				  CUstream, void **, void **);
static CUresult (*cuGraphCreate)(CUgraph *, unsigned);
static CUresult (*cuGraphAddKernelNode)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t,
					const CUDA_KERNEL_NODE_PARAMS *);
static CUresult (*cuGraphInstantiateWithFlags)(CUgraphExec *, CUgraph, unsigned long long);
static CUresult (*cuGraphLaunch)(CUgraphExec, CUstream);
static CUresult (*cuMemAlloc_v2)(CUdeviceptr *, size_t);
static CUresult (*cuMemcpyHtoDAsync_v2)(CUdeviceptr, const void *, size_t, CUstream);

#define CHECK(x)                                                                                                     \
	do {                                                                                                         \
		CUresult r_ = (x);                                                                                   \
		if (r_) {                                                                                            \
			fprintf(stderr, "%s:%d: %s = %d\n", __FILE__, __LINE__, #x, r_);                             \
			exit(10);                                                                                    \
		}                                                                                                    \
	} while (0)

static CUfunction f_aten, f_triton;
static CUstream s1;
static CUgraphExec gexec;
static CUdeviceptr dbuf;
static uint64_t launches;
static char hbuf[4096];

static void *launcher(void *arg)
{
	(void)arg;
	for (uint64_t i = 0;; i++) {
		CHECK(cuLaunchKernel(i % 4 == 3 ? f_triton : f_aten, 64, 1, 1, 128, 1, 1, 0, s1, NULL, NULL));
		__atomic_add_fetch(&launches, 1, __ATOMIC_RELAXED);
		if (i % 16 == 0)
			CHECK(cuGraphLaunch(gexec, s1));
		if (i % 8 == 0)
			CHECK(cuMemcpyHtoDAsync_v2(dbuf, hbuf, sizeof hbuf, s1));
		usleep(300);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: inject_prog <libprofilemate.so>\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!dlopen("libcupti.so.13", RTLD_NOW | RTLD_LOCAL)) { /* torch maps its CUPTI like this */
		fprintf(stderr, "dlopen libcupti.so.13: %s\n", dlerror());
		return 9;
	}
	void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		fprintf(stderr, "dlopen libcuda.so.1: %s\n", dlerror());
		return 9;
	}
#define L(n) *(void **)(&n) = dlsym(h, #n)
	L(cuInit); L(cuModuleLoadData); L(cuModuleGetFunction); L(cuStreamCreate); L(cuLaunchKernel);
	L(cuGraphCreate); L(cuGraphAddKernelNode); L(cuGraphInstantiateWithFlags); L(cuGraphLaunch);
	L(cuMemAlloc_v2); L(cuMemcpyHtoDAsync_v2);
#undef L
	CHECK(cuInit(0));
	CUmodule m;
	CHECK(cuModuleLoadData(&m, "fatbin"));
	CHECK(cuModuleGetFunction(&f_aten, m, "late_kernel_aten"));
	CHECK(cuModuleGetFunction(&f_triton, m, "triton_late_0"));
	CHECK(cuStreamCreate(&s1, 0));
	CHECK(cuMemAlloc_v2(&dbuf, 1 << 20));
	CUgraph g;
	CHECK(cuGraphCreate(&g, 0));
	for (int i = 0; i < 3; i++) {
		CUDA_KERNEL_NODE_PARAMS p = {i == 1 ? f_triton : f_aten, 128, 1, 1, 256, 1, 1, 0, NULL, NULL};
		CUgraphNode node;
		CHECK(cuGraphAddKernelNode(&node, g, NULL, 0, &p));
	}
	CHECK(cuGraphInstantiateWithFlags(&gexec, g, 0)); /* before the agent exists: GRAPH_TRACE must stay off */
	pthread_t t;
	pthread_create(&t, NULL, launcher, NULL);
	printf("PID %d\n", (int)getpid());
	printf("READY\n");
	void *agent = NULL;
	int (*inject)(const char *) = NULL;
	char line[4096];
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\n")] = 0;
		if (!strncmp(line, "inject ", 7)) {
			if (!agent) {
				agent = dlopen(argv[1], RTLD_NOW);
				if (!agent) {
					printf("INJECT dlopen %s\n", dlerror());
					continue;
				}
				*(void **)(&inject) = dlsym(agent, "pm_inject_start");
			}
			printf("INJECT %d\n", inject ? inject(line + 7) : -999);
		} else if (!strcmp(line, "env")) {
			const char *v = getenv("CUDA_INJECTION64_PATH");
			printf("ENV %s\n", v ? v : "-");
		} else if (!strcmp(line, "launches")) {
			printf("LAUNCHES %llu\n", (unsigned long long)__atomic_load_n(&launches, __ATOMIC_RELAXED));
		} else if (!strcmp(line, "quit")) {
			exit(0);
		}
	}
	return 0;
}
