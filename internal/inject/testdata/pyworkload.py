"""A CUDA "server" for the injection tests: started with nothing preloaded, it loads libcuda.so.1
(the fake one through LD_LIBRARY_PATH) like torch does and runs steps until told to quit. Each
step launches 3 ATen sin kernels and 1 nvjet GEMM, synchronises, and sleeps 10 ms (so its
threads are parked most of the time, as a serving process between requests).

Prints "READY <pid>"; stdin: "ping" prints "pong <steps>", "quit" exits 0.
"""
import ctypes
import os
import sys
import threading
import time

ATEN = b"_ZN2at6native29vectorized_elementwise_kernelILi4EZZZNS0_15sin_kernel_cudaERNS_18TensorIteratorBaseEENKUlvE_clEvENKUlvE0_clEvEUlfE_NS_6detail5ArrayIPcLi2EEEEEviT0_T1_"
NVJET = b"nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT"


def check(r, what):
    if r != 0:
        raise SystemExit("%s = %d" % (what, r))


# torch loads libcupti with libtorch_cuda (Kineto links it), before any CUDA call: so does this
# (the mock, through LD_LIBRARY_PATH). The fake libcuda looks for a libcupti once per process.
ctypes.CDLL("libcupti.so.13")
cu = ctypes.CDLL("libcuda.so.1")
check(cu.cuInit(0), "cuInit")
mod = ctypes.c_void_p()
check(cu.cuModuleLoadData(ctypes.byref(mod), b"fatbin"), "cuModuleLoadData")
fns = {}
for n in (ATEN, NVJET):
    fn = ctypes.c_void_p()
    check(cu.cuModuleGetFunction(ctypes.byref(fn), mod, n), "cuModuleGetFunction")
    fns[n] = fn
stream = ctypes.c_void_p()
check(cu.cuStreamCreate(ctypes.byref(stream), 0), "cuStreamCreate")
steps = 0
quit_ = threading.Event()


def step():
    u = ctypes.c_uint
    for n in (ATEN, ATEN, ATEN, NVJET):
        check(cu.cuLaunchKernel(fns[n], u(64), u(1), u(1), u(128), u(1), u(1), u(0), stream, None, None), "cuLaunchKernel")
    check(cu.cuStreamSynchronize(stream), "cuStreamSynchronize")


def commands():
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "ping":
            print("pong", steps, flush=True)
        elif cmd == "quit":
            break
    quit_.set()


threading.Thread(target=commands, daemon=True).start()
print("READY", os.getpid(), flush=True)
while not quit_.is_set():
    step()
    steps += 1
    time.sleep(0.01)
