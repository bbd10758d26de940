"""Thread-local context shared by the patches, descriptor decoding, scheduler-output helpers."""

import dataclasses
import threading

TL = threading.local()
TL.in_det = False      # inside a top-level dispatch decision (suppresses nested dispatch records)
TL.dummy = False       # inside _dummy_run (warmup / capture / profile run)
TL.capturing = False   # inside a CUDA-graph capture phase
TL.profile_cg = False  # inside profile_cudagraph_memory (throw-away captures)
TL.preempt_reason = 0  # 1 inside Scheduler.schedule, 2 inside reset_prefix_cache


def tl(name, default=False):
    return getattr(TL, name, default)


def mode_val(m):
    """CUDAGraphMode -> 0 NONE, 1 PIECEWISE, 2 FULL, 255 other/unknown."""
    if m is None:
        return 255
    v = getattr(m, "value", m)
    if isinstance(v, bool):
        return 255
    if isinstance(v, int) and 0 <= v <= 2:
        return v
    return 255


_FIELDS = ("num_tokens", "num_reqs", "uniform", "uniform_decode", "has_lora", "num_active_loras",
           "cg_mode", "uniform_token_count", "max_query_len", "num_ubatches")
_cache = {}


def _i32(v):
    if v is None:
        return -1
    try:
        return max(-0x80000000, min(0x7FFFFFFF, int(v)))
    except Exception:
        return -1


def desc_info(desc):
    """Decode any vLLM batch descriptor (BatchDescriptor NamedTuple or dataclass,
    V2 BatchExecutionDescriptor). Returns (num_tokens, num_reqs, num_active_loras,
    uniform_token_count, max_query_len, flags, repr_bytes, desc_mode)."""
    try:
        return _cache[desc]
    except (KeyError, TypeError):
        pass
    flags = 0
    if desc is None:
        d = {}
    elif dataclasses.is_dataclass(desc) and not isinstance(desc, type):
        d = {f.name: getattr(desc, f.name, None) for f in dataclasses.fields(desc)}
        flags |= 8
    elif hasattr(desc, "_asdict"):
        d = dict(desc._asdict())
    else:
        d = {k: getattr(desc, k) for k in _FIELDS if hasattr(desc, k)}
    utc = d.get("uniform_token_count")
    uniform = d.get("uniform", d.get("uniform_decode", False)) or utc is not None
    if uniform:
        flags |= 1
    if d.get("has_lora"):
        flags |= 2
    if "cg_mode" in d:
        flags |= 4
    nt = d.get("num_tokens") or 0
    try:
        nt = int(nt) & 0xFFFFFFFF
    except Exception:
        nt = 0
    try:
        nl = int(d.get("num_active_loras") or 0) & 0xFFFFFFFF
    except Exception:
        nl = 0
    r = repr(desc).encode("utf-8", "replace")[:1024] if desc is not None else b""
    info = (nt, _i32(d.get("num_reqs")), nl, _i32(utc), _i32(d.get("max_query_len")), flags, r,
            d.get("cg_mode"))
    try:
        if len(_cache) > 4096:
            _cache.clear()
        _cache[desc] = info
    except TypeError:
        pass
    return info


def classify(so):
    """Split a SchedulerOutput into (num_reqs, total_tokens, prefill_reqs, prefill_tokens,
    decode_reqs, decode_tokens). A request is in the generation (decode) phase when it is
    scheduled exactly 1 + its speculative tokens this step; anything larger is context
    (prefill, chunked prefill, or recompute after preemption)."""
    nst = getattr(so, "num_scheduled_tokens", None) or {}
    total = getattr(so, "total_num_scheduled_tokens", None)
    if total is None:
        total = sum(nst.values())
    n = len(nst)
    spec = getattr(so, "scheduled_spec_decode_tokens", None)
    if not spec:
        dec = list(nst.values()).count(1)
        dtok = dec
    else:
        dec = dtok = 0
        for rid, t in nst.items():
            k = 1 + len(spec.get(rid, ()))
            if t == k:
                dec += 1
                dtok += t
    return n, total, n - dec, total - dtok, dec, dtok


def phase_of(pre, dec):
    if pre and dec:
        return 3
    if pre:
        return 1
    if dec:
        return 2
    return 0
