"""KV-cache block events through vllm.v1.core.block_pool.BlockPool (ENABLE_KV_CACHE_TRACKING).

BlockPool is the choke point for every allocate, free, touch and prefix-cache eviction in
the scheduler process. One py_kv_blocks record per call, with the block ids as a u32 tail.
"""

import array
import weakref

from .. import runtime as rt
from .base import Patch

ALLOC, FREE, TOUCH, EVICT, EVICT_CONNECTOR, RESET, CACHED, UNPIN = 1, 2, 3, 4, 5, 6, 7, 8

_pool_ids = {}          # id(pool) -> pool index (pools live as long as the scheduler)
_EV = []                # block ids evicted by _maybe_evict_cached_block, not yet emitted
_LIVE = {}              # id(pool) -> weakref.ref(pool): every pool built (or found) since install
_LIVE_MAX = 256


def track(pool):
    """Remember ``pool`` weakly (once per BlockPool construction, also while dormant), so an
    enable or attach can describe it later (``snapshot``). Never raises."""
    try:
        i = id(pool)
        ref = _LIVE.get(i)
        if ref is not None and ref() is pool:
            return
        if len(_LIVE) >= _LIVE_MAX:
            for k, r in list(_LIVE.items()):
                if r() is None:
                    del _LIVE[k]
            if len(_LIVE) >= _LIVE_MAX:
                return
        _LIVE[i] = weakref.ref(pool)
    except Exception:
        pass  # a pool that cannot be weakly referenced is only recorded at its construction


def live_pools():
    out = []
    for k, r in list(_LIVE.items()):
        o = r()
        if o is None:
            _LIVE.pop(k, None)
        else:
            out.append(o)
    return out


def config_info(pool):
    return {"enable_caching": bool(getattr(pool, "enable_caching", False)),
            "hash_block_size": getattr(pool, "hash_block_size", None),
            "enable_kv_cache_events": getattr(pool, "enable_kv_cache_events", None),
            "medium": getattr(pool, "medium", None),
            "class": type(pool).__name__}


def emit_config(pool, extra=None):
    info = config_info(pool)
    if extra:
        info.update(extra)
    rt.emit_kv_config(pool_id(pool), getattr(pool, "num_gpu_blocks", 0),
                      getattr(pool, "hash_block_size", 0) or 0, info["enable_caching"], info)


def snapshot(p):
    """py_kv_config for every live pool, with its current free count
    (``num_free_blocks_at_attach``: export starts kv_cache_usage.csv from it). Run when
    collecting starts (dormant -> collecting, spill -> tracer, late start): a pool built while
    dormant had its construction record dropped. Returns the number of records."""
    if p is None or not p.on:
        return 0
    n = 0
    for pool in live_pools():
        try:
            emit_config(pool, {"attached_late": bool(rt._late), "snapshot": True,
                               "num_free_blocks_at_attach": _nfree(pool)})
            n += 1
        except Exception as e:
            p.fail(e)
            break
    return n


def pool_id(pool):
    pid = _pool_ids.get(id(pool))
    if pid is None:
        pid = _pool_ids[id(pool)] = len(_pool_ids)
    return pid


def _nfree(pool):
    q = getattr(pool, "free_block_queue", None)
    n = getattr(q, "num_free_blocks", None)
    if n is None:
        n = pool.get_num_free_blocks()
    return n


def _flatten(blocks):
    """touch() took tuple[list[KVCacheBlock], ...] per group in 2025, a flat sequence later."""
    out = []
    for b in blocks:
        if isinstance(b, (list, tuple)):
            out.extend(b)
        else:
            out.append(b)
    return out


def install(p, mod):
    cls = getattr(mod, "BlockPool", None)
    if cls is None:
        return "vllm.v1.core.block_pool has no BlockPool"
    missing = [m for m in ("get_new_blocks", "free_blocks", "touch") if not hasattr(cls, m)]
    if missing:
        return "BlockPool lacks %s" % ", ".join(missing)

    def make_init(orig):
        def w(self, *a, **kw):
            orig(self, *a, **kw)
            if p.on:
                track(self)  # also while dormant: described by the snapshot at enable
                if rt.ON:
                    try:
                        emit_config(self)
                    except Exception as e:
                        p.fail(e)
        return w
    p.wrap(cls, "__init__", make_init)
    rt.add_snapshot("kv.block_pool", lambda: snapshot(p))

    S_KV = rt._S_KV
    st_kv, t_kv, size_kv = S_KV
    _arr = array.array
    _mono = rt._mono
    _tid = rt._tid
    _pending = rt.PENDING
    _flush = rt.flush
    _max = rt._PENDING_MAX

    def _emit(op, pid, nf, aux, ids):
        # inlined rt.emit_kv: this runs for every allocation and free in the scheduler
        t = _arr("I", ids).tobytes()
        tl = len(t)
        n = (size_kv + tl + 7) & ~7
        b = st_kv.pack(t_kv, 0, n, _mono(), _tid(), op, pid, nf, aux, tl) + t
        if n - size_kv - tl:
            b += bytes(n - size_kv - tl)
        _pending.append(b)
        if len(_pending) >= _max:
            _flush()

    def make_alloc(orig):
        def w(self, num_blocks, *a, **kw):
            if not (rt.ON and p.on):
                return orig(self, num_blocks, *a, **kw)
            ev = _EV
            mark = len(ev)
            ret = orig(self, num_blocks, *a, **kw)
            if not ret and len(ev) == mark:
                return ret
            try:
                pid = _pool_ids.get(id(self))
                if pid is None:
                    pid = pool_id(self)
                nf = self.free_block_queue.num_free_blocks
                if len(ev) > mark:
                    _emit(EVICT, pid, nf, 0, ev[mark:])
                    del ev[mark:]
                if ret:
                    _emit(ALLOC, pid, nf, 0, [b.block_id for b in ret])
            except Exception as e:
                del ev[mark:]
                p.fail(e)
            return ret
        return w
    p.wrap(cls, "get_new_blocks", make_alloc)

    def make_free(orig):
        def w(self, ordered_blocks, *a, **kw):
            if not (rt.ON and p.on):
                return orig(self, ordered_blocks, *a, **kw)
            blocks = list(ordered_blocks)  # callers pass reversed() iterators and generators
            orig(self, blocks, *a, **kw)
            if not blocks:
                return
            try:
                freed = []
                kept = 0
                for b in blocks:
                    if b.ref_cnt == 0:
                        if not b.is_null:
                            bp = getattr(b, "pool", None)
                            if bp is None or bp is self:
                                freed.append(b.block_id)
                    else:
                        bp = getattr(b, "pool", None)
                        if (bp is None or bp is self) and not b.is_null:
                            kept += 1
                pid = _pool_ids.get(id(self))
                if pid is None:
                    pid = pool_id(self)
                if freed or kept:
                    _emit(FREE, pid, self.free_block_queue.num_free_blocks, kept, freed)
            except Exception as e:
                p.fail(e)
        return w
    p.wrap(cls, "free_blocks", make_free)

    def make_touch(orig):
        def w(self, blocks, *a, **kw):
            if not (rt.ON and p.on):
                return orig(self, blocks, *a, **kw)
            try:
                flat = _flatten(blocks)
                revived = [b.block_id for b in flat if b.ref_cnt == 0 and not getattr(b, "is_null", False)]
                shared = [b.block_id for b in flat if b.ref_cnt != 0 and not getattr(b, "is_null", False)]
            except Exception as e:
                p.fail(e)
                return orig(self, blocks, *a, **kw)
            r = orig(self, blocks, *a, **kw)
            if not (revived or shared):
                return r
            try:
                rt.emit_kv(TOUCH, pool_id(self), _nfree(self), len(revived), revived + shared)
            except Exception as e:
                p.fail(e)
            return r
        return w
    p.wrap(cls, "touch", make_touch)

    if hasattr(cls, "_maybe_evict_cached_block"):
        def make_evict(orig):
            def w(self, block, *a, **kw):
                r = orig(self, block, *a, **kw)
                if r and rt.ON and p.on:
                    # collected and emitted in one record by get_new_blocks / evict_blocks
                    _EV.append(block.block_id)
                    if len(_EV) > 65536:  # called outside those (unknown caller): flush now
                        try:
                            _emit(EVICT, pool_id(self), _nfree(self), 0, _EV[:])
                        finally:
                            del _EV[:]
                return r
            return w
        p.wrap(cls, "_maybe_evict_cached_block", make_evict)

    if hasattr(cls, "evict_blocks"):
        def make_ec(orig):
            def w(self, block_ids, *a, **kw):
                if not (rt.ON and p.on):
                    return orig(self, block_ids, *a, **kw)
                mark = len(_EV)
                try:
                    r = orig(self, block_ids, *a, **kw)
                finally:
                    ev = _EV[mark:]
                    del _EV[mark:]
                try:
                    rt.emit_kv(EVICT_CONNECTOR, pool_id(self), _nfree(self), 0, ev)
                except Exception as e:
                    p.fail(e)
                return r
            return w
        p.wrap(cls, "evict_blocks", make_ec)

    if hasattr(cls, "reset_prefix_cache"):
        def make_reset(orig):
            def w(self, *a, **kw):
                r = orig(self, *a, **kw)
                if rt.ON and p.on:
                    try:
                        rt.emit_kv(RESET, pool_id(self), _nfree(self), 1 if r else 0, ())
                    except Exception as e:
                        p.fail(e)
                return r
            return w
        p.wrap(cls, "reset_prefix_cache", make_reset)

    if hasattr(cls, "unpin_blocks"):
        def make_unpin(orig):
            def w(self, blocks, *a, **kw):
                if not (rt.ON and p.on):
                    return orig(self, blocks, *a, **kw)
                blocks = list(blocks)
                r = orig(self, blocks, *a, **kw)
                try:
                    rel = [b.block_id for b in blocks if b.ref_cnt == 0]
                    rt.emit_kv(UNPIN, pool_id(self), _nfree(self), len(blocks) - len(rel), rel)
                except Exception as e:
                    p.fail(e)
                return r
            return w
        p.wrap(cls, "unpin_blocks", make_unpin)
    return None


def patches():
    return [Patch("kv.block_pool", "vllm.v1.core.block_pool", "ENABLE_KV_CACHE_TRACKING", install)]
