def by(recs, name):
    return [r for r in recs if r["_name"] == name]


def so(nst, enc=None, spec=None):
    from vllm.v1.core.sched.output import CachedRequestData, SchedulerOutput

    return SchedulerOutput([], CachedRequestData(), dict(nst), sum(nst.values()),
                           scheduled_spec_decode_tokens=spec or {}, scheduled_encoder_inputs=enc or {})


def test_forward_phases_and_scopes_v1(hook):
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    r = GPUModelRunner()
    hook.drain()
    s0 = hook.rt.worker_step
    r.execute_model(so({"a": 7, "b": 3}))
    r.execute_model(so({"a": 1, "b": 1, "c": 1}))
    r.execute_model(so({"a": 1, "b": 9}))
    r.execute_model(so({"a": 3}, spec={"a": [5, 6]}))   # 1 + 2 speculative tokens: decode
    r.sample_tokens(None)
    recs = hook.drain()
    fw = by(recs, "py_forward")
    assert [(f["phase"], f["num_tokens"], f["num_reqs"], f["num_prefill_reqs"], f["num_prefill_tokens"],
             f["num_decode_reqs"], f["num_decode_tokens"], f["runner"], f["step_id"]) for f in fw] == [
        (1, 10, 2, 2, 10, 0, 0, 1, s0 + 1), (2, 3, 3, 0, 0, 3, 3, 1, s0 + 2),
        (3, 10, 2, 1, 9, 1, 1, 1, s0 + 3), (2, 3, 1, 0, 0, 1, 3, 1, s0 + 4)]
    sc = by(recs, "py_cpu_scope")
    names = [x["name"] for x in sc]
    assert names.count(b"GPUModelRunner._prepare_inputs") == 4
    assert names.count(b"GPUModelRunner.sample_tokens") == 1
    prep = [x for x in sc if x["name"] == b"GPUModelRunner._prepare_inputs"]
    assert all(x["scope"] == 2 for x in prep)
    assert [x["step_id"] for x in prep] == [s0 + 1, s0 + 2, s0 + 3, s0 + 4]
    assert fw[0]["start_ns"] <= prep[0]["start_ns"] <= prep[0]["end_ns"] <= fw[0]["end_ns"]


def test_encoder_v1_v2(hook):
    from vllm.v1.worker.gpu.model_runner import GPUModelRunner as R2
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner as R1

    hook.drain()
    R1().execute_model(so({"a": 20}, enc={"a": [0, 1]}))
    R2().execute_model(so({"a": 20}, enc={"a": [0, 1, 2]}))
    recs = hook.drain()
    enc = by(recs, "py_encoder")
    assert [(e["runner"], e["num_items"], e["gpu_ns"]) for e in enc] == [(1, 2, 0), (2, 3, 0)]
    fw = by(recs, "py_forward")
    assert fw[0]["start_ns"] <= enc[0]["start_ns"] <= enc[0]["end_ns"] <= fw[0]["end_ns"]
    assert enc[0]["step_id"] == fw[0]["step_id"]
    # V1 encoder-decoder steps may not use FULL graphs
    d = by(recs, "py_graph_dispatch")
    assert d[0]["runtime_mode"] != 2


def test_vllm_record_function_scopes(hook):
    import vllm.v1.utils as u

    hook.drain()
    with u.record_function_or_nullcontext("gpu_model_runner: sample"):
        pass
    with u.record_function_or_nullcontext("schedule: allocate_slots"):
        pass
    sc = hook.drain({"py_cpu_scope"})
    assert [(x["scope"], x["name"]) for x in sc] == [(4, b"gpu_model_runner: sample"),
                                                      (1, b"schedule: allocate_slots")]


def test_patch_status_records(hook):
    from profilemate_trace import runtime as rt

    st = {p.name: p.status for p in rt._patches}
    for n in ("kv.block_pool", "scheduler.step", "scheduler.lifecycle", "cudagraph.v1_runner",
              "cudagraph.v1_dispatcher", "cudagraph.v2_runner", "cudagraph.v2_manager", "cudagraph.capture",
              "cudagraph.breakable_capture", "forward.v1", "forward.v2", "cpu.v1_runner", "cpu.v2_runner",
              "encoder.v1", "encoder.v2", "cpu.engine_step", "cpu.vllm_scopes", "moe.v1_runner", "moe.v2_runner"):
        assert st.get(n) == 1, (n, st.get(n))
