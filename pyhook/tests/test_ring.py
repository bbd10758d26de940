import os
import struct
import subprocess
import sys
import time

from conftest import PYHOOK, decode


def mk(size=4096):
    from profilemate_trace.ring import Ring

    return Ring(size)


def rec(n, tag):
    from profilemate_trace import _records as R

    return R.LOG.pack(tail=bytes([tag]) * n, ts_ns=tag, level=1)


def test_header_layout():
    r = mk(8192)
    assert bytes(r.mm[0:8]) == b"PMRING\x00\x01"
    ver, hs, ds, pid, src, created = struct.unpack_from("<IIQIIQ", r.mm, 8)
    assert (ver, hs, ds, pid, src) == (1, 4096, 8192, os.getpid(), 2) and created > 0
    assert os.readlink("/proc/self/fd/%d" % r.fd) == "/memfd:profilemate-pyhook (deleted)"
    r.close()


def test_wraparound_padding_and_order():
    r = mk(4096)
    got = []
    for i in range(200):  # 200 x 64..72 bytes through a 4 KiB ring
        assert r.write(rec(40 + i % 9, i % 250))
        if i % 7 == 6:
            got += decode(r.read_available())
    got += decode(r.read_available())
    assert [g["ts_ns"] for g in got] == [i % 250 for i in range(200)]
    assert r.dropped == 0 and r.head > 4096  # wrapped several times
    assert struct.unpack_from("<Q", r.mm, 128)[0] == r.head == struct.unpack_from("<Q", r.mm, 192)[0]
    r.close()


def test_full_drops_counted_never_blocks():
    r = mk(4096)
    one = rec(48, 1)
    t0 = time.monotonic()
    ok = sum(r.write(one) for _ in range(10000))
    dt = time.monotonic() - t0
    assert ok == 4096 // len(one)
    assert r.dropped == 10000 - ok and r.bytes_dropped == r.dropped * len(one)
    assert struct.unpack_from("<QQQ", r.mm, 136) == (ok, r.dropped, r.bytes_dropped)
    assert dt < 2.0
    assert len(decode(r.read_available())) == ok
    assert r.write(one)  # space again after the consumer advanced tail
    r.close()


def test_write_rec_tail_padding():
    from profilemate_trace import _records as R

    r = mk(4096)
    s = R.PY_KV_BLOCKS
    r.data[0:64] = b"\xff" * 64  # stale bytes must not leak into tail padding
    r.write_rec(s._struct, s.type, s.size, (5, 6, 1, 0, 3, 0, 4), b"\x01\x00\x00\x00")
    (d,) = decode(r.read_available())
    assert d["_size"] == 48 and d["block_ids"] == b"\x01\x00\x00\x00" and d["num_free"] == 3
    assert bytes(r.data[44:48]) == b"\0\0\0\0"
    r.close()


FORK_SCRIPT = r"""
import os, sys, json
sys.path.insert(0, %(pyhook)r); sys.path.insert(0, %(fake)r)
os.environ.update(PROFILEMATE_START="graph", PROFILEMATE_PYHOOK_SPILL="0", PROFILEMATE_PYHOOK_QUIET="1")
from profilemate_trace import _boot, runtime as rt
_boot.activate("test")
import vllm.v1.core.block_pool as bp
parent_fd, parent_ring = rt.RING.fd, rt.RING
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    pool = bp.BlockPool(4, False, 16); pool.get_new_blocks(2)
    rt.flush(); recs = rt.RING.read_available()
    os.write(w, json.dumps({"pid": os.getpid(), "ring_pid": rt.RING.hi[6], "fd": rt.RING.fd,
                            "same": rt.RING is parent_ring, "n": len(recs),
                            "link": os.readlink("/proc/self/fd/%%d" %% rt.RING.fd),
                            "types": sorted({int.from_bytes(recs[i:i+2], "little") for i in range(0, 0)})}).encode())
    os._exit(0)
os.waitpid(pid, 0)
child = json.loads(os.read(r, 10000))
before = parent_ring.head
print(json.dumps({"child": child, "parent_pid": os.getpid(), "parent_ring_head": before,
                  "parent_fd": parent_fd}))
"""


def test_fork_child_gets_own_ring():
    from conftest import FAKE

    out = subprocess.run([sys.executable, "-c", FORK_SCRIPT % {"pyhook": PYHOOK, "fake": FAKE}],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    import json

    d = json.loads(out.stdout.strip().splitlines()[-1])
    c = d["child"]
    assert c["pid"] != d["parent_pid"] and c["ring_pid"] == c["pid"] and not c["same"]
    assert c["link"] == "/memfd:profilemate-pyhook (deleted)"
    assert c["n"] > 0


def test_walk_consumer_equals_chunk_consumer():
    """The in-process chunked drain and a record-walking consumer (what a tracer does) agree."""
    a, b = mk(4096), mk(4096)
    out_a, out_b = [], []
    for i in range(300):
        r = rec(30 + i % 23, i % 200)
        a.write(r)
        b.write(r)
        if i % 11 == 10:
            out_a += decode(a.read_available())
            out_b += decode(b.read_available_walk())
    out_a += decode(a.read_available())
    out_b += decode(b.read_available_walk())
    assert [x["ts_ns"] for x in out_a] == [x["ts_ns"] for x in out_b] == [i % 200 for i in range(300)]
