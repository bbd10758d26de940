"""Import-time hook preloaded dormant (PROFILEMATE_PYHOOK_SPILL=0, no control socket), then a
tracer attaches (maps the memfd found in /proc/self/fd, sets control_enable=1): the state built
while dormant (BlockPools, CUDA graphs captured) is described by snapshot records written at
the enable, before any record that refers to it; each enable transition writes it again."""
import json
import os
import subprocess

import pytest

from conftest import FAKE, PYHOOK
from test_late import run

ENV = {"PYTHONPATH": os.pathsep.join([PYHOOK, FAKE]), "PROFILEMATE_PYHOOK_SPILL": "0",
       "PROFILEMATE_PYHOOK_QUIET": "1"}

CODE = """
import array
import vllm.v1.core.block_pool as bp
import vllm.compilation.cuda_graph, vllm.compilation.breakable_cudagraph
from vllm.v1.worker.gpu.model_runner import GPUModelRunner as V2Runner
from vllm.v1.worker.gpu_model_runner import GPUModelRunner as V1Runner
import profilemate_trace.runtime as rt
assert rt.mode() == "tracer" and not rt.ON
# --- while dormant: a pool in use, graphs captured (V2 manager and V1 piecewise/full wrappers)
pool = bp.BlockPool(10, True, 16)
held = pool.get_new_blocks(3)
gone = bp.BlockPool(4, False, 16); del gone; gc.collect()  # dead before the attach: not described
v1 = V1Runner(); v1.profile_cudagraph_memory(); v1.capture_model()
V2Runner().capture_model()   # (after V1: any capture_model removes the per-piece wrapper)
tr = Tracer()
dormant = tr.read(0.1)
res = {"dormant_kv": len(by(dormant, "py_kv_config")), "dormant_caps": len(by(dormant, "py_graph_capture"))}
def enable():
    tr.heartbeat()
    seq = tr.control(1, 1)
    assert tr.wait(lambda: tr.ack == seq and rt.ON)
def disable():
    seq = tr.control(0, 1)
    assert tr.wait(lambda: tr.ack == seq and not rt.ON)
def summary(recs):
    names = [r["_name"] for r in recs if r["_name"] in ("control_change", "py_kv_config", "py_kv_blocks", "py_graph_capture")]
    cfg = [dict(json.loads(r["info"]), pool_id=r["pool_id"], n=r["num_gpu_blocks"]) for r in by(recs, "py_kv_config")]
    caps = [(c["runtime_mode"], c["num_tokens"], c["source"], c["flags"]) for c in by(recs, "py_graph_capture")]
    kvb = [(r["op"], r["num_free"], list(array.array("I", r["block_ids"]))) for r in by(recs, "py_kv_blocks")]
    ts_ok = all(c["end_ns"] < by(recs, "control_change")[0]["ts_ns"] for c in by(recs, "py_graph_capture"))
    return {"names": names, "cfg": cfg, "caps": caps, "kvb": kvb, "caps_before_enable": ts_ok}
enable()
pool.free_blocks(held[:1]); pool.get_new_blocks(2)
res["first"] = summary(tr.read())
disable(); enable()                                  # a second attach: written again
pool.free_blocks(held[1:])
res["second"] = summary(tr.read())
print("RESULT " + json.dumps(res))
"""


def test_dormant_state_is_described_at_enable():
    r, _ = run(CODE, env_extra=ENV)
    assert r["dormant_kv"] == 0 and r["dormant_caps"] == 0  # nothing written while dormant
    for k in ("first", "second"):
        s = r[k]
        names = s["names"]
        # control_change, then the snapshot, then the block records that refer to the pool
        assert names[0] == "control_change"
        assert names.index("py_kv_config") < names.index("py_kv_blocks")
        assert max(i for i, n in enumerate(names) if n in ("py_kv_config", "py_graph_capture")) < \
            names.index("py_kv_blocks")
        (cfg,) = s["cfg"]  # only the live pool
        assert cfg["n"] == 10 and cfg["snapshot"] is True and cfg["attached_late"] is False
        assert cfg["enable_caching"] is True and cfg["class"] == "BlockPool"
        # V2: FULL 1 and 2 (source 3); V1 pieces (source 1); throw-away profile captures left out
        caps = s["caps"]
        assert [(m, n, src) for m, n, src, _f in caps if src == 3] == [(2, 1, 3), (2, 2, 3)]
        assert [(m, n) for m, n, src, _f in caps if src == 1] == [(1, 8), (1, 8), (1, 4), (1, 4), (2, 4), (2, 2)]
        assert all(f & 128 and not f & 32 for _m, _n, _s, f in caps)
        assert s["caps_before_enable"]
    # 10 blocks, null block taken, 3 held while dormant -> 6 free when the tracer enabled
    assert r["first"]["cfg"][0]["num_free_blocks_at_attach"] == 6
    # freed block 1 (free 7), then 2 allocated (the freed one reused first): free 5
    assert r["first"]["kvb"] == [[2, 7, [1]], [1, 5, [1, 4]]]
    # second enable: the current free count (one freed, two allocated since)
    assert r["second"]["cfg"][0]["num_free_blocks_at_attach"] == 5
    assert r["first"]["cfg"][0]["pool_id"] == r["second"]["cfg"][0]["pool_id"]


def test_spill_handover_describes_pools(tmp_path):
    """Option 2 (spilling) then a tracer heartbeat: the records of the pool went to the spill
    file, so the handover writes the snapshot into the ring for the tracer."""
    env = dict(ENV, PROFILEMATE_PYHOOK_SPILL="1", VLLM_PROFILING_DIR=str(tmp_path / "prof"),
               PROFILEMATE_PYHOOK_AUTO_EXPORT="0")
    r, _ = run("""
import vllm.v1.core.block_pool as bp
import profilemate_trace.runtime as rt
pool = bp.BlockPool(8, False, 16); pool.get_new_blocks(2)
time.sleep(0.4)                                      # spilled
tr = Tracer(); tr.read(0.0)
tr.heartbeat(); time.sleep(0.12); tr.heartbeat()
assert tr.wait(lambda: rt.mode() == "tracer")
pool.get_new_blocks(1)
recs = tr.read()
names = [x["_name"] for x in recs if x["_name"] in ("py_kv_config", "py_kv_blocks")]
print("RESULT " + json.dumps({"names": names, "free": [json.loads(x["info"]).get("num_free_blocks_at_attach")
                                                      for x in by(recs, "py_kv_config")]}))
""", env_extra=env)
    assert r["names"] == ["py_kv_config", "py_kv_blocks"] and r["free"] == [5]


REAL = """
import sys, json, time
sys.path[:0] = [%r, %r]
import drive_real_vllm as d
from late_helpers import Tracer
from profilemate_trace.decode import decode
import profilemate_trace.runtime as rt
vllm_config, s = d.build(num_blocks=12, block_size=16, max_tokens=64, max_seqs=4, prefix_caching=True)
assert rt.mode() == "tracer" and not rt.ON, (rt.mode(), rt.ON)
for i in range(2):
    s.add_request(d.make_request(i, 40, 8))
s.schedule()                                        # blocks allocated while dormant
pool = s.kv_cache_manager.block_pool
free0 = pool.get_num_free_blocks()
tr = Tracer()
dormant = [x["_name"] for x in tr.read(0.1)]
tr.heartbeat()
seq = tr.control(1, 1)
assert tr.wait(lambda: tr.ack == seq and rt.ON)
b = pool.get_new_blocks(1)
pool.free_blocks(b)
recs = [x for x in tr.read() if x["_name"] in ("py_kv_config", "py_kv_blocks")]
print("RESULT " + json.dumps({"free0": free0, "total": pool.num_gpu_blocks, "dormant_kv": dormant.count("py_kv_config"),
    "names": [x["_name"] for x in recs],
    "cfg": [json.loads(x["info"]) | {"n": x["num_gpu_blocks"]} for x in recs if x["_name"] == "py_kv_config"],
    "ops": [(x["op"], x["num_free"]) for x in recs if x["_name"] == "py_kv_blocks"]}))
"""


def _real_pythons():
    from test_real_vllm import PYS

    return PYS


@pytest.mark.real_vllm
@pytest.mark.parametrize("py", _real_pythons())
def test_real_vllm_dormant_block_pool_described_at_enable(py):
    here = os.path.dirname(os.path.abspath(__file__))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROFILEMATE_", "VLLM_PROFILING"))}
    env.update(PYTHONPATH=PYHOOK, PROFILEMATE_PYHOOK_SPILL="0", PROFILEMATE_PYHOOK_QUIET="1",
               HF_HUB_OFFLINE="1", VLLM_LOGGING_LEVEL="ERROR")
    out = subprocess.run([py, "-c", REAL % (here, os.path.join(here, "real"))], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    r = json.loads([x for x in out.stdout.splitlines() if x.startswith("RESULT ")][-1][7:])
    assert r["dormant_kv"] == 0 and r["free0"] < r["total"] - 1  # the pool was in use before the enable
    assert r["names"] == ["py_kv_config", "py_kv_blocks", "py_kv_blocks"]
    (cfg,) = r["cfg"]
    assert cfg["num_free_blocks_at_attach"] == r["free0"] and cfg["n"] == r["total"] and cfg["snapshot"]
    assert [op for op, _n in r["ops"]] == [1, 2] and r["ops"][0][1] == r["free0"] - 1 and r["ops"][1][1] == r["free0"]
