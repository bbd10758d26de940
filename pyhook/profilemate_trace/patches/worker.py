"""Model-runner side: forward passes, CPU scopes, encoder timing
(ENABLE_FORWARD_PASS_TIMING, ENABLE_CPU_TIMING, ENABLE_ENCODER_DECODER_TIMING).

V1: vllm.v1.worker.gpu_model_runner.GPUModelRunner.execute_model / sample_tokens /
    _prepare_inputs / _execute_mm_encoder
V2: vllm.v1.worker.gpu.model_runner.GPUModelRunner.execute_model / sample_tokens /
    prepare_inputs; vllm.v1.worker.gpu.mm.encoder_runner.EncoderRunner.execute_mm_encoder
vLLM's own record_function_or_nullcontext scopes (vllm.v1.utils._PROFILER_FUNC) when
PROFILEMATE_PYHOOK_VLLM_SCOPES=1.
"""

import sys

from .. import runtime as rt
from ._ctx import classify, phase_of
from .base import Patch

_mono = rt._mono
_listeners = []      # callables(runner, step) run after each forward (MoE read-back)
_pre_listeners = []  # callables(runner, scheduler_output) run before each forward


def _forward(p, runner_kind):
    def make(orig):
        def w(self, scheduler_output=None, *a, **kw):
            if not rt.ON or not (p.on or _listeners):
                return orig(self, scheduler_output, *a, **kw)
            dummy = bool(kw.get("dummy_run", False))
            if not dummy:
                rt.worker_step += 1
            step = 0 if dummy else rt.worker_step
            if _pre_listeners and not dummy:
                for fn in _pre_listeners:
                    try:
                        fn(self, scheduler_output)
                    except Exception as e:
                        rt.report_once("pre-listener", "pre-forward listener failed: %r" % (e,))
            t0 = _mono()
            flags = 2 if dummy else 0
            try:
                r = orig(self, scheduler_output, *a, **kw)
            except BaseException:
                flags |= 1
                _emit_fwd(p, scheduler_output, step, t0, flags, runner_kind)
                raise
            _emit_fwd(p, scheduler_output, step, t0, flags, runner_kind)
            if _listeners and not dummy:
                for fn in _listeners:
                    try:
                        fn(self, step)
                    except Exception as e:
                        rt.report_once("listener", "post-forward listener failed: %r" % (e,))
            return r
        return w
    return make


def _emit_fwd(p, so, step, t0, flags, runner_kind):
    if not p.on:
        return
    t1 = _mono()
    try:
        n, total, pre, ptok, dec, dtok = classify(so) if so is not None else (0, 0, 0, 0, 0, 0)
        rt.emit_forward((t0, t1, step, rt._tid(), phase_of(pre, dec), rt.u32(total), n, pre, rt.u32(ptok), dec,
                         rt.u32(dtok), runner_kind, flags))
    except Exception as e:
        p.fail(e)


def _scope(p, scope_id, name_b):
    def make(orig):
        def w(*a, **kw):
            if not (rt.ON and p.on):
                return orig(*a, **kw)
            t0 = _mono()
            r = orig(*a, **kw)
            try:
                rt.emit_scope(t0, _mono(), rt.worker_step, scope_id, name_b)
            except Exception as e:
                p.fail(e)
            return r
        return w
    return make


# ---- encoder ------------------------------------------------------------------------------
_pending_enc = []   # (start, end, step, nitems, runner, ev0, ev1) waiting for CUDA events


def _resolve_pending(force=False):
    keep = []
    for item in _pending_enc:
        s, e, step, n, runner, ev0, ev1 = item
        gpu = 0
        try:
            if ev1.query():
                gpu = int(ev0.elapsed_time(ev1) * 1e6)
            elif not force:
                keep.append(item)
                continue
        except Exception:
            gpu = 0
        rt.emit_encoder(s, e, gpu, step, n, runner)
    _pending_enc[:] = keep


def _encoder(p, runner_kind, count):
    def make(orig):
        def w(self, *a, **kw):
            if not (rt.ON and p.on):
                return orig(self, *a, **kw)
            ev0 = ev1 = None
            torch = sys.modules.get("torch")
            use_ev = rt.CFG is not None and rt.CFG.USE_CUDA_EVENTS
            try:
                if _pending_enc:
                    _resolve_pending()
                if use_ev and torch is not None and torch.cuda.is_available() and \
                        not torch.cuda.is_current_stream_capturing():
                    ev0 = torch.cuda.Event(enable_timing=True)
                    ev1 = torch.cuda.Event(enable_timing=True)
                    ev0.record()
            except Exception as e:
                ev0 = ev1 = None
                p.fail(e)
            t0 = _mono()
            r = orig(self, *a, **kw)
            t1 = _mono()
            try:
                n = count(a, kw)
                if ev0 is not None:
                    ev1.record()
                    _pending_enc.append((t0, t1, rt.worker_step, n, runner_kind, ev0, ev1))
                else:
                    rt.emit_encoder(t0, t1, 0, rt.worker_step, n, runner_kind)
            except Exception as e:
                p.fail(e)
            return r
        return w
    return make


def _count_v1(a, kw):
    so = a[0] if a else kw.get("scheduler_output")
    sei = getattr(so, "scheduled_encoder_inputs", None) or {}
    return sum(len(v) for v in sei.values())


def _count_v2(a, kw):
    mm = a[0] if a else kw.get("mm_kwargs")
    try:
        return len(mm)
    except TypeError:
        return 0


# ---- installers -----------------------------------------------------------------------
def reset():
    """Late detach: drop the listeners and pending encoder events of this session."""
    del _listeners[:]
    del _pre_listeners[:]
    del _pending_enc[:]


def _install_runner(p_fwd, p_cpu, p_enc, mod, kind):
    cls = getattr(mod, "GPUModelRunner", None)
    if cls is None or not hasattr(cls, "execute_model"):
        return "%s has no GPUModelRunner.execute_model" % mod.__name__
    if p_fwd is not None:
        p_fwd.wrap(cls, "execute_model", _forward(p_fwd, kind))
    if p_cpu is not None:
        if hasattr(cls, "sample_tokens"):
            p_cpu.wrap(cls, "sample_tokens", _scope(p_cpu, 4, b"GPUModelRunner.sample_tokens"))
        prep = "_prepare_inputs" if kind == 1 else "prepare_inputs"
        if hasattr(cls, prep):
            p_cpu.wrap(cls, prep, _scope(p_cpu, 2, ("GPUModelRunner." + prep).encode()))
    if p_enc is not None and kind == 1:
        if not hasattr(cls, "_execute_mm_encoder"):
            return "GPUModelRunner._execute_mm_encoder not found"
        p_enc.wrap(cls, "_execute_mm_encoder", _encoder(p_enc, 1, _count_v1))
    return None


def install_vllm_scopes(p, mod):
    if not (rt.CFG is not None and rt.CFG.VLLM_SCOPES):
        return (3, "PROFILEMATE_PYHOOK_VLLM_SCOPES=0 (set 1 to record vLLM's record_function scopes)")
    if not hasattr(mod, "_PROFILER_FUNC") or not hasattr(mod, "record_function_or_nullcontext"):
        return "vllm.v1.utils._PROFILER_FUNC not found"
    prev = orig0 = mod._PROFILER_FUNC
    if prev is None:
        try:
            mod.record_function_or_nullcontext("profilemate:init")
            prev = mod._PROFILER_FUNC
        except Exception:
            prev = None
    import contextlib

    if prev is contextlib.nullcontext:
        prev = None
    SCOPE = {"preprocess": 2, "forward": 3, "sample": 4, "postprocess": 6, "bookkeep": 6,
             "process_outputs": 5, "draft": 9}
    names = {}

    class _Scope:
        __slots__ = ("name", "t0", "inner")

        def __init__(self, name):
            self.name = name
            self.inner = prev(name) if prev is not None else None

        def __enter__(self):
            if self.inner is not None:
                self.inner.__enter__()
            self.t0 = _mono()
            return self

        def __exit__(self, *exc):
            t1 = _mono()
            if rt.ON and p.on:
                try:
                    ent = names.get(self.name)
                    if ent is None:
                        tail = self.name.rsplit(":", 1)[-1].strip()
                        sid = 1 if self.name.startswith("schedule") else SCOPE.get(tail, 9)
                        ent = names[self.name] = (sid, self.name.encode())
                    rt.emit_scope(self.t0, t1, rt.worker_step, ent[0], ent[1])
                except Exception as e:
                    p.fail(e)
            if self.inner is not None:
                return self.inner.__exit__(*exc)
            return False

    mod._PROFILER_FUNC = _Scope
    p.restore.append((mod, "_PROFILER_FUNC", orig0, True, _Scope))
    return None


def patches():
    pf1 = Patch("forward.v1", "vllm.v1.worker.gpu_model_runner", "ENABLE_FORWARD_PASS_TIMING", None)
    pc1 = Patch("cpu.v1_runner", "vllm.v1.worker.gpu_model_runner", "ENABLE_CPU_TIMING", None)
    pe1 = Patch("encoder.v1", "vllm.v1.worker.gpu_model_runner", "ENABLE_ENCODER_DECODER_TIMING", None)
    pf2 = Patch("forward.v2", "vllm.v1.worker.gpu.model_runner", "ENABLE_FORWARD_PASS_TIMING", None)
    pc2 = Patch("cpu.v2_runner", "vllm.v1.worker.gpu.model_runner", "ENABLE_CPU_TIMING", None)
    pf1.installer = lambda p, m: _install_runner(p, None, None, m, 1)
    pc1.installer = lambda p, m: _install_runner(None, p, None, m, 1)
    pe1.installer = lambda p, m: _install_runner(None, None, p, m, 1)
    pf2.installer = lambda p, m: _install_runner(p, None, None, m, 2)
    pc2.installer = lambda p, m: _install_runner(None, p, None, m, 2)

    def inst_enc2(p, mod):
        cls = getattr(mod, "EncoderRunner", None)
        if cls is None or not hasattr(cls, "execute_mm_encoder"):
            return "EncoderRunner.execute_mm_encoder not found"
        p.wrap(cls, "execute_mm_encoder", _encoder(p, 2, _count_v2))
        return None

    return [pf1, pc1, pe1, pf2, pc2,
            Patch("encoder.v2", "vllm.v1.worker.gpu.mm.encoder_runner", "ENABLE_ENCODER_DECODER_TIMING", inst_enc2),
            Patch("cpu.vllm_scopes", "vllm.v1.utils", "ENABLE_CPU_TIMING", install_vllm_scopes)]
