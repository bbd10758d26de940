"""Helpers for the late-start tests, used inside the test subprocesses: a tracer stand-in that
finds the hook's memfd as `attach` does (/proc/PID/fd), maps it, consumes records and writes
the control words; and (from identity.py) an identity snapshot of every vLLM class and module dict."""
import mmap
import os
import struct
import threading
import time

from identity import changed, snapshot  # noqa: F401  (re-exported for the late-start tests)
from profilemate_trace.decode import decode

HDR = 4096


def pyhook_fds(exclude=()):
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue
        if link.startswith("/memfd:profilemate-pyhook") and int(fd) not in exclude:
            out.append(int(fd))
    return out


def memfd_mappings():
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if "memfd:profilemate-pyhook" in line)


def pm_threads():
    return [t for t in threading.enumerate() if t.name == "pm-pyhook" and t.is_alive()]


class Tracer:
    """What the tracer does with an injected ring: map it from /proc, consume, control."""

    def __init__(self):
        fds = pyhook_fds()  # the memfd and the hook's mmap's duplicate of it
        f = os.open("/proc/self/fd/%d" % fds[0], os.O_RDWR)
        try:
            self.mm = mmap.mmap(f, 0)
        finally:
            os.close(f)
        self.own = set(pyhook_fds()) - set(fds)  # mmap keeps a duplicate fd of its own
        assert self.mm[:8] == b"PMRING\x00\x01"
        self.size = struct.unpack_from("<Q", self.mm, 16)[0]

    def u32(self, off):
        return struct.unpack_from("<I", self.mm, off)[0]

    def u64(self, off):
        return struct.unpack_from("<Q", self.mm, off)[0]

    state = property(lambda self: self.u32(40))
    flags = property(lambda self: self.u32(44))
    ack = property(lambda self: self.u32(76))

    def heartbeat(self):
        struct.pack_into("<Q", self.mm, 80, time.monotonic_ns())

    def control(self, enable, detail=1):
        seq = self.u32(72) + 1
        struct.pack_into("<II", self.mm, 64, enable, detail)
        struct.pack_into("<I", self.mm, 72, seq)
        return seq

    def read(self, settle=0.15):
        time.sleep(settle)  # the hook thread copies queued records into the ring every 50 ms
        head, tail = self.u64(128), self.u64(192)
        out = bytearray()
        while tail < head:
            off = tail & (self.size - 1)
            t, _f, size = struct.unpack_from("<HHI", self.mm, HDR + off)
            if t:
                out += self.mm[HDR + off:HDR + off + size]
            tail += size
        struct.pack_into("<Q", self.mm, 192, tail)
        return decode(bytes(out))

    def wait(self, cond, timeout=3.0):
        t = time.monotonic() + timeout
        while time.monotonic() < t:
            if cond():
                return True
            time.sleep(0.01)
        return cond()


def hook_free(obj, keys0):
    """obj's __dict__ has the same keys as before and holds nothing of the hook's."""
    d = vars(obj)
    return set(d) == set(keys0) and not any(
        getattr(getattr(v, "__func__", v), "__pm_wrapped__", False) for v in d.values())
