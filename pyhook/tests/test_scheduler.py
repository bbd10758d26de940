def by(recs, name):
    return [r for r in recs if r["_name"] == name]


def run_until_done(s, runner=None, limit=100):
    for _ in range(limit):
        if not s.requests:
            return
        so = s.schedule()
        if runner is not None:
            runner.execute_model(so)
        s.update_from_output(so, None)
    raise AssertionError("did not finish")


def test_schedule_steps_preemption_lifecycle(hook):
    from vllm.v1.request import Request
    from vllm.v1.core.sched.scheduler import Scheduler

    rt = hook.rt
    s = Scheduler(num_blocks=7, block_size=4, max_num_batched_tokens=16, max_num_seqs=4)
    hook.drain()
    step0 = rt.sched_step
    reqs = [Request("r%d" % i, [1] * 8, max_tokens=6) for i in range(3)]
    for r in reqs:
        s.add_request(r)
    run_until_done(s)
    recs = hook.drain()
    steps = by(recs, "py_sched_step")
    assert [r["step_id"] for r in steps] == list(range(step0 + 1, step0 + 1 + len(steps)))
    assert all(r["max_num_batched_tokens"] == 16 and r["max_num_seqs"] == 4 for r in steps)
    assert all(r["scheduled_tokens"] <= 16 for r in steps)
    # first step: two prompts of 8 fill the 16-token budget
    assert steps[0]["scheduled_tokens"] == 16 and steps[0]["scheduled_reqs"] == 2
    assert steps[0]["num_prefill_reqs"] == 2 and steps[0]["num_decode_reqs"] == 0
    assert steps[0]["num_new_reqs"] == 2 and steps[0]["num_waiting"] == 1 and steps[0]["num_running"] == 2
    assert steps[0]["kv_num_free"] == 2
    # 6 usable blocks of 4 tokens cannot hold 2 requests growing to 14 tokens: preemption
    pre = by(recs, "py_preempt")
    assert len(pre) == s.num_preempted_total > 0
    assert all(p["reason"] == 1 for p in pre)
    assert sum(r["num_preempted"] for r in steps) == len(pre)
    # decode steps exist and are classified as decode
    assert any(r["num_decode_reqs"] > 0 and r["num_prefill_reqs"] == 0 for r in steps)
    # lifecycle: every request arrives, is queued, scheduled, gets a first token, finishes
    ev = {}
    for r in by(recs, "py_request_event"):
        ev.setdefault(r["req_id"].decode(), []).append(r["event"])
    for rid in ("r0", "r1", "r2"):
        e = ev[rid]
        assert e[:3] == [1, 2, 3], e
        assert 4 in e and e[-1] == 7
        assert e.count(5) == e.count(6)  # every preemption resumed
    npre = sum(e.count(5) for e in ev.values())
    assert npre == len(pre)
    fin = [r for r in by(recs, "py_request_event") if r["event"] == 7]
    assert all(r["detail"] == 2 and r["num_output_tokens"] == 6 for r in fin)
    # preempt record carries the lost work and the request hash
    from profilemate_trace.runtime import fnv1a64

    assert all(p["req_hash"] == fnv1a64(p["req_id"].decode()) for p in pre)
    assert any(p["num_computed_tokens"] > 0 for p in pre)
    # update_from_output scopes
    sc = [r for r in by(recs, "py_cpu_scope") if r["name"] == b"Scheduler.update_from_output"]
    assert len(sc) == len(steps) and all(r["scope"] == 5 and r["end_ns"] >= r["start_ns"] for r in sc)


def test_abort_and_reset_prefix_cache_reason(hook):
    from vllm.v1.request import Request, RequestStatus
    from vllm.v1.core.sched.scheduler import Scheduler

    s = Scheduler(num_blocks=20, block_size=4, max_num_batched_tokens=64, max_num_seqs=4)
    for i in range(2):
        s.add_request(Request("x%d" % i, [1] * 4, max_tokens=50))
    so = s.schedule()
    s.update_from_output(so, None)
    hook.drain()
    s.reset_prefix_cache(reset_running_requests=True)
    recs = hook.drain()
    pre = by(recs, "py_preempt")
    assert len(pre) == 2 and all(p["reason"] == 2 for p in pre)
    s.finish_requests(["x0", "x1"], RequestStatus.FINISHED_ABORTED)
    fin = [r for r in hook.drain({"py_request_event"}) if r["event"] == 7]
    assert sorted(r["req_id"] for r in fin) == [b"x0", b"x1"] and all(r["detail"] == 3 for r in fin)


def test_engine_step_scope(hook):
    from vllm.v1.request import Request
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.engine.core import EngineCore
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    s = Scheduler(num_blocks=20, block_size=4, max_num_batched_tokens=64, max_num_seqs=4)
    s.add_request(Request("e0", [1] * 4, max_tokens=2))
    ec = EngineCore(s, GPUModelRunner())
    hook.drain()
    ec.step_fn()
    recs = hook.drain()
    sc = [r for r in by(recs, "py_cpu_scope") if r["scope"] == 7]
    assert len(sc) == 1 and sc[0]["name"] == b"EngineCore.step"
    (st,) = by(recs, "py_sched_step")
    (fw,) = by(recs, "py_forward")
    assert sc[0]["start_ns"] <= st["start_ns"] <= fw["start_ns"] <= sc[0]["end_ns"]
    assert fw["phase"] == 1 and fw["num_tokens"] == 4 and fw["num_prefill_reqs"] == 1
