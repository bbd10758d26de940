"""CUDA-graph dispatch decisions, capture vs replay, capture time (ENABLE_CUDA_GRAPH_TRACKING).

Targets (all optional, each reported on its own):
  V1  vllm.v1.worker.gpu_model_runner.GPUModelRunner._determine_batch_execution_and_padding
      (final per-step decision, Nov 2025+), CudagraphDispatcher.dispatch (older runners and
      direct callers), _dummy_run / capture_model / profile_cudagraph_memory (phase tags)
  V2  vllm.v1.worker.gpu.model_runner.dispatch_cg_and_sync_dp (module attribute, imported
      by name), CudaGraphManager.dispatch / capture
  captures: vllm.compilation.cuda_graph.CUDAGraphWrapper.__call__ (installed until the
      runner's capture_model returns, then removed so replays cost nothing),
      vllm.compilation.breakable_cudagraph.BreakableCUDAGraphWrapper._capture
"""

import inspect
import sys

from .. import runtime as rt
from ._ctx import TL, desc_info, mode_val
from .base import Patch

_mono = rt._mono


# captures made while the hook was dormant (rt.ON false): kept here, emitted with flag bit7 at
# every dormant -> collecting transition (runtime.emit_snapshot); throw-away captures
# (profile_cudagraph_memory, bit5) are not kept: those graphs no longer exist
SNAPSHOT_FLAG = 128
_DORMANT_CAPS = []
_DORMANT_MAX = 4096
_dormant_dropped = [0]


def _capture(t0, t1, mode, nt, nr, nl, flags, source, rb):
    """One captured graph: a py_graph_capture record now, or, while dormant, kept for the
    snapshot at the next enable (captures happen once, at start-up, before any attach)."""
    if rt.ON:
        rt.emit_capture(t0, t1, mode, nt, nr, nl, flags, source, rb)
    elif not flags & 32:
        if len(_DORMANT_CAPS) < _DORMANT_MAX:
            _DORMANT_CAPS.append((t0, t1, rt._tid(), mode, nt, nr, nl, flags, source, rb))
        else:
            _dormant_dropped[0] += 1


def snapshot():
    """py_graph_capture for each graph captured while dormant (original CPU start/end and
    thread; flags | SNAPSHOT_FLAG). Kept for a later enable too (a second attach re-emits)."""
    for t0, t1, tid, mode, nt, nr, nl, flags, source, rb in list(_DORMANT_CAPS):
        rt.emit_capture(t0, t1, mode, nt, nr, nl, flags | SNAPSHOT_FLAG, source, rb, tid)
    if _dormant_dropped[0]:
        rt.emit_log(2, "cudagraph: %d capture(s) made while dormant beyond the first %d are not described"
                    % (_dormant_dropped[0], _DORMANT_MAX))
    return len(_DORMANT_CAPS)


def _kind(mode):
    if mode == 0:
        return 1
    if getattr(TL, "capturing", False):
        return 3
    return 2


def _emit(mode_obj, desc, nreal, source, v2):
    nt, nr, nl, utc, mql, flags, r, dmode = desc_info(desc)
    mode = mode_val(mode_obj if mode_obj is not None else dmode)
    dummy = getattr(TL, "dummy", False)
    if dummy:
        flags |= 16
    if getattr(TL, "profile_cg", False):
        flags |= 32
    if v2:
        flags |= 4
    rt.emit_dispatch(0 if dummy else rt.worker_step, mode, nt, rt.u32(nreal), nr, nl, utc, mql, flags,
                     _kind(mode), source, r)


def _flag_ctx(p, owner, attr, name, value=True, after=None):
    def make(orig):
        def w(*a, **kw):
            old = getattr(TL, name, False)
            setattr(TL, name, value)
            try:
                return orig(*a, **kw)
            finally:
                setattr(TL, name, old)
                if after is not None:
                    try:
                        after()
                    except Exception as e:
                        p.fail(e)
        return w
    return p.wrap(owner, attr, make)


# ---- V1 runner --------------------------------------------------------------------------
def install_v1_runner(p, mod):
    cls = getattr(mod, "GPUModelRunner", None)
    if cls is None:
        return "vllm.v1.worker.gpu_model_runner has no GPUModelRunner"
    have = []
    det = getattr(cls, "_determine_batch_execution_and_padding", None)
    if det is not None:
        def make(orig):
            def w(self, *a, **kw):
                if not (rt.ON and p.on):
                    return orig(self, *a, **kw)
                old = getattr(TL, "in_det", False)
                TL.in_det = True
                try:
                    r = orig(self, *a, **kw)
                finally:
                    TL.in_det = old
                try:
                    if not old:
                        _emit(r[0], r[1], a[0] if a else kw.get("num_tokens", 0), 1, False)
                except Exception as e:
                    p.fail(e)
                return r
            return w
        p.wrap(cls, "_determine_batch_execution_and_padding", make)
        have.append("_determine_batch_execution_and_padding")
    dr = getattr(cls, "_dummy_run", None)
    if dr is not None:
        try:
            params = list(inspect.signature(dr).parameters)
            cap_idx = params.index("is_graph_capturing") - 1 if "is_graph_capturing" in params else -1
        except (TypeError, ValueError):
            cap_idx = -1

        def make_dr(orig):
            def w(self, *a, **kw):
                od, oc = getattr(TL, "dummy", False), getattr(TL, "capturing", False)
                cap = kw.get("is_graph_capturing")
                if cap is None and 0 <= cap_idx < len(a):
                    cap = a[cap_idx]
                TL.dummy = True
                TL.capturing = bool(cap) or oc
                try:
                    return orig(self, *a, **kw)
                finally:
                    TL.dummy, TL.capturing = od, oc
            return w
        p.wrap(cls, "_dummy_run", make_dr)
    if hasattr(cls, "profile_cudagraph_memory"):
        _flag_ctx(p, cls, "profile_cudagraph_memory", "profile_cg")
    if hasattr(cls, "capture_model"):
        _flag_ctx(p, cls, "capture_model", "in_capture_model", after=capture_finished)
    if not have and not hasattr(mod, "CudagraphDispatcher"):
        # dispatch decisions then come from vllm.v1.cudagraph_dispatcher (separate patch)
        pass
    return None


def install_v1_dispatcher(p, mod):
    cls = getattr(mod, "CudagraphDispatcher", None)
    if cls is None or not hasattr(cls, "dispatch"):
        return "CudagraphDispatcher.dispatch not found"

    def make(orig):
        def w(self, *a, **kw):
            r = orig(self, *a, **kw)
            if rt.ON and p.on and not getattr(TL, "in_det", False):
                try:
                    if isinstance(r, tuple) and len(r) >= 2:
                        # 2026: dispatch(num_tokens, ...); 2025: dispatch(batch_descriptor) -> (mode, desc|None)
                        arg = a[0] if a else kw.get("num_tokens", kw.get("batch_descriptor"))
                        desc = r[1]
                        if desc is None and not isinstance(arg, int):
                            desc = arg
                        nreal = arg if isinstance(arg, int) else getattr(arg, "num_tokens", 0)
                        _emit(r[0], desc, nreal, 2, False)
                except Exception as e:
                    p.fail(e)
            return r
        return w
    p.wrap(cls, "dispatch", make)
    return None


# ---- V2 runner --------------------------------------------------------------------------
def install_v2_runner(p, mod):
    have = False
    fn = getattr(mod, "dispatch_cg_and_sync_dp", None)
    if fn is not None:
        def make(orig):
            def w(*a, **kw):
                if not (rt.ON and p.on):
                    return orig(*a, **kw)
                old = getattr(TL, "in_det", False)
                TL.in_det = True
                try:
                    r = orig(*a, **kw)
                finally:
                    TL.in_det = old
                try:
                    if not old:
                        desc = r[0] if isinstance(r, tuple) else r
                        nt = a[2] if len(a) > 2 else kw.get("num_tokens", 0)
                        _emit(None, desc, nt, 3, True)
                except Exception as e:
                    p.fail(e)
                return r
            return w
        p.wrap(mod, "dispatch_cg_and_sync_dp", make)
        have = True
    cls = getattr(mod, "GPUModelRunner", None)
    if cls is not None:
        if hasattr(cls, "_dummy_run"):
            _flag_ctx(p, cls, "_dummy_run", "dummy")
        if hasattr(cls, "capture_model"):
            _flag_ctx(p, cls, "capture_model", "in_capture_model", after=capture_finished)
    if not have:
        return "vllm.v1.worker.gpu.model_runner has no dispatch_cg_and_sync_dp"
    return None


def install_v2_cgutils(p, mod):
    cls = getattr(mod, "CudaGraphManager", None)
    if cls is None:
        return "vllm.v1.worker.gpu.cudagraph_utils has no CudaGraphManager"
    if hasattr(cls, "dispatch"):
        def make(orig):
            def w(self, *a, **kw):
                r = orig(self, *a, **kw)
                if rt.ON and p.on and not getattr(TL, "in_det", False):
                    try:
                        nt = a[1] if len(a) > 1 else kw.get("num_tokens", 0)
                        _emit(None, r, nt, 4, True)
                    except Exception as e:
                        p.fail(e)
                return r
            return w
        p.wrap(cls, "dispatch", make)
    if hasattr(cls, "capture"):
        def make_cap(orig):
            def w(self, *a, **kw):
                if not p.on:  # also while dormant: captures are kept for the enable snapshot
                    return orig(self, *a, **kw)
                a = list(a)
                if a:
                    a[0] = _wrap_cff(p, a[0])
                elif "create_forward_fn" in kw:
                    kw["create_forward_fn"] = _wrap_cff(p, kw["create_forward_fn"])
                oc = getattr(TL, "capturing", False)
                TL.capturing = True
                try:
                    return orig(self, *a, **kw)
                finally:
                    TL.capturing = oc
            return w
        # only the base class signature (create_forward_fn, progress_bar_desc) is wrapped;
        # ModelCudaGraphManager.capture calls super().capture(create_forward_fn, ...)
        p.wrap(cls, "capture", make_cap)
    return None


def _wrap_cff(p, cff):
    if not callable(cff):
        return cff

    def cff2(desc, *a, **kw):
        fn = cff(desc, *a, **kw)
        warm = kw.get("warmup", a[0] if a else False)

        def timed(*x, **y):
            m = mode_val(x[0]) if x else 255
            if warm and m != 1:  # warmup run in eager mode: not a capture
                return fn(*x, **y)
            old = getattr(TL, "in_v2_capture", False)
            TL.in_v2_capture = True  # pieces captured inside are part of this record
            t0 = _mono()
            try:
                r = fn(*x, **y)
            finally:
                TL.in_v2_capture = old
            t1 = _mono()
            try:
                nt, nr, nl, _u, _m, flags, rb, dmode = desc_info(desc)
                _capture(t0, t1, mode_val(dmode), nt, nr, nl, flags | 4 | 64, 3, rb)
            except Exception as e:
                p.fail(e)
            return r
        return timed
    return cff2


# ---- CUDAGraphWrapper / BreakableCUDAGraphWrapper ---------------------------------------
_WRAPPER_PATCH = []


def capture_finished():
    """capture_model returned: remove the per-piece __call__ wrapper (replays then cost 0)."""
    if getattr(TL, "in_capture_model", False):
        return
    for p in _WRAPPER_PATCH:
        p.uninstall()
        p.reason = "removed after capture_model (replays are counted by dispatch records)"


def _fc():
    fcm = sys.modules.get("vllm.forward_context")
    if fcm is None:
        return None
    avail = getattr(fcm, "is_forward_context_available", None)
    if avail is not None and not avail():
        return None
    return fcm.get_forward_context()


LATE_REASON = ("CUDA graphs were captured before attach (%s): no capture left to record; "
               "replays are counted by the dispatch records")


def install_wrapper(p, mod):
    cls = getattr(mod, "CUDAGraphWrapper", None)
    if cls is None or "__call__" not in cls.__dict__:
        return "vllm.compilation.cuda_graph.CUDAGraphWrapper.__call__ not found"
    if rt._late and rt.late_graphs:
        return LATE_REASON % rt.late_graphs  # a per-piece wrapper would only cost on every replay

    def make(orig):
        def w(self, *a, **kw):
            if not p.on:  # also while dormant (until capture_model returns): see _capture
                return orig(self, *a, **kw)
            cap = False
            try:
                fc = _fc()
                if fc is not None:
                    mode = fc.cudagraph_runtime_mode
                    desc = fc.batch_descriptor
                    if desc is not None and mode_val(mode) in (1, 2) and mode == self.runtime_mode:
                        e = self.concrete_cudagraph_entries.get(desc)
                        cap = e is None or getattr(e, "cudagraph", None) is None
            except Exception as e:
                p.fail(e)
            if not cap or getattr(TL, "in_v2_capture", False):
                return orig(self, *a, **kw)
            t0 = _mono()
            r = orig(self, *a, **kw)
            t1 = _mono()
            try:
                nt, nr, nl, _u, _m, flags, rb, _d = desc_info(desc)
                opts = getattr(self, "cudagraph_options", None)
                if mode_val(mode) == 2 or opts is None or getattr(opts, "debug_log_enable", False):
                    flags |= 64  # first piece / whole graph
                if getattr(TL, "profile_cg", False):
                    flags |= 32
                _capture(t0, t1, mode_val(mode), nt, nr, nl, flags, 1, rb)
            except Exception as e:
                p.fail(e)
            return r
        return w
    p.wrap(cls, "__call__", make)
    _WRAPPER_PATCH.append(p)
    return None


def install_breakable(p, mod):
    cls = getattr(mod, "BreakableCUDAGraphWrapper", None)
    if cls is None or not hasattr(cls, "_capture"):
        return "BreakableCUDAGraphWrapper._capture not found"
    if rt._late and rt.late_graphs:
        return LATE_REASON % rt.late_graphs

    def make(orig):
        def w(self, *a, **kw):
            if not p.on:  # also while dormant: see _capture
                return orig(self, *a, **kw)
            t0 = _mono()
            r = orig(self, *a, **kw)
            t1 = _mono()
            try:
                fc = _fc()
                desc = getattr(fc, "batch_descriptor", None) if fc is not None else None
                mode = getattr(fc, "cudagraph_runtime_mode", None) if fc is not None else None
                nt, nr, nl, _u, _m, flags, rb, _d = desc_info(desc)
                if getattr(TL, "profile_cg", False):
                    flags |= 32
                _capture(t0, t1, mode_val(mode), nt, nr, nl, flags | 64, 2, rb)
            except Exception as e:
                p.fail(e)
            return r
        return w
    p.wrap(cls, "_capture", make)
    return None


def patches():
    S = "ENABLE_CUDA_GRAPH_TRACKING"
    rt.add_snapshot("cudagraph.captures", snapshot)
    return [
        Patch("cudagraph.v1_runner", "vllm.v1.worker.gpu_model_runner", S, install_v1_runner),
        Patch("cudagraph.v1_dispatcher", "vllm.v1.cudagraph_dispatcher", S, install_v1_dispatcher),
        Patch("cudagraph.v2_runner", "vllm.v1.worker.gpu.model_runner", S, install_v2_runner),
        Patch("cudagraph.v2_manager", "vllm.v1.worker.gpu.cudagraph_utils", S, install_v2_cgutils),
        Patch("cudagraph.capture", "vllm.compilation.cuda_graph", S, install_wrapper),
        Patch("cudagraph.breakable_capture", "vllm.compilation.breakable_cudagraph", S, install_breakable),
    ]
