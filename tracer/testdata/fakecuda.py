"""ctypes wrappers around the fake libcuda (bpf/testdata/fakecuda.c); ctypes releases the GIL
around each call, as PyTorch's bindings do around a launch."""
import ctypes
import os

_lib = ctypes.CDLL(os.environ["PM_FAKECUDA"])
u, p, sz = ctypes.c_uint, ctypes.c_void_p, ctypes.c_size_t

FUNC, STREAM, GRAPH = 0xF00D, 0x5157, 0x6EA0


class LaunchConfig(ctypes.Structure):
    _fields_ = [("g", u * 3), ("b", u * 3), ("shmem", u), ("stream", p), ("attrs", p), ("nattrs", u)]


def launch(n=1, ptsz=False):
    fn = _lib.cuLaunchKernel_ptsz if ptsz else _lib.cuLaunchKernel
    for _ in range(n):
        fn(p(FUNC), u(1), u(1), u(1), u(32), u(1), u(1), u(0), p(STREAM), p(0), p(0))


def launch_ex():
    cfg = LaunchConfig(stream=STREAM + 1)
    _lib.cuLaunchKernelEx(ctypes.byref(cfg), p(FUNC + 1), p(0), p(0))


def graph():
    _lib.cuGraphLaunch(p(GRAPH), p(STREAM + 2))


def h2d(nbytes):
    _lib.cuMemcpyHtoDAsync_v2(ctypes.c_uint64(0xD000), p(0x1000), sz(nbytes), p(STREAM))


def d2h(nbytes):
    _lib.cuMemcpyDtoHAsync_v2(p(0x1000), ctypes.c_uint64(0xD000), sz(nbytes), p(STREAM))


def memset32(n):
    _lib.cuMemsetD32Async(ctypes.c_uint64(0xD000), u(0), sz(n), p(STREAM))


def stream_sync():
    _lib.cuStreamSynchronize(p(STREAM))


def ctx_sync():
    _lib.cuCtxSynchronize()
