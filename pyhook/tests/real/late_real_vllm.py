"""Late start against REAL vLLM on the CPU: build vLLM's own Scheduler + KVCacheManager +
BlockPool, serve requests unpatched, then start the hook as the injector does
(``sys.path.insert(0, <pyhook>); from profilemate_trace import late; late.start(conf)``), check
that events flow from the live objects, detach through the ring's control word, and check that
every vLLM class and module attribute is the original object again. Then 20 start/detach cycles,
and MoE counters put on a live V1 runner's routers (eager: no graph captured) with real torch.

Run with a venv made by install_vllm_cpu.sh and NO PYTHONPATH (the import-time hook must not
be active); prints RESULT json. Argument: a scratch directory."""
import gc
import json
import os
import sys
import time
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
sys.path[:0] = [os.path.dirname(TESTS), TESTS, HERE]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from late_helpers import Tracer, changed, hook_free, memfd_mappings, pm_threads, pyhook_fds, snapshot  # noqa: E402


def by(recs, name):
    return [r for r in recs if r["_name"] == name]


def serve(s, reqs, max_steps=400):
    from vllm_objects import runner_output

    to_output = runner_output()
    for r in reqs:
        s.add_request(r)
    steps = 0
    while s.requests and steps < max_steps:
        steps += 1
        so = s.schedule()
        s.update_from_output(so, to_output(s, so))
    return steps


def write_conf(d, **kw):
    p = os.path.join(d, "inject.conf")
    kw.setdefault("log", p + ".log")
    with open(p, "w") as f:
        f.write("# written by the test as the injector would\n")
        for k, v in kw.items():
            f.write("%s=%s\n" % (k, v))
    return p


def main(scratch):
    from drive_real_vllm import build, make_request

    res = {"vllm_version": __import__("vllm").__version__}
    _cfg, s = build(num_blocks=12, block_size=16, max_tokens=64, max_seqs=4, prefix_caching=True)
    pool = s.kv_cache_manager.block_pool
    res["served_before"] = serve(s, [make_request(i, 20, 3) for i in range(2)])
    serve(s, [make_request(2, 24, 30)], max_steps=2)  # one request still running at the attach
    # every request made now: make_request re-initialises vLLM's NONE_HASH global
    later = [make_request(10 + i, 30 + 8 * i, 6) for i in range(3)]
    after = [make_request(20, 20, 2)]
    cyc = [make_request(100 + i, 20, 2) for i in range(20)]
    snap = snapshot()
    keys = {o: dict(vars(o)) for o in (s, s.kv_cache_manager, pool)}
    free_at_attach = pool.get_num_free_blocks()

    from profilemate_trace import late
    import profilemate_trace.runtime as rt

    conf = write_conf(scratch, start="graph", orphan_timeout_s=120)
    t0 = time.monotonic()
    res["rc"] = late.start(conf)
    res["start_ms"] = (time.monotonic() - t0) * 1e3
    res["rc_again"] = late.start(conf)
    tr = Tracer()
    tr.heartbeat()
    res["flags_state"] = [tr.flags, tr.state]
    steps = serve(s, later)
    recs = tr.read()
    res["steps_after"] = steps
    res["sched_steps"] = len(by(recs, "py_sched_step"))
    res["update_scopes"] = sum(1 for r in by(recs, "py_cpu_scope") if r["name"] == b"Scheduler.update_from_output")
    cfgs = [json.loads(r["info"]) for r in by(recs, "py_kv_config")]
    res["kv_config"] = [(c["attached_late"], c["num_free_blocks_at_attach"]) for c in cfgs]
    res["free_at_attach"] = free_at_attach
    kv = by(recs, "py_kv_blocks")
    res["kv_ops"] = sorted({r["op"] for r in kv})
    res["last_free_equals_vllm"] = bool(kv) and kv[-1]["num_free"] == pool.get_num_free_blocks()
    ev = {}
    for r in by(recs, "py_request_event"):
        ev.setdefault(r["req_id"].decode(), []).append(r["event"])
    res["events"] = ev
    res["patches"] = {p.name: p.status for p in rt._patches}
    res["logs"] = [r["text"].decode() for r in by(recs, "log")]

    seq = tr.control(3, 0)
    res["detached"] = tr.wait(lambda: tr.ack == seq and tr.state == 5 and not pm_threads(), timeout=5)
    res["tail"] = [r["_name"] for r in tr.read()]
    res["changed"] = [list(map(str, k)) for k in changed(snap, snapshot())]
    res["instances_clean"] = [hook_free(o, k) for o, k in keys.items()]
    res["fds_after"] = pyhook_fds(tr.own)
    tr.mm.close()
    res["maps_after"] = memfd_mappings()
    res["served_after_detach"] = serve(s, after)

    # 20 start / detach cycles (alternating the tracer's control word and late.stop)
    fds0 = len(os.listdir("/proc/self/fd"))
    gc.collect()
    tracemalloc.start()
    m0 = tracemalloc.get_traced_memory()[0]
    ok = 0
    for i in range(20):
        assert late.start(conf) == 0
        t = Tracer()
        t.heartbeat()
        serve(s, [cyc[i]])
        ok += bool(by(t.read(settle=0.06), "py_sched_step"))
        if i % 2:
            q = t.control(3, 0)
            assert t.wait(lambda: t.ack == q and t.state == 5 and not pm_threads())
        else:
            assert late.stop()
        t.mm.close()
    gc.collect()
    res["cycles_with_events"] = ok
    res["cycle_growth"] = tracemalloc.get_traced_memory()[0] - m0
    tracemalloc.stop()
    res["cycle_threads"] = len(pm_threads())
    res["cycle_fds"] = len(os.listdir("/proc/self/fd")) - fds0
    res["cycle_maps"] = memfd_mappings()
    res["cycle_changed"] = [list(map(str, k)) for k in changed(snap, snapshot())]
    res.update(moe(scratch))
    print("RESULT " + json.dumps(res, default=str))


def moe(scratch):
    """A live V1 runner whose model has MoE routers (vLLM's router shape; vLLM's own routers need
    CUDA kernels) and no captured graph: late start counts on the live routers."""
    import torch

    try:
        from vllm.v1.worker.gpu_model_runner import GPUModelRunner
    except ImportError as e:  # 0.11.0 on the CPU: numba (spec decode) is not installed
        return {"moe_skipped": "vllm.v1.worker.gpu_model_runner does not import here: %s" % e}

    from moe_counters import Model
    from profilemate_trace import late
    import profilemate_trace.runtime as rt

    out = {}
    runner = object.__new__(GPUModelRunner)  # load_model already ran: only .model matters here
    runner.model = Model(8, 2)
    routers = [runner.model.layers[0].mlp.experts.router, runner.model.layers[2].mlp.experts.router]
    conf = write_conf(scratch, start="graph", orphan_timeout_s=120)
    assert late.start(conf) == 0
    t = Tracer()
    out["moe_status"] = [(p.status, p.reason) for p in rt._patches if p.name == "moe.v1_runner"]
    out["wrapped_at_start"] = ["select_experts" in vars(r) for r in routers]
    from types import SimpleNamespace

    from profilemate_trace.patches import moe as pm
    from profilemate_trace.patches import worker as pw

    # the counters are made at the runner's next forward, on its own thread: run the
    # pre-forward listeners as GPUModelRunner.execute_model's wrapper does (4 real tokens)
    for fn in pw._pre_listeners:
        fn(runner, SimpleNamespace(total_num_scheduled_tokens=4))
    out["routers_wrapped"] = ["select_experts" in vars(r) for r in routers]

    c = pm._COUNTERS[0] if pm._COUNTERS else None
    if c is not None:
        torch.manual_seed(0)
        for r in routers:
            r.select_experts(None, torch.randn(6, 8))  # 4 real rows + 2 padding rows
        c.snapshot_start()
        c.snapshot_poll(force=True)
    recs = t.read()
    out["moe_counts"] = {r["layer_idx"]: sum(memoryview(r["counts"]).cast("Q")) for r in by(recs, "py_moe_expert_counts")}
    assert late.stop()
    out["routers_restored"] = ["select_experts" not in vars(r) for r in routers]
    out["counters_after"] = len(pm._COUNTERS)
    t.mm.close()
    return out


if __name__ == "__main__":
    main(sys.argv[1])
