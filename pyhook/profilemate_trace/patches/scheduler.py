"""Scheduler steps, batch utilization, preemptions and request lifecycle
(ENABLE_BATCH_UTILIZATION_TRACKING, ENABLE_PREEMPTION_TRACKING, ENABLE_CPU_TIMING).

Target: vllm.v1.core.sched.scheduler.Scheduler (class-level patches reach AsyncScheduler and
other subclasses): schedule, update_from_output, add_request, _free_request, _preempt_request,
reset_prefix_cache; EngineCore.step / step_with_batch_queue for the engine-step scope.
"""

from .. import runtime as rt
from ._ctx import TL, classify
from .base import Patch

_mono = rt._mono

# lifecycle event ids
ARRIVAL, QUEUED, SCHEDULED, FIRST_TOKEN, PREEMPTED, RESUMED, FINISHED = 1, 2, 3, 4, 5, 6, 7
FINISH_DETAIL = {"FINISHED_STOPPED": 1, "FINISHED_LENGTH_CAPPED": 2, "FINISHED_ABORTED": 3,
                 "FINISHED_IGNORED": 4, "FINISHED_ERROR": 5, "FINISHED_REPETITION": 6}

_preempted = set()   # request ids preempted and not yet resumed
_awaiting = set()    # request ids scheduled and still waiting for their first token
_limits = {}         # id(scheduler) -> (max_tokens, max_seqs)

N_UPDATE = b"Scheduler.update_from_output"
N_STEP = b"EngineCore.step"


def _limits_of(s):
    lim = _limits.get(id(s))
    if lim is None:
        sc = getattr(s, "scheduler_config", None)
        mt = getattr(s, "max_num_scheduled_tokens", None) or getattr(sc, "max_num_batched_tokens", 0)
        ms = getattr(s, "max_num_running_reqs", None) or getattr(sc, "max_num_seqs", 0)
        lim = _limits[id(s)] = (rt.u32(mt), rt.u32(ms))
    return lim


def _nfree(s):
    try:
        return s.kv_cache_manager.block_pool.get_num_free_blocks()
    except Exception:
        return 0


def install(p_step, p_life, mod):
    """p_step: batch utilization / step records; p_life: preemption + lifecycle."""
    cls = getattr(mod, "Scheduler", None)
    if cls is None or not hasattr(cls, "schedule"):
        return "vllm.v1.core.sched.scheduler has no Scheduler.schedule"
    has_preempt = hasattr(cls, "_preempt_request")

    def make_schedule(orig):
        def w(self, *a, **kw):
            if not rt.ON or not (p_step.on or p_life.on):
                return orig(self, *a, **kw)
            rt.sched_step += 1
            step = rt.sched_step
            before = None
            if not has_preempt and p_life.on:
                before = list(self.running)
            old = getattr(TL, "preempt_reason", 0)
            TL.preempt_reason = 1
            TL.n_preempt = 0
            t0 = _mono()
            try:
                so = orig(self, *a, **kw)
            finally:
                TL.preempt_reason = old
            t1 = _mono()
            npre = TL.n_preempt
            nres = 0
            nst = getattr(so, "num_scheduled_tokens", None) or {}
            if p_life.on:
                try:
                    if before is not None:  # vLLM without _preempt_request: preemption was inline
                        for r in before:
                            if getattr(r.status, "name", "") == "PREEMPTED" and r.request_id not in _preempted:
                                _record_preempt(r, 1, r.num_computed_tokens, t1)
                                npre += 1
                    for nr in getattr(so, "scheduled_new_reqs", ()):
                        rid = nr.req_id
                        if rid in _preempted:
                            continue
                        req = self.requests.get(rid)
                        rt.emit_req(t1, step, rid, SCHEDULED, 0, getattr(req, "num_prompt_tokens", 0),
                                    getattr(req, "num_output_tokens", 0))
                        _awaiting.add(rid)
                    if _preempted:
                        for rid in [r for r in _preempted if r in nst]:
                            _preempted.discard(rid)
                            req = self.requests.get(rid)
                            rt.emit_req(t1, step, rid, RESUMED, 0, getattr(req, "num_prompt_tokens", 0),
                                        getattr(req, "num_output_tokens", 0))
                            nres += 1
                except Exception as e:
                    p_life.fail(e)
            if p_step.on:
                try:
                    n, total, pre, ptok, dec, dtok = classify(so)
                    mt, ms = _limits_of(self)
                    if hasattr(self, "get_request_counts"):
                        nrun, nwait = self.get_request_counts()
                    else:
                        nrun, nwait = len(self.running), len(self.waiting)
                    # plain ints from len()/sums: packed as they are (a bad value raises inside
                    # this try and disables the patch instead of writing garbage)
                    rt.emit_sched((t0, t1, step, rt._tid(), total, n, mt, ms, nwait, nrun,
                                   len(getattr(so, "scheduled_new_reqs", ())), nres, npre, pre, ptok, dec,
                                   dtok, _nfree(self), len(getattr(so, "finished_req_ids", ()))))
                except Exception as e:
                    p_step.fail(e)
            return so
        return w
    p_step.wrap(cls, "schedule", make_schedule)

    def _record_preempt(request, reason, ncomp, ts):
        rid = request.request_id
        rt.emit_preempt(ts, rt.sched_step, rid, reason, ncomp, getattr(request, "num_preemptions", 0))
        rt.emit_req(ts, rt.sched_step, rid, PREEMPTED, reason, getattr(request, "num_prompt_tokens", 0),
                    getattr(request, "num_output_tokens", 0))
        _preempted.add(rid)

    if has_preempt:
        def make_preempt(orig):
            def w(self, request, *a, **kw):
                if not (rt.ON and p_life.on):
                    return orig(self, request, *a, **kw)
                ncomp = getattr(request, "num_computed_tokens", 0)
                r = orig(self, request, *a, **kw)
                try:
                    _record_preempt(request, getattr(TL, "preempt_reason", 0) or 3, ncomp, _mono())
                    TL.n_preempt = getattr(TL, "n_preempt", 0) + 1
                except Exception as e:
                    p_life.fail(e)
                return r
            return w
        p_life.wrap(cls, "_preempt_request", make_preempt)

    if hasattr(cls, "reset_prefix_cache"):
        def make_reset(orig):
            def w(self, *a, **kw):
                old = getattr(TL, "preempt_reason", 0)
                TL.preempt_reason = 2
                try:
                    return orig(self, *a, **kw)
                finally:
                    TL.preempt_reason = old
            return w
        p_life.wrap(cls, "reset_prefix_cache", make_reset)

    if hasattr(cls, "add_request"):
        def make_add(orig):
            def w(self, request, *a, **kw):
                if not (rt.ON and p_life.on):
                    return orig(self, request, *a, **kw)
                t0 = _mono()
                r = orig(self, request, *a, **kw)
                try:
                    rid = request.request_id
                    np_ = getattr(request, "num_prompt_tokens", 0)
                    rt.emit_req(t0, rt.sched_step, rid, ARRIVAL, 0, np_, 0)
                    rt.emit_req(_mono(), rt.sched_step, rid, QUEUED, 0, np_, 0)
                except Exception as e:
                    p_life.fail(e)
                return r
            return w
        p_life.wrap(cls, "add_request", make_add)

    if hasattr(cls, "_free_request"):
        def make_free(orig):
            def w(self, request, *a, **kw):
                if rt.ON and p_life.on:
                    try:
                        rid = request.request_id
                        _awaiting.discard(rid)
                        _preempted.discard(rid)
                        st = getattr(request.status, "name", "")
                        rt.emit_req(_mono(), rt.sched_step, rid, FINISHED, FINISH_DETAIL.get(st, 0),
                                    getattr(request, "num_prompt_tokens", 0), getattr(request, "num_output_tokens", 0))
                    except Exception as e:
                        p_life.fail(e)
                return orig(self, request, *a, **kw)
            return w
        p_life.wrap(cls, "_free_request", make_free)

    if hasattr(cls, "update_from_output"):
        def make_update(orig):
            def w(self, *a, **kw):
                if not rt.ON:
                    return orig(self, *a, **kw)
                t0 = _mono()
                r = orig(self, *a, **kw)
                t1 = _mono()
                if p_step.on:
                    try:
                        rt.emit_scope(t0, t1, rt.sched_step, 5, N_UPDATE)
                    except Exception as e:
                        p_step.fail(e)
                if p_life.on and _awaiting:
                    try:
                        reqs = self.requests
                        for rid in list(_awaiting):
                            req = reqs.get(rid)
                            if req is None:
                                _awaiting.discard(rid)
                            elif getattr(req, "num_output_tokens", 0) > 0:
                                _awaiting.discard(rid)
                                rt.emit_req(t1, rt.sched_step, rid, FIRST_TOKEN, 0,
                                            getattr(req, "num_prompt_tokens", 0), req.num_output_tokens)
                    except Exception as e:
                        p_life.fail(e)
                return r
            return w
        p_step.wrap(cls, "update_from_output", make_update)
    return None


def install_engine(p, mod):
    cls = getattr(mod, "EngineCore", None)
    if cls is None:
        return "vllm.v1.engine.core has no EngineCore"
    n = 0
    for name in ("step", "step_with_batch_queue"):
        if name not in cls.__dict__:
            continue
        nb = ("EngineCore." + name).encode()

        def make(orig, nb=nb):
            def w(self, *a, **kw):
                if not (rt.ON and p.on):
                    return orig(self, *a, **kw)
                t0 = _mono()
                r = orig(self, *a, **kw)
                try:
                    rt.emit_scope(t0, _mono(), rt.sched_step, 7, nb)
                except Exception as e:
                    p.fail(e)
                return r
            return w
        p.wrap(cls, name, make)
        n += 1
    return None if n else "EngineCore has neither step nor step_with_batch_queue"


def patches():
    p_step = Patch("scheduler.step", "vllm.v1.core.sched.scheduler", "ENABLE_BATCH_UTILIZATION_TRACKING", None)
    p_life = Patch("scheduler.lifecycle", "vllm.v1.core.sched.scheduler", "ENABLE_PREEMPTION_TRACKING", None)
    state = {}

    def inst_step(p, mod):
        # both patches share one set of wrappers; whichever is enabled installs them
        if state.get("done"):
            return state.get("reason")
        state["done"] = True
        state["reason"] = install(p_step, p_life, mod)
        return state["reason"]

    p_step.installer = inst_step
    p_life.installer = inst_step
    return [p_step, p_life,
            Patch("cpu.engine_step", "vllm.v1.engine.core", "ENABLE_CPU_TIMING", install_engine)]
