"""Late start and detach of the agent in a warm torch process on a real GPU (pm_inject_start).

Usage: python late_start.py <libprofilemate.so> <workdir> [seconds_per_segment] [finalize]

A worker thread runs a decode-like loop: one CUDA-graph replay (24 x Linear(1024), captured
before the agent exists) + one eager kernel + a read-back (.item(), synchronising) per step.
The main thread plays the tracer from inside the process: it calls pm_inject_start through
ctypes (what the PEP 768 path does), finds the ring in /proc/self/fd, heart-beats, enables at
detail graph (CUPTI armed late: first_enable_ns), reads the records, detaches (control_enable
3) and checks that no agent thread, ring fd or mapping is left; then a second cycle at detail
nodes. Steps/s per 1-segment phase (3 segments untraced, dormant and after each detach: the
spread is the noise) and the longest step gap around the first enable show the stall. With
"kinds=0x..", one cycle enables only those kinds (the agent's KB_* mask, inject.conf
kinds=) to tell which kind leaves a cost after the detach. With "control", it never injects and only measures 18 segments (drift over the same span). With
"finalize", cuptiFinalize is called from the main thread after the first detach (what the agent
does NOT do) to see whether the residual cost after a detach is CUPTI staying initialised, and
whether a re-arm still works after it. Prints one JSON object.
"""
import collections
import ctypes
import json
import mmap
import os
import struct
import sys
import threading
import time

import torch

agent, work = sys.argv[1], sys.argv[2]
SECS = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
MODE = sys.argv[4] if len(sys.argv) > 4 else "cycles"
FINALIZE = MODE == "finalize"
KINDS = MODE[len("kinds="):] if MODE.startswith("kinds=") else None  # one cycle with this kind mask
os.makedirs(work, exist_ok=True)

# ---------------------------------------------------------------- workload
torch.cuda.init()
dev = torch.device("cuda")
layers = [torch.nn.Linear(1024, 1024, device=dev, dtype=torch.float16) for _ in range(24)]
x = torch.randn(8, 1024, device=dev, dtype=torch.float16)
s = torch.cuda.Stream()
s.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(s):
    for _ in range(3):
        y = x
        for l in layers:
            y = l(y)
torch.cuda.current_stream().wait_stream(s)
g = torch.cuda.CUDAGraph()
with torch.cuda.graph(g):
    y = x
    for l in layers:
        y = torch.relu(l(y))
out = y
z = torch.zeros(1024, device=dev)

steps = []  # monotonic ns per step end
stop = threading.Event()


def worker():
    while not stop.is_set():
        g.replay()
        z.add_(1.0)  # one eager kernel per step
        out[0, 0].item()  # read-back: synchronises like a decode step
        steps.append(time.monotonic_ns())


th = threading.Thread(target=worker, daemon=True)
th.start()


def rate(t0, t1):
    n = sum(1 for t in steps if t0 <= t < t1)
    return n / ((t1 - t0) / 1e9)


def max_gap(t0, t1):
    ts = [t for t in steps if t0 <= t < t1]
    return max((b - a for a, b in zip(ts, ts[1:])), default=0) / 1e6


def phase(secs):
    t0 = time.monotonic_ns()
    time.sleep(secs)
    return t0, time.monotonic_ns()


def segments(n=3, ring=None):
    out = []
    for _ in range(n):
        if ring is not None:
            ring.heartbeat()
        out.append(round(rate(*phase(SECS))))
    return out


def thread_names():
    return sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))


# ---------------------------------------------------------------- ring access
def find_ring():
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink("/proc/self/fd/" + fd).startswith("/memfd:profilemate-cupti"):
                return "/proc/self/fd/" + fd
        except OSError:
            pass
    return None


class Ring:
    def __init__(self, path):
        self.f = open(path, "r+b")
        self.m = mmap.mmap(self.f.fileno(), 0)
        assert self.m[:8] == b"PMRING\x00\x01", self.m[:8]
        self.ds = self.u64(16)
        self.counts = collections.Counter()
        self.logs = []
        self.graph_kernels = 0

    def u32(self, o):
        return struct.unpack_from("<I", self.m, o)[0]

    def u64(self, o):
        return struct.unpack_from("<Q", self.m, o)[0]

    def put32(self, o, v):
        struct.pack_into("<I", self.m, o, v)

    def heartbeat(self):
        struct.pack_into("<Q", self.m, 80, time.monotonic_ns())

    def control(self, enable, detail):
        self.put32(64, enable)
        self.put32(68, detail)
        self.put32(88, 0)
        seq = self.u32(72) + 1
        self.put32(72, seq)
        return seq

    def wait_ack(self, seq, timeout=30.0):
        t0 = time.monotonic()
        while self.u32(76) != seq:
            if time.monotonic() - t0 > timeout:
                raise SystemExit("no ack within %.0f s" % timeout)
            time.sleep(0.001)
        return time.monotonic() - t0

    def drain(self):
        head, tail = self.u64(128), self.u64(192)
        while tail < head:
            pos = 4096 + tail % self.ds
            typ, _, size = struct.unpack_from("<HHI", self.m, pos)
            if size < 8:
                raise SystemExit("corrupt ring at %d" % tail)
            self.counts[typ] += 1
            if typ == 1 and struct.unpack_from("<I", self.m, pos + 48)[0]:
                self.graph_kernels += 1
            if typ == 194:
                n = struct.unpack_from("<I", self.m, pos + 20)[0]
                self.logs.append(bytes(self.m[pos + 24:pos + 24 + n]).decode(errors="replace"))
            tail += size
        struct.pack_into("<Q", self.m, 192, tail)

    def close(self):
        self.m.close()
        self.f.close()


def leftovers():
    me = "/proc/self"
    threads = [open(f"{me}/task/{t}/comm").read().strip() for t in os.listdir(f"{me}/task")]
    fds = [find_ring()]
    maps = [l for l in open(f"{me}/maps") if "profilemate-cupti" in l]
    return {"pm_cupti_threads": threads.count("pm-cupti"), "ring_fd": fds[0] is not None, "ring_maps": len(maps)}


lib = ctypes.CDLL(agent)
lib.pm_inject_start.argtypes = [ctypes.c_char_p]
conf = os.path.join(work, "inject.conf")
with open(conf, "w") as f:
    f.write("log=%s\nstart=none\norphan_timeout_s=30\n" % os.path.join(work, "agent.log"))
    if KINDS:
        f.write("kinds=%s\n" % KINDS)

res = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0), "phase_s": SECS}
time.sleep(1.0)  # warm
if len(sys.argv) > 4 and sys.argv[4] == "control":  # never injected: the drift over the same span
    res["control_steps_s"] = segments(18)
    stop.set()
    th.join()
    print(json.dumps(res))
    sys.exit(0)
res["untraced_steps_s"] = segments()
res["threads_before"] = thread_names()
for cycle, detail in ((1, 1),) if KINDS else ((1, 1), (2, 2)):
    c = {}
    t = time.monotonic_ns()
    c["inject_rc"] = lib.pm_inject_start(conf.encode())
    c["inject_call_us"] = (time.monotonic_ns() - t) / 1e3
    path = None
    while path is None and time.monotonic_ns() - t < 5e9:
        path = find_ring()
        time.sleep(0.001)
    time.sleep(0.05)
    r = Ring(path)
    r.heartbeat()
    c["dormant_steps_s"] = segments(ring=r)
    r.heartbeat()
    t0 = time.monotonic_ns()
    c["enable_ack_s"] = r.wait_ack(r.control(1, detail))
    c["first_enable_ms"] = r.u64(96) / 1e6
    c["late_start_flag"] = bool(r.u32(44) & 2)
    c["late_start_ns_set"] = r.u64(104) > 0
    time.sleep(0.3)
    c["max_step_gap_ms_around_enable"] = max_gap(t0 - int(0.2e9), time.monotonic_ns())
    r.heartbeat()
    c["enabled_steps_s"] = segments(2, ring=r)
    r.heartbeat()
    r.drain()
    t1 = time.monotonic_ns()
    c["detach_ack_s"] = r.wait_ack(r.control(3, detail))
    c["state_after_detach"] = r.u32(40)
    r.drain()
    c["max_step_gap_ms_around_detach"] = max_gap(t1 - int(0.2e9), time.monotonic_ns())
    r.close()  # our own fd and mapping of the ring
    time.sleep(0.2)
    c["leftovers"] = leftovers()
    c["threads_after_detach"] = thread_names()
    c["records"] = {str(k): v for k, v in sorted(r.counts.items())}
    c["kernels_in_graphs"] = r.graph_kernels
    c["logs"] = r.logs[:12]
    c["after_detach_steps_s"] = segments()
    if FINALIZE and cycle == 1:
        cupti = None
        for l in open("/proc/self/maps"):
            if "libcupti.so" in l:
                cupti = ctypes.CDLL(l.split()[-1])
                break
        t = time.monotonic_ns()
        c["cuptiFinalize_rc"] = cupti.cuptiFinalize()
        c["cuptiFinalize_ms"] = (time.monotonic_ns() - t) / 1e6
        c["after_finalize_steps_s"] = segments()
    res["cycle%d" % cycle] = c
stop.set()
th.join()
try:
    res["agent_log"] = open(os.path.join(work, "agent.log")).read()[-2000:]
except OSError:
    res["agent_log"] = None
print(json.dumps(res, indent=1))
