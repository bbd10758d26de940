"""Late start (profilemate_trace.late, docs/injection.md §4-§5) against the vLLM-shaped fake.

Each test runs in a fresh interpreter WITHOUT the import-time hook (no sitecustomize on the
path at start-up), builds vLLM objects first, then starts the hook as the injector does:
``sys.path.insert(0, <pyhook>); from profilemate_trace import late; late.start(conf)``. The
tracer side (find the memfd in /proc/self/fd, map it, consume, write control words) is
``late_helpers.Tracer``."""
import json
import os
import subprocess
import sys
import textwrap

from conftest import FAKE, PYHOOK

HERE = os.path.dirname(os.path.abspath(__file__))

PRELUDE = """
import json, os, sys, time, threading, gc
sys.path[:0] = [%r, %r, %r]
from late_helpers import Tracer, snapshot, changed, pm_threads, pyhook_fds, memfd_mappings, hook_free
def conf(path, **kw):
    kw.setdefault("log", path + ".log")
    with open(path, "w") as f:
        f.write("# inject.conf\\n" + "".join("%%s=%%s\\n" %% kv for kv in kw.items()) + "unknown_key=1\\n")
    return path
def by(recs, name):
    return [r for r in recs if r["_name"] == name]
""" % (PYHOOK, FAKE, HERE)


def run(code, python=None, env_extra=None, timeout=120):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PROFILEMATE_", "VLLM_PROFILING", "ENABLE_")) and k != "PYTHONPATH"}
    env.update(env_extra or {})
    out = subprocess.run([python or sys.executable, "-c", PRELUDE + textwrap.dedent(code)], env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-4000:]
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, out.stdout[-2000:] + out.stderr[-2000:]
    return json.loads(line[-1][7:]), out


LIVE = """
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.engine.core import EngineCore
from vllm.v1.request import Request
from vllm.v1.worker.gpu_model_runner import GPUModelRunner
import vllm.v1.cudagraph_dispatcher, vllm.compilation.cuda_graph, vllm.v1.utils
s = Scheduler(num_blocks=9, block_size=4, max_num_batched_tokens=16, max_num_seqs=4, enable_caching=True)
runner = GPUModelRunner()
ec = EngineCore(s, runner)                      # binds ec.step_fn = ec.step (unpatched)
step_fn0 = ec.step_fn
callbacks = [ec.step]                           # a bound method kept in a list of a vLLM object
ec.callbacks = callbacks
def serve(n):
    for i in range(n):
        s.add_request(Request("r%d-%d" % (n, i), [1] * 6, max_tokens=3))
    k = 0
    while s.requests and k < 100:
        ec.step_fn(); k += 1
    return k
serve(2)                                        # served before the attach: never recorded
"""


def test_late_start_reaches_live_objects_and_detach_restores_everything(tmp_path):
    r, out = run(LIVE + """
from profilemate_trace import late
import profilemate_trace.runtime as rt
from profilemate_trace.patches import base
snap = snapshot()
sdict0 = dict(vars(s)); pdict0 = dict(vars(s.pool)); edict0 = dict(vars(ec))
t0 = time.monotonic()
rc = late.start(conf(%r, start="graph", orphan_timeout_s=60))
start_ms = (time.monotonic() - t0) * 1e3
tr = Tracer()
tr.heartbeat()
res = {"rc": rc, "rc2": late.start(%r), "start_ms": start_ms, "threads": len(pm_threads()),
       "flags": tr.flags, "state": tr.state,
       "step_fn_wrapped": getattr(ec.step_fn.__func__, "__pm_wrapped__", False),
       "cb_wrapped": getattr(callbacks[0].__func__, "__pm_wrapped__", False),
       "finder": base.FINDER in sys.meta_path}
steps = serve(3)
recs = tr.read()
res["steps"] = steps
res["names"] = sorted({x["_name"] for x in recs})
res["kv_config"] = [json.loads(x["info"]) for x in by(recs, "py_kv_config")]
res["sched_steps"] = len(by(recs, "py_sched_step"))
res["engine_steps"] = sum(1 for x in by(recs, "py_cpu_scope") if x["name"] == b"EngineCore.step")
res["forwards"] = len(by(recs, "py_forward"))
res["dispatch"] = len(by(recs, "py_graph_dispatch"))
res["arrivals"] = sorted({x["req_id"].decode() for x in by(recs, "py_request_event") if x["event"] == 1})
kv = by(recs, "py_kv_blocks")
res["last_free"] = kv[-1]["num_free"] if kv else None
res["pool_free"] = s.pool.get_num_free_blocks()
res["pinfo"] = [(x["source"], x["agent_flags"], json.loads(x["text"])["started_by"]) for x in by(recs, "process_info")]
res["patch_status"] = {x["text"].split(b"\\0")[0].decode(): x["status"] for x in by(recs, "py_patch_status")}
res["logs"] = [x["text"].decode() for x in by(recs, "log")]
# detach as the tracer does: control_enable=3 and a new seq
seq = tr.control(3, 0)
res["detached"] = tr.wait(lambda: tr.ack == seq and tr.state == 5 and not pm_threads())
res["ack"], res["seq"], res["state_after"] = tr.ack, seq, tr.state
tail = tr.read()
res["tail"] = [(x["_name"], x.get("enable")) for x in tail]
res["changed"] = [list(map(str, k)) for k in changed(snap, snapshot())]
res["inst"] = [hook_free(s, sdict0), hook_free(s.pool, pdict0), hook_free(ec, edict0),
               all(vars(s.pool)[k] is pdict0[k] for k in ("blocks", "free_block_queue", "null_block"))]
res["step_fn_restored"] = ec.__dict__["step_fn"] is step_fn0
res["cb_restored"] = callbacks[0].__func__ is EngineCore.step and not hasattr(EngineCore.step, "__pm_wrapped__")
res["fds"], res["maps_hook_only"] = pyhook_fds(tr.own), memfd_mappings()
res["finder_after"] = base.FINDER in sys.meta_path
res["ring"] = rt.RING is None and not rt.ON and not rt._patches
res["serve_after"] = serve(2)
res["log"] = open(%r).read()
print("RESULT " + json.dumps(res))
""" % (str(tmp_path / "inject.conf"), str(tmp_path / "inject.conf"), str(tmp_path / "inject.conf.log")))
    assert r["rc"] == 0 and r["rc2"] == 1  # a second start is a no-op
    assert r["threads"] == 1 and r["finder"]
    assert r["flags"] == 2 and r["state"] == 1  # producer_flags bit 1: late start; running
    assert r["start_ms"] < 1000
    assert r["step_fn_wrapped"] and r["cb_wrapped"]  # bound methods captured before the attach
    # events flow from the objects built before the attach
    assert r["kv_config"] and r["kv_config"][0]["attached_late"] and r["kv_config"][0]["num_free_blocks_at_attach"] == 8
    assert r["sched_steps"] == r["engine_steps"] == r["forwards"] == r["steps"] > 0
    assert r["dispatch"] > 0
    assert r["arrivals"] == ["r3-0", "r3-1", "r3-2"]  # only requests added after the attach
    assert r["last_free"] == r["pool_free"]
    assert r["pinfo"] == [[2, 2, "inject"]]
    assert r["patch_status"]["kv.block_pool"] == 1 and r["patch_status"]["scheduler.step"] == 1
    assert r["patch_status"]["cpu.engine_step"] == 1 and r["patch_status"]["forward.v1"] == 1
    assert any("late start in" in x and "bound method(s) re-bound" in x for x in r["logs"])
    # detach: acknowledged, state 5, thread gone, ring closed, every attribute the original again
    assert r["detached"] and r["ack"] == r["seq"] and r["state_after"] == 5
    assert ["control_change", 3] in r["tail"] and r["tail"][-1][0] == "py_hook_stats"
    assert r["changed"] == []
    assert all(r["inst"]) and r["step_fn_restored"] and r["cb_restored"]
    assert r["fds"] == [] and r["maps_hook_only"] == 1  # only the tracer stand-in's own mapping
    assert not r["finder_after"] and r["ring"]
    assert r["serve_after"] > 0
    assert "late start in" in r["log"] and "detached: the tracer asked" in r["log"]


def test_late_twenty_cycles_no_thread_bounded_memory(tmp_path):
    r, _ = run(LIVE + """
import tracemalloc
from profilemate_trace import late
snap = snapshot()
c = conf(%r, start="graph")
fds0 = len(os.listdir("/proc/self/fd"))
def cycle(i):
    assert late.start(c) == 0
    tr = Tracer(); tr.heartbeat()
    serve(1)
    assert any(x["_name"] == "py_sched_step" for x in tr.read())
    if i %% 2:
        seq = tr.control(3, 0)
        assert tr.wait(lambda: tr.ack == seq and tr.state == 5 and not pm_threads())
    else:
        assert late.stop()
    del tr
for i in range(3):
    cycle(i)
gc.collect()
tracemalloc.start()
m0 = tracemalloc.get_traced_memory()[0]
for i in range(20):
    cycle(i)
gc.collect()
m1 = tracemalloc.get_traced_memory()[0]
print("RESULT " + json.dumps({"growth": m1 - m0, "threads": len(pm_threads()), "fds": len(os.listdir("/proc/self/fd")) - fds0,
                              "maps": memfd_mappings(), "changed": [list(map(str, k)) for k in changed(snap, snapshot())],
                              "active": late.active(), "log_lines": sum(1 for _ in open(c + ".log"))}))
""" % str(tmp_path / "inject.conf"))
    assert r["threads"] == 0 and r["fds"] == 0 and r["maps"] == 0 and not r["active"]
    assert r["changed"] == []
    assert r["growth"] < 256 * 1024, r  # 20 cycles; each ring is 8 MiB outside the Python heap
    assert r["log_lines"] >= 46  # start + detach line per cycle


def test_late_orphaned_tracer_detaches_and_dormant_until_enabled(tmp_path):
    r, _ = run(LIVE + """
from profilemate_trace import late
import profilemate_trace.runtime as rt
snap = snapshot()
assert late.start(conf(%r, orphan_timeout_s="0.5")) == 0
tr = Tracer()
res = {"on_at_start": rt.ON}
serve(1)
res["dormant_records"] = sorted({x["_name"] for x in tr.read()} - {"process_info", "py_process", "py_patch_status", "log",
                                                                    "py_kv_config"})  # stream metadata, written at start
seq = tr.control(1, 1); tr.heartbeat(); t0 = time.monotonic()
res["enabled"] = tr.wait(lambda: tr.ack == seq and rt.ON)
serve(1)
res["enabled_records"] = len(by(tr.read(), "py_sched_step"))
# no more heartbeats: orphaned 0.5 s after the last one
res["detached"] = tr.wait(lambda: tr.state == 5 and not pm_threads(), timeout=5)
res["after_s"] = time.monotonic() - t0
res["ctl"] = [(x["enable"], x["reason"]) for x in by(tr.read(), "control_change")]
res["changed"] = [list(map(str, k)) for k in changed(snap, snapshot())]
print("RESULT " + json.dumps(res))
""" % str(tmp_path / "inject.conf"))
    assert not r["on_at_start"] and r["dormant_records"] == []  # start=none: dormant
    assert r["enabled"] and r["enabled_records"] > 0
    assert r["detached"] and 0.4 < r["after_s"] < 3
    assert r["ctl"] == [[3, 2]]  # detach, reason orphaned
    assert r["changed"] == []


def test_late_module_imported_after_start_is_patched_by_import_hook(tmp_path):
    r, _ = run("""
from profilemate_trace import late
import vllm.v1.core.sched.scheduler            # imported before: patched at once
snap = snapshot()
assert late.start(conf(%r, start="graph")) == 0
tr = Tracer()
import vllm.v1.core.block_pool as bp            # already imported by the scheduler module
import vllm.v1.worker.gpu.model_runner as m2     # not imported before the attach
from vllm.v1.core.sched.output import CachedRequestData, SchedulerOutput
res = {"v2_wrapped": getattr(m2.GPUModelRunner.execute_model, "__pm_wrapped__", False)}
m2.GPUModelRunner().execute_model(SchedulerOutput([], CachedRequestData(), {"a": 1}, 1))
res["v2_forward"] = len(by(tr.read(), "py_forward"))
assert late.stop()
res["v2_restored"] = not hasattr(m2.GPUModelRunner.execute_model, "__pm_wrapped__")
res["changed"] = [list(map(str, k)) for k in changed(snap, snapshot())]
print("RESULT " + json.dumps(res))
""" % str(tmp_path / "inject.conf"))
    assert r["v2_wrapped"] and r["v2_forward"] == 1 and r["v2_restored"] and r["changed"] == []


MOE = """
from types import SimpleNamespace
from vllm.v1.worker.gpu_model_runner import GPUModelRunner
from vllm.config.compilation import CUDAGraphMode
class Router:
    global_num_experts, top_k = 8, 2
    def select_experts(self, hidden_states, router_logits, topk_indices_dtype=None, *, input_ids=None):
        return None, None
class Model:
    def __init__(self):
        self.routers = [Router(), Router()]
    def named_modules(self):
        yield "", self
        for i, r in enumerate(self.routers):
            yield "model.layers.%d.mlp.experts" % i, SimpleNamespace(router=r, layer_name="model.layers.%d.mlp.experts" % i)
    def forward_tokens(self, n):
        pass
runner = GPUModelRunner(model_factory=Model)
runner.load_model()
"""


def test_late_moe_inside_captured_graphs_is_reported_not_zero(tmp_path):
    r, _ = run(MOE + """
runner.capture_model()                          # graphs captured before the attach
from profilemate_trace import late
import vllm.compilation.cuda_graph as cg
assert late.start(conf(%r, start="graph")) == 0
tr = Tracer()
recs = tr.read()
st = {x["text"].split(b"\\0")[0].decode(): (x["status"], x["text"].split(b"\\0")[1].decode()) for x in by(recs, "py_patch_status")}
res = {"moe": st["moe.v1_runner"], "capture": st["cudagraph.capture"],
       "logs": [(x["level"], x["text"].decode()) for x in by(recs, "log")],
       "router_wrapped": any("select_experts" in vars(r) for r in runner.model.routers),
       "call_wrapped": getattr(cg.CUDAGraphWrapper.__call__, "__pm_wrapped__", False)}
from vllm.v1.core.sched.output import CachedRequestData, SchedulerOutput
runner.execute_model(SchedulerOutput([], CachedRequestData(), {"a": 1, "b": 1}, 2))
recs = tr.read()
res["moe_records"] = [x["_name"] for x in recs if x["_name"].startswith("py_moe")]
res["replays"] = [x["exec_kind"] for x in by(recs, "py_graph_dispatch")]
late.stop()
print("RESULT " + json.dumps(res))
""" % str(tmp_path / "inject.conf"))
    reason = "expert counts unavailable: MoE layers run inside CUDA graphs captured before attach"
    assert r["moe"] == [2, reason]
    assert r["capture"][0] == 2 and r["capture"][1].startswith("CUDA graphs were captured before attach (")
    assert "CUDAGraphWrapper graph(s)" in r["capture"][1]
    assert any(lvl == 2 and reason in text and "2 MoE layers" in text for lvl, text in r["logs"])
    assert not r["router_wrapped"] and not r["call_wrapped"]
    assert r["moe_records"] == [] and r["replays"] == [2]  # a replay, no zero counts


def test_late_moe_without_graphs_counts_or_says_why(tmp_path):
    """No graph captured (eager): the live routers get counters where torch is importable;
    without torch (this interpreter) the patch says so."""
    r, _ = run(MOE + """
from profilemate_trace import late
assert late.start(conf(%r, start="graph")) == 0
recs = Tracer().read()
st = {x["text"].split(b"\\0")[0].decode(): (x["status"], x["text"].split(b"\\0")[1].decode()) for x in by(recs, "py_patch_status")}
late.stop()
print("RESULT " + json.dumps({"moe": st["moe.v1_runner"], "capture": st["cudagraph.capture"][0],
                              "torch": "torch" in sys.modules}))
""" % str(tmp_path / "inject.conf"))
    assert r["capture"] == 1  # nothing captured yet: the capture wrapper is installed
    if not r["torch"]:
        assert r["moe"] == [2, "expert counts unavailable: torch is not imported in this process"]


def test_late_start_with_import_time_hook_active_does_nothing(tmp_path):
    env = {"PYTHONPATH": os.pathsep.join([PYHOOK, FAKE]), "PROFILEMATE_PYHOOK_SPILL": "0",
           "PROFILEMATE_PYHOOK_QUIET": "1"}
    r, _ = run("""
import vllm.v1.core.block_pool as bp             # starts the import-time hook
import profilemate_trace.runtime as rt
from profilemate_trace import late
fn = bp.BlockPool.get_new_blocks
c = conf(%r)
print("RESULT " + json.dumps({"rc": late.start(c), "same": bp.BlockPool.get_new_blocks is fn, "mode": rt.mode(),
                              "log": open(c + ".log").read(), "late": late.active()}))
""" % str(tmp_path / "inject.conf"), env_extra=env)
    assert r["rc"] == 1 and r["same"] and not r["late"] and r["mode"] == "tracer"
    assert "import-time hook is already active" in r["log"]


def test_import_time_hook_treats_detach_as_dormant(tmp_path):
    """control_enable=3 is for injected producers; an import-time hook stops collecting, acks,
    and keeps its ring and patches (the import-time path is otherwise unchanged)."""
    env = {"PYTHONPATH": os.pathsep.join([PYHOOK, FAKE]), "PROFILEMATE_PYHOOK_SPILL": "0",
           "PROFILEMATE_PYHOOK_QUIET": "1"}
    r, _ = run("""
import vllm.v1.core.block_pool as bp
import profilemate_trace.runtime as rt
tr = Tracer(); tr.heartbeat()
seq = tr.control(1, 1)
on = tr.wait(lambda: tr.ack == seq and rt.ON)
seq = tr.control(3, 0)
off = tr.wait(lambda: tr.ack == seq and not rt.ON)
print("RESULT " + json.dumps({"on": on, "off": off, "state": tr.state, "threads": len(pm_threads()),
                              "patched": getattr(bp.BlockPool.get_new_blocks, "__pm_wrapped__", False)}))
""", env_extra=env)
    assert r == {"on": True, "off": True, "state": 1, "threads": 1, "patched": True}


def test_late_start_never_raises(tmp_path):
    r, _ = run("""
from profilemate_trace import late
import vllm.v1.core.block_pool as bp
fn = bp.BlockPool.get_new_blocks
print("RESULT " + json.dumps({"missing": late.start(%r), "active": late.active(), "same": bp.BlockPool.get_new_blocks is fn,
                              "threads": len(pm_threads()), "fds": pyhook_fds()}))
""" % str(tmp_path / "no-such.conf"))
    assert r == {"missing": -1, "active": False, "same": True, "threads": 0, "fds": []}


def test_late_finds_objects_no_stack_reaches(tmp_path):
    """A BlockPool held only by a function's defaults (no frame reaches it): found by the
    collector scan, so its py_kv_config is written."""
    r, _ = run("""
from vllm.v1.core.block_pool import BlockPool
def make():
    def keep(pool=BlockPool(6, False, 4)):
        return pool
    return keep
keep = make()
keep().get_new_blocks(2)
from profilemate_trace import late
assert late.start(conf(%r, start="graph")) == 0
tr = Tracer()
keep().get_new_blocks(1)
recs = tr.read()
late.stop()
print("RESULT " + json.dumps({"cfg": [json.loads(x["info"])["num_free_blocks_at_attach"] for x in by(recs, "py_kv_config")],
                              "alloc": [x["num_free"] for x in by(recs, "py_kv_blocks")]}))
""" % str(tmp_path / "inject.conf"))
    assert r == {"cfg": [3], "alloc": [2]}


# ---- real vLLM on the CPU -------------------------------------------------------------------
import pytest  # noqa: E402

from test_real_vllm import PYS  # noqa: E402


@pytest.mark.real_vllm
@pytest.mark.parametrize("py", PYS)
def test_real_vllm_late_start_detach_cycles_moe(py, tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PROFILEMATE_", "VLLM_PROFILING", "ENABLE_")) and k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", VLLM_LOGGING_LEVEL="ERROR")
    out = subprocess.run([py, os.path.join(HERE, "real", "late_real_vllm.py"), str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    r = json.loads([x for x in out.stdout.splitlines() if x.startswith("RESULT ")][-1][7:])
    print(json.dumps(r, indent=1))
    assert r["rc"] == 0 and r["rc_again"] == 1 and r["flags_state"] == [2, 1]
    assert r["start_ms"] < 1000
    # vLLM's own Scheduler / KVCacheManager / BlockPool, built and serving before the attach
    assert r["sched_steps"] == r["update_scopes"] == r["steps_after"] > 0
    assert r["kv_config"] == [[True, r["free_at_attach"]]]
    assert 1 in r["kv_ops"] and 2 in r["kv_ops"] and r["last_free_equals_vllm"]
    ev = r["events"]
    assert ev["req-2"][-1] == 7 and 1 not in ev["req-2"]  # in flight at the attach: finish only
    for k in ("req-10", "req-11", "req-12"):
        assert ev[k][:4] == [1, 2, 3, 4] and ev[k][-1] == 7, k
    assert r["patches"]["kv.block_pool"] == r["patches"]["scheduler.step"] == r["patches"]["scheduler.lifecycle"] == 1
    # detach: every vLLM class / module attribute is the original object again
    assert r["detached"] and r["tail"] == ["control_change", "py_hook_stats"]
    assert r["changed"] == [] and all(r["instances_clean"])
    assert r["fds_after"] == [] and r["maps_after"] == 0 and r["served_after_detach"] > 0
    # 20 start/detach cycles
    assert r["cycles_with_events"] == 20 and r["cycle_threads"] == 0 and r["cycle_fds"] == 0
    assert r["cycle_maps"] == 0 and r["cycle_changed"] == [] and r["cycle_growth"] < 256 * 1024
    # MoE counters on a live V1 runner's routers (no graph captured: eager), real torch
    if "moe_skipped" not in r:
        assert r["moe_status"] == [[1, ""]] and r["wrapped_at_start"] == [False, False]
        assert r["routers_wrapped"] == [True, True]  # at the first forward after the attach
        assert r["moe_counts"] == {"0": 8, "2": 8}  # 4 valid rows x top-2; padding rows not counted
        assert r["routers_restored"] == [True, True] and r["counters_after"] == 0
    else:
        assert r["vllm_version"].startswith("0.11."), r["moe_skipped"]  # numba missing there


def test_late_moe_graphs_captured_after_attach_before_first_forward(tmp_path):
    """Counters are made at the runner's first forward after the attach (its own thread); a
    capture in between turns the patch into the in-graph note instead."""
    r, _ = run(MOE + """
import types
sys.modules.setdefault("torch", types.ModuleType("torch"))  # importable torch; never reached
from profilemate_trace import late
import profilemate_trace.runtime as rt
assert late.start(conf(%r, start="graph")) == 0
st0 = [(p.status, p.reason) for p in rt._patches if p.name == "moe.v1_runner"]
runner.capture_model()                           # vLLM's startup capture, after the attach
from vllm.v1.core.sched.output import CachedRequestData, SchedulerOutput
runner.execute_model(SchedulerOutput([], CachedRequestData(), {"a": 1}, 1))
st1 = [(p.status, p.reason) for p in rt._patches if p.name == "moe.v1_runner"]
logs = [x["text"].decode() for x in by(Tracer().read(), "log")]
late.stop()
print("RESULT " + json.dumps({"st0": st0, "st1": st1, "wrapped": any("select_experts" in vars(r) for r in runner.model.routers),
                              "logs": logs}))
""" % str(tmp_path / "inject.conf"))
    assert r["st0"] == [[1, ""]]
    assert r["st1"] == [[2, "expert counts unavailable: MoE layers run inside CUDA graphs captured before attach"]]
    assert not r["wrapped"] and any("between the attach and the first forward" in x for x in r["logs"])


def test_late_start_and_detach_while_serving_on_another_thread(tmp_path):
    """The agent starts the hook from its own thread while vLLM's engine thread is serving;
    ten attach / detach cycles under load: the engine never sees an exception, every cycle
    records steps, and every attribute is the original afterwards."""
    r, _ = run(LIVE + """
from profilemate_trace import late
snap = snapshot()
c = conf(%r, start="graph")
state = {"stop": False, "errors": [], "steps": 0}
def engine():
    while not state["stop"]:
        try:
            state["steps"] += serve(1)
        except Exception as e:
            state["errors"].append(repr(e))
            break
th = threading.Thread(target=engine, name="engine"); th.start()
got = []
def attach_cycle():
    assert late.start(c) == 0
    tr = Tracer(); tr.heartbeat()
    time.sleep(0.1)
    got.append(len(by(tr.read(), "py_sched_step")))
    seq = tr.control(3, 0)
    assert tr.wait(lambda: tr.ack == seq and tr.state == 5 and not pm_threads())
for i in range(10):
    t = threading.Thread(target=attach_cycle, name="pm-pyboot"); t.start(); t.join()
    time.sleep(0.02)
state["stop"] = True; th.join()
print("RESULT " + json.dumps({"errors": state["errors"], "steps": state["steps"], "got": got,
                              "changed": [list(map(str, k)) for k in changed(snap, snapshot())],
                              "step_fn": ec.__dict__["step_fn"] is step_fn0}))
""" % str(tmp_path / "inject.conf"))
    assert r["errors"] == [] and r["steps"] > 0
    assert len(r["got"]) == 10 and all(n > 0 for n in r["got"]), r["got"]
    assert r["changed"] == [] and r["step_fn"]
