

def by(recs, name):
    return [r for r in recs if r["_name"] == name]


def so(nst, enc=None):
    from vllm.v1.core.sched.output import CachedRequestData, SchedulerOutput

    return SchedulerOutput([], CachedRequestData(), dict(nst), sum(nst.values()),
                           scheduled_encoder_inputs=enc or {})


def test_v1_capture_then_replay(hook):
    import vllm.compilation.cuda_graph as cg
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    rt = hook.rt
    orig_call = cg.CUDAGraphWrapper.__call__
    assert getattr(orig_call, "__pm_wrapped__", False)  # installed before capture
    r = GPUModelRunner()
    hook.drain()
    r.profile_cudagraph_memory()
    r.capture_model()
    recs = hook.drain()
    caps = by(recs, "py_graph_capture")
    # profile run: 2 pieces of the PIECEWISE graph for 16 tokens (throw-away, flag bit5)
    prof = [c for c in caps if c["flags"] & 32]
    assert [(c["runtime_mode"], c["num_tokens"]) for c in prof] == [(1, 16), (1, 16)]
    real = [c for c in caps if not c["flags"] & 32]
    # capture_model: PIECEWISE 8 and 4 (2 pieces each, first piece flagged bit6), FULL 4 and 2
    assert [(c["runtime_mode"], c["num_tokens"], bool(c["flags"] & 64)) for c in real] == [
        (1, 8, True), (1, 8, False), (1, 4, True), (1, 4, False), (2, 4, True), (2, 2, True)]
    full = [c for c in real if c["runtime_mode"] == 2]
    assert all(c["num_reqs"] == c["num_tokens"] and c["flags"] & 1 and c["source"] == 1 for c in full)
    assert all(c["end_ns"] >= c["start_ns"] for c in caps)
    assert b"BatchDescriptor(num_tokens=4, num_reqs=4, uniform=True" in full[0]["desc"]
    # warm-up / capture dispatch decisions are tagged capture (3) and dummy (bit4), step 0
    disp = by(recs, "py_graph_dispatch")
    assert disp and all(d["exec_kind"] == 3 and d["flags"] & 16 and d["step_id"] == 0 for d in disp)
    # after capture_model the per-piece wrapper is gone: replays cost nothing
    assert not getattr(cg.CUDAGraphWrapper.__call__, "__pm_wrapped__", False)

    # serving: one dispatch record per step, from _determine_batch_execution_and_padding only
    s0 = rt.worker_step
    r.execute_model(so({"a": 1, "b": 1, "c": 1}))         # uniform decode, 3 -> FULL 4
    r.execute_model(so({"a": 5, "b": 1}))                  # mixed 6 -> PIECEWISE 8
    r.execute_model(so({"a": 40}))                         # above capture sizes -> NONE
    d = hook.drain({"py_graph_dispatch"})
    assert [(x["runtime_mode"], x["num_tokens"], x["num_tokens_real"], x["num_reqs"], x["exec_kind"], x["source"])
            for x in d] == [(2, 4, 3, 4, 2, 1), (1, 8, 6, -1, 2, 1), (0, 40, 40, -1, 1, 1)]
    assert [x["step_id"] for x in d] == [s0 + 1, s0 + 2, s0 + 3]
    assert d[0]["flags"] & 1 and d[0]["flags"] & 8 and not d[1]["flags"] & 1
    assert d[0]["desc"].startswith(b"BatchDescriptor(")
    assert r.full.concrete_cudagraph_entries[r.cudagraph_dispatcher.dispatch(3, True)[1]].cudagraph.replays == 1


def test_v1_dispatcher_direct_and_lora(hook):
    from vllm.v1.cudagraph_dispatcher import CudagraphDispatcher

    disp = CudagraphDispatcher()
    hook.drain()
    disp.dispatch(3, uniform_decode=True, has_lora=True, num_active_loras=2)
    (d,) = hook.drain({"py_graph_dispatch"})
    assert d["source"] == 2 and d["num_active_loras"] == 2 and d["flags"] & 2 and d["num_tokens"] == 4
    assert b"num_active_loras=2" in d["desc"]


def test_namedtuple_descriptor():
    from profilemate_trace.patches._ctx import desc_info
    from vllm.forward_context import BatchDescriptorNT

    nt, nr, nl, utc, mql, flags, r, mode = desc_info(BatchDescriptorNT(16, True, True))
    assert (nt, nr, nl, utc, mql) == (16, -1, 0, -1, -1)
    assert flags & 1 and flags & 2 and not flags & 8
    assert r == b"BatchDescriptorNT(num_tokens=16, uniform_decode=True, has_lora=True)"


def test_v2_dispatch_and_capture(hook):
    from vllm.v1.worker.gpu.model_runner import GPUModelRunner

    r = GPUModelRunner()
    hook.drain()
    r.capture_model()
    caps = hook.drain({"py_graph_capture"})
    assert [(c["runtime_mode"], c["num_tokens"], c["num_reqs"], c["source"]) for c in caps] == [
        (2, 1, 1, 3), (2, 2, 2, 3)]
    assert all(c["flags"] & 4 for c in caps)
    r.execute_model(so({"a": 1, "b": 1}))
    r.execute_model(so({"a": 7}))
    d = hook.drain({"py_graph_dispatch"})
    assert [(x["runtime_mode"], x["num_tokens"], x["num_reqs"], x["uniform_token_count"], x["source"], x["exec_kind"])
            for x in d] == [(2, 2, 2, 1, 3, 2), (1, 8, -1, -1, 3, 2)]
    assert all(x["flags"] & 4 for x in d)
    assert d[0]["desc"].startswith(b"BatchExecutionDescriptor(cg_mode=")
    # direct manager dispatch (not under dispatch_cg_and_sync_dp) -> source 4
    r.cudagraph_manager.dispatch(1, 3, None, 0)
    (x,) = hook.drain({"py_graph_dispatch"})
    assert x["source"] == 4 and x["num_tokens"] == 4


def test_breakable_capture(hook):
    from vllm.compilation.breakable_cudagraph import BreakableCUDAGraphWrapper
    from vllm.config.compilation import CUDAGraphMode
    from vllm.forward_context import BatchDescriptor, set_forward_context

    w = BreakableCUDAGraphWrapper(lambda: 3)
    hook.drain()
    d = BatchDescriptor(8, 8, True)
    with set_forward_context(None, None, cudagraph_runtime_mode=CUDAGraphMode.FULL, batch_descriptor=d):
        w()
        w()
    (c,) = hook.drain({"py_graph_capture"})
    assert c["source"] == 2 and c["runtime_mode"] == 2 and c["num_tokens"] == 8


def test_v2_piecewise_capture_pieces_not_double_counted(hook):
    """V2 captures PIECEWISE descriptors by running CUDAGraphWrapper pieces inside the
    create_forward_fn call: one source-3 record per descriptor, none per piece."""
    import vllm.compilation.cuda_graph as cg
    from profilemate_trace import runtime as rt
    from vllm.config.compilation import CUDAGraphMode
    from vllm.forward_context import BatchDescriptor, set_forward_context
    from vllm.v1.worker.gpu.cudagraph_utils import BatchExecutionDescriptor, ModelCudaGraphManager

    p = [x for x in rt._patches if x.name == "cudagraph.capture"][0]
    # the wrapper was removed after an earlier capture_model; reinstall it for this check
    from profilemate_trace.patches import cudagraph as pc
    pc.install_wrapper(p, cg)
    p.on = True
    piece = cg.CUDAGraphWrapper(lambda: 1, None, CUDAGraphMode.PIECEWISE)

    def model(desc, mode):
        with set_forward_context(None, None, cudagraph_runtime_mode=mode, batch_descriptor=BatchDescriptor(8)):
            return piece()

    m = ModelCudaGraphManager()
    m.capture_descs = [BatchExecutionDescriptor(CUDAGraphMode.PIECEWISE, 8, None)]
    hook.drain()
    m.capture(model)
    caps = hook.drain({"py_graph_capture"})
    pc.capture_finished()
    assert [(c["source"], c["runtime_mode"], c["num_tokens"]) for c in caps] == [(3, 1, 8)]
