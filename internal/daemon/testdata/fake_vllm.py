"""A vLLM-shaped process tree for the daemon tests (no GPU, no vLLM).

The root plays `vllm serve`; it starts an engine core, which starts --workers workers, like
vLLM V1 with tensor parallelism. vLLM renames its processes (VLLM::EngineCore, VLLM::Worker_TPn);
so does this, through /proc/self/comm.

With FAKE_VLLM_AGENT=1 (the test also sets LD_PRELOAD=cupti/build/libprofilemate.so and
LD_LIBRARY_PATH=cupti/build/testlib) each process is a real CUDA client of the fake libcuda:
cuInit runs the real agent's InitializeInjection with the mock CUPTI, and every cuLaunchKernel
becomes a kernel record of the real agent, dormant until a tracer enables it.

Without it, each process holds a producer ring exactly as a dormant CUPTI agent does
(docs/record-format.md): a memfd named profilemate-cupti, producer_state running, collection
off until a tracer sets control_enable; it acknowledges control_seq, writes kernel records
(layout from pyhook/profilemate_trace/_records.py, generated from the schema) while enabled,
and, like the agent, turns itself dormant when the tracer's heartbeat is older than
PROFILEMATE_ORPHAN_TIMEOUT seconds.

--health FILE: every process rewrites FILE.<pid> with "<beats> <enabled> <records written>"
every 50 ms, so a test can tell a live, responsive process from a stuck one.
"""

import argparse
import mmap
import os
import signal
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "pyhook", "profilemate_trace"))
import _records as R  # noqa: E402  (generated record layouts)

HEADER_SIZE = 4096
DATA_SIZE = 1 << 20


class Ring:
    def __init__(self):
        self.fd = os.memfd_create("profilemate-cupti", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, HEADER_SIZE + DATA_SIZE)
        self.mm = mmap.mmap(self.fd, HEADER_SIZE + DATA_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.mm[0:8] = b"PMRING\x00\x01"
        struct.pack_into("<IIQIIQ", self.mm, 8, 1, HEADER_SIZE, DATA_SIZE, os.getpid(), 1, time.monotonic_ns())
        struct.pack_into("<II", self.mm, 40, 1, 1)  # producer_state running, flags armed at cuInit
        self.head = 0
        self.written = 0
        self.dropped = 0
        self.bytes_dropped = 0

    def u32(self, off):
        return struct.unpack_from("<I", self.mm, off)[0]

    def u64(self, off):
        return struct.unpack_from("<Q", self.mm, off)[0]

    def write(self, rec):
        n = len(rec)
        tail = self.u64(192)
        pos = self.head % DATA_SIZE
        pad = DATA_SIZE - pos if pos + n > DATA_SIZE else 0
        if DATA_SIZE - (self.head - tail) < n + pad:
            self.dropped += 1
            self.bytes_dropped += n
            struct.pack_into("<QQ", self.mm, 144, self.dropped, self.bytes_dropped)
            return False
        if pad:
            struct.pack_into("<HHI", self.mm, HEADER_SIZE + pos, 0, 0, pad)
            self.head += pad
            pos = 0
        self.mm[HEADER_SIZE + pos:HEADER_SIZE + pos + n] = rec
        self.head += n
        self.written += 1
        struct.pack_into("<Q", self.mm, 136, self.written)
        struct.pack_into("<Q", self.mm, 128, self.head)  # after the bytes (x86: stores are ordered)
        return True


def kernel(corr, t):
    return R.KERNEL.pack(start_ns=t, end_ns=t + 5000, graph_node_id=0, correlation_id=corr, device_id=0, context_id=1,
                         stream_id=7, graph_id=0, name_id=1, grid=(1, 1, 1), block=(128, 1, 1), static_shared=0,
                         dynamic_shared=0, registers=32, launch_type=0, is_device_launched=0, flags=0)


def control_change(enable, detail, seq, reason):
    return R.CONTROL_CHANGE.pack(ts_ns=time.monotonic_ns(), enable=enable, detail=detail, seq=seq, sample_every=0,
                                 reason=reason, reserved=0)


class Cuda:
    """The real agent under the fake driver: launches go through libcuda.so.1."""

    def __init__(self):
        import ctypes
        self.c = ctypes
        self.cu = ctypes.CDLL("libcuda.so.1")
        self.check(self.cu.cuInit(0), "cuInit")
        mod = ctypes.c_void_p()
        self.check(self.cu.cuModuleLoadData(ctypes.byref(mod), b"fake"), "cuModuleLoadData")
        self.fn = ctypes.c_void_p()
        self.check(self.cu.cuModuleGetFunction(ctypes.byref(self.fn), mod, b"fake_vllm_decode_kernel"), "cuModuleGetFunction")
        self.stream = ctypes.c_void_p()
        self.check(self.cu.cuStreamCreate(ctypes.byref(self.stream), 0), "cuStreamCreate")
        self.launches = 0

    def check(self, r, what):
        if r != 0:
            raise SystemExit("%s failed: %d" % (what, r))

    def step(self, n):
        for _ in range(n):
            self.check(self.cu.cuLaunchKernel(self.fn, 1, 1, 1, 128, 1, 1, 0, self.stream, None, None), "cuLaunchKernel")
            self.launches += 1
        self.check(self.cu.cuStreamSynchronize(self.stream), "cuStreamSynchronize")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", default="server")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tp", type=int, default=0)
    ap.add_argument("--health", default="")
    ap.add_argument("--rate", type=int, default=int(os.environ.get("FAKE_VLLM_RATE", "20")), help="kernel launches per 10 ms")
    a = ap.parse_args()
    orphan_s = float(os.environ.get("PROFILEMATE_ORPHAN_TIMEOUT", "30"))
    children = []

    def stop(*_):
        for c in children:
            try:
                c.terminate()
            except OSError:
                pass
        for c in children:
            try:
                c.wait(5)
            except Exception:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Die with the parent (the test, or this tree's root), so a killed test leaves nothing.
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if a.role == "engine":
        with open("/proc/self/comm", "w") as f:
            f.write("VLLM::EngineCor")
    elif a.role == "worker":
        with open("/proc/self/comm", "w") as f:
            f.write("VLLM::Worker_TP%d" % a.tp)
    if os.environ.get("FAKE_VLLM_AGENT") == "1":
        return agent_loop(a, children)
    ring = Ring()
    spawn(a, children)
    enabled = False
    detail = 0
    corr = 0
    beat = 0
    orphaned = False
    last_health = 0
    ring.write(R.LOG.pack(ts_ns=time.monotonic_ns(), level=1, text=b"fake agent armed (dormant)"))
    while True:
        seq, ack = ring.u32(72), ring.u32(76)
        if seq != ack:
            enabled = ring.u32(64) == 1
            detail = ring.u32(68)
            struct.pack_into("<I", ring.mm, 76, seq)
            orphaned = False
            ring.write(control_change(int(enabled), detail, seq, 0))
        hb = ring.u64(80)
        if enabled and hb and time.monotonic_ns() > hb + orphan_s * 1e9 and not orphaned:
            enabled = False
            orphaned = True
            ring.write(control_change(0, detail, seq, 2))
            print("[profilemate] tracer heartbeat older than %.1f s: going dormant" % orphan_s, file=sys.stderr, flush=True)
        if enabled:
            now = time.monotonic_ns()
            for _ in range(a.rate):
                corr += 1
                ring.write(kernel(corr, now))
            struct.pack_into("<Q", ring.mm, 168, now)
        now = time.monotonic()
        if a.health and now - last_health > 0.05:
            beat += 1
            tmp = "%s.%d.tmp" % (a.health, os.getpid())
            with open(tmp, "w") as f:
                f.write("%d %d %d\n" % (beat, int(enabled), ring.written))
            os.replace(tmp, "%s.%d" % (a.health, os.getpid()))
            last_health = now
        for c in children:
            if c.poll() is not None:
                children.remove(c)
        time.sleep(0.01)


def spawn(a, children):
    me = [sys.executable, os.path.abspath(__file__), "--health", a.health, "--rate", str(a.rate)]
    if a.role == "solo":  # a single process, no children
        return
    if a.role == "server":
        children.append(subprocess.Popen(me + ["--role", "engine", "--workers", str(a.workers)]))
    elif a.role == "engine":
        for i in range(a.workers):
            children.append(subprocess.Popen(me + ["--role", "worker", "--tp", str(i)]))


def agent_loop(a, children):
    cuda = Cuda()
    spawn(a, children)
    beat = 0
    last_health = 0
    while True:
        cuda.step(a.rate)
        now = time.monotonic()
        if a.health and now - last_health > 0.05:
            beat += 1
            tmp = "%s.%d.tmp" % (a.health, os.getpid())
            with open(tmp, "w") as f:
                f.write("%d -1 %d\n" % (beat, cuda.launches))
            os.replace(tmp, "%s.%d" % (a.health, os.getpid()))
            last_health = now
        for c in children:
            if c.poll() is not None:
                children.remove(c)
        time.sleep(0.01)


if __name__ == "__main__":
    main()
