"""ctypes "CUDA application" for the agent's end-to-end tests.

Loads libcuda.so.1 (the fake one via LD_LIBRARY_PATH) like torch does, launches
kernels, replays a graph, copies, and runs a multiprocessing *spawn* child that
does its own CUDA work. Prints PID, CHILD, TID, READY; exits on "quit" on stdin.
"""
import ctypes
import multiprocessing as mp
import os
import sys
import threading

ATEN = b"_ZN2at6native29vectorized_elementwise_kernelILi4EZZZNS0_15sin_kernel_cudaERNS_18TensorIteratorBaseEENKUlvE_clEvENKUlvE0_clEvEUlfE_NS_6detail5ArrayIPcLi2EEEEEviT0_T1_"
NVJET = b"nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT"
TRITON = b"triton_poi_fused_add_0"


class NodeParams(ctypes.Structure):
    _fields_ = [("func", ctypes.c_void_p)] + [(n, ctypes.c_uint) for n in (
        "gx", "gy", "gz", "bx", "by", "bz", "shmem")] + [("params", ctypes.c_void_p), ("extra", ctypes.c_void_p)]


def check(r, what):
    if r != 0:
        raise SystemExit(f"{what} = {r}")


class Cuda:
    def __init__(self):
        self.lib = ctypes.CDLL("libcuda.so.1")
        check(self.lib.cuInit(0), "cuInit")
        mod = ctypes.c_void_p()
        check(self.lib.cuModuleLoadData(ctypes.byref(mod), b"fatbin"), "cuModuleLoadData")
        self.f = {}
        for n in (ATEN, NVJET, TRITON):
            fn = ctypes.c_void_p()
            check(self.lib.cuModuleGetFunction(ctypes.byref(fn), mod, n), "cuModuleGetFunction")
            self.f[n] = fn
        self.stream = ctypes.c_void_p()
        check(self.lib.cuStreamCreate(ctypes.byref(self.stream), 0), "cuStreamCreate")
        self.dptr = ctypes.c_uint64()
        check(self.lib.cuMemAlloc_v2(ctypes.byref(self.dptr), 1 << 20), "cuMemAlloc")

    def launch(self, name, n):
        u = ctypes.c_uint
        for _ in range(n):
            check(self.lib.cuLaunchKernel(self.f[name], u(64), u(1), u(1), u(128), u(1), u(1), u(0),
                                          self.stream, None, None), "cuLaunchKernel")

    def graph(self):
        g = ctypes.c_void_p()
        check(self.lib.cuGraphCreate(ctypes.byref(g), 0), "cuGraphCreate")
        for n in (ATEN, NVJET, TRITON):
            p = NodeParams(self.f[n].value, 128, 1, 1, 256, 1, 1, 0, None, None)
            node = ctypes.c_void_p()
            check(self.lib.cuGraphAddKernelNode(ctypes.byref(node), g, None, ctypes.c_size_t(0), ctypes.byref(p)),
                  "cuGraphAddKernelNode")
        e = ctypes.c_void_p()
        check(self.lib.cuGraphInstantiateWithFlags(ctypes.byref(e), g, ctypes.c_ulonglong(0)), "instantiate")
        return e

    def replay(self, e, n):
        for _ in range(n):
            check(self.lib.cuGraphLaunch(e, self.stream), "cuGraphLaunch")


def child():
    cu = Cuda()
    cu.launch(ATEN, 4)
    cu.replay(cu.graph(), 1)
    check(cu.lib.cuStreamSynchronize(cu.stream), "sync")


def fork_child():
    child()  # then multiprocessing leaves through os._exit at once, within one flush period


def main():
    print("PID", os.getpid(), flush=True)
    # fork before this process touches CUDA (vLLM's default), then a spawn child
    fc = mp.get_context("fork").Process(target=fork_child)
    fc.start()
    fc.join()
    print("FORKCHILD", fc.pid, fc.exitcode, flush=True)
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=child)
    p.start()
    p.join()
    print("CHILD", p.pid, p.exitcode, flush=True)
    cu = Cuda()
    cu.launch(ATEN, 10)
    cu.launch(NVJET, 2)
    cu.replay(cu.graph(), 2)
    buf = ctypes.create_string_buffer(8192)
    check(cu.lib.cuMemcpyHtoDAsync_v2(cu.dptr, buf, ctypes.c_size_t(8192), cu.stream), "h2d")
    check(cu.lib.cuMemcpyDtoHAsync_v2(buf, cu.dptr, ctypes.c_size_t(256), cu.stream), "d2h")
    check(cu.lib.cuStreamSynchronize(cu.stream), "sync")
    print("TID", threading.get_native_id(), flush=True)
    print("READY", flush=True)
    for line in sys.stdin:
        if line.startswith("quit"):
            break


if __name__ == "__main__":
    main()
