"""Drive a REAL vLLM Scheduler + KVCacheManager + BlockPool (and the real CudagraphDispatcher)
on the CPU with the hook active (activated exactly as users do: PYTHONPATH=<repo>/pyhook), and
compare what the hook recorded with vLLM's own SchedulerStats and EngineCore events.

Run with the venv made by install_vllm_cpu.sh; prints one JSON line with the comparison.
No model download: the model config is a tiny local config.json (HF_HUB_OFFLINE=1).
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
from profilemate_trace.decode import decode  # noqa: E402

import profilemate_trace.runtime as rt  # noqa: E402  (already active via sitecustomize)

sys.path.insert(0, HERE)
from vllm_objects import _params, build, make_request, runner_output  # noqa: E402  (late_real_vllm and test_snapshot import them from here)


def drive():
    from vllm.v1.engine import EngineCoreEventType

    to_output = runner_output()
    vllm_config, s = build(num_blocks=12, block_size=16, max_tokens=64, max_seqs=4, prefix_caching=True)
    # (the BlockPool's py_kv_config record was written during build: keep it)
    reqs = [make_request(i, 40 + 8 * i, 24) for i in range(4)]
    for r in reqs:
        s.add_request(r)
    vllm_usage, vllm_events, finish = [], {}, {}
    running_after_schedule = []
    steps = 0
    while s.requests and steps < 400:
        steps += 1
        so = s.schedule()
        running_after_schedule.append(s.get_request_counts())
        outs = s.update_from_output(so, to_output(s, so))
        stats = None
        for eco in outs.values():
            if eco.scheduler_stats is not None:
                stats = eco.scheduler_stats
            for o in eco.outputs:
                for ev in (o.events or ()):
                    vllm_events.setdefault(o.request_id, []).append(EngineCoreEventType(ev.type).name)
                if o.finish_reason is not None:
                    finish[o.request_id] = str(o.finish_reason)
        vllm_usage.append(stats.kv_cache_usage if stats is not None else None)
    recs = decode((rt.flush(), rt.RING.read_available())[1])
    return vllm_config, s, recs, vllm_usage, vllm_events, finish, running_after_schedule, steps


def dispatcher(vllm_config):
    from vllm.config.compilation import CUDAGraphMode
    from vllm.forward_context import BatchDescriptor
    from vllm.v1.cudagraph_dispatcher import CudagraphDispatcher

    cc = vllm_config.compilation_config
    cc.cudagraph_capture_sizes = [1, 2, 4, 8]
    cc.max_cudagraph_capture_size = 8
    try:
        from vllm.config.compilation import CompilationMode

        cc.mode = CompilationMode.NONE
    except ImportError:  # vLLM 2025: CompilationLevel; FULL needs no piecewise compilation
        pass
    cc.cudagraph_mode = CUDAGraphMode.FULL
    d = CudagraphDispatcher(vllm_config)
    d.initialize_cudagraph_keys(CUDAGraphMode.FULL, uniform_decode_query_len=1)
    old_api = "batch_descriptor" in _params(d.dispatch)  # 2025: dispatch(BatchDescriptor) on padded sizes
    (rt.flush(), rt.RING.read_available())[1]
    got = []
    for n, uni in ((3, True), (8, True), (5, False), (20, True)):
        if old_api:
            pad = next((c for c in (1, 2, 4, 8) if c >= n), n)
            mode, desc = d.dispatch(BatchDescriptor(num_tokens=pad, uniform_decode=uni))
            if desc is None:
                desc = BatchDescriptor(num_tokens=pad, uniform_decode=uni)
        else:
            mode, desc = d.dispatch(n, uniform_decode=uni)
        got.append((int(mode.value), desc.num_tokens, getattr(desc, "num_reqs", None), repr(desc)))
    recs = [r for r in decode((rt.flush(), rt.RING.read_available())[1]) if r["_name"] == "py_graph_dispatch"]
    return got, recs


def main():
    out = {"vllm_version": __import__("vllm").__version__}
    vllm_config, s, recs, usage, vev, finish, counts, steps = drive()
    out["steps"] = steps
    kv_cfg = [r for r in recs if r["_name"] == "py_kv_config"]
    out["kv_config"] = [(r["num_gpu_blocks"], r["block_size"], r["enable_caching"]) for r in kv_cfg]
    total = kv_cfg[-1]["num_gpu_blocks"]
    # hook usage after each update_from_output = last kv record's num_free before the scope ended
    hook_usage = []
    last_free = None
    for r in recs:
        if r["_name"] == "py_kv_blocks":
            last_free = r["num_free"]
        elif r["_name"] == "py_cpu_scope" and r["name"] == b"Scheduler.update_from_output":
            hook_usage.append(None if last_free is None else 1.0 - last_free / (total - 1))
    out["usage_steps_compared"] = len(usage)
    out["usage_mismatch"] = [(i, a, b) for i, (a, b) in enumerate(zip(usage, hook_usage))
                             if a is None or b is None or abs(a - b) > 1e-12]
    out["usage_len_equal"] = len(usage) == len(hook_usage)
    out["max_usage"] = max(u for u in usage if u is not None)
    sched = [r for r in recs if r["_name"] == "py_sched_step"]
    out["sched_steps"] = len(sched)
    out["running_waiting_match"] = [(r["num_running"], r["num_waiting"]) for r in sched] == [tuple(c) for c in counts]
    out["limits"] = sorted({(r["max_num_batched_tokens"], r["max_num_seqs"]) for r in sched})
    pre = [r for r in recs if r["_name"] == "py_preempt"]
    out["hook_preemptions"] = len(pre)
    out["hook_preempt_reasons"] = sorted({r["reason"] for r in pre})
    out["vllm_preemptions"] = sum(e.count("PREEMPTED") for e in vev.values())
    out["vllm_request_num_preemptions"] = sum(r.num_preemptions for r in [])  # requests freed; kept in events
    ev = {}
    for r in recs:
        if r["_name"] == "py_request_event":
            ev.setdefault(r["req_id"].decode(), []).append(r["event"])
    names = {1: "ARRIVAL", 2: "QUEUED", 3: "SCHEDULED", 4: "FIRST_TOKEN", 5: "PREEMPTED", 6: "RESUMED", 7: "FINISHED"}
    out["hook_lifecycle"] = {k: [names[x] for x in v] for k, v in sorted(ev.items())}
    out["vllm_events"] = {k: v for k, v in sorted(vev.items())}
    # vLLM's events: QUEUED, then SCHEDULED for each (re)admission, PREEMPTED per preemption
    out["lifecycle_match"] = all(
        v.count("QUEUED") == ev[k].count(2)
        and v.count("SCHEDULED") == ev[k].count(3) + ev[k].count(6)
        and v.count("PREEMPTED") == ev[k].count(5)
        for k, v in vev.items())
    out["finished"] = {k: v for k, v in sorted(finish.items())}
    fin = [r for r in recs if r["_name"] == "py_request_event" and r["event"] == 7]
    out["hook_finished_detail"] = sorted({r["detail"] for r in fin})
    out["hook_finished_count"] = len(fin)
    alloc = sum(len(r["block_ids"]) // 4 for r in recs if r["_name"] == "py_kv_blocks" and r["op"] == 1)
    out["blocks_allocated"] = alloc
    out["kv_ops"] = sorted({r["op"] for r in recs if r["_name"] == "py_kv_blocks"})
    out["final_free_equals_vllm"] = last_free == s.kv_cache_manager.block_pool.get_num_free_blocks()
    got, drecs = dispatcher(vllm_config)
    out["dispatch_vllm"] = got
    out["dispatch_hook"] = [(r["runtime_mode"], r["num_tokens"], r["num_reqs"], r["desc"].decode()) for r in drecs]
    out["patches"] = {p.name: p.status for p in rt._patches}
    from vllm.v1.core.block_pool import BlockPool
    from vllm.v1.core.sched.scheduler import Scheduler

    out["has_preempt_request"] = hasattr(Scheduler, "_preempt_request")
    out["touch_signature"] = str(__import__("inspect").signature(BlockPool.touch))
    print("RESULT " + json.dumps(out, default=str))


if __name__ == "__main__":
    main()
