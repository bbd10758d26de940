"""KV-cache block events through vllm.v1.core.block_pool.BlockPool (ENABLE_KV_CACHE_TRACKING).

BlockPool is the choke point for every allocate, free, touch and prefix-cache eviction in
the scheduler process. One py_kv_blocks record per call, with the block ids as a u32 tail.
"""

import threading

from .. import runtime as rt
from .base import Patch

ALLOC, FREE, TOUCH, EVICT, EVICT_CONNECTOR, RESET, CACHED, UNPIN = 1, 2, 3, 4, 5, 6, 7, 8

_pool_ids = {}          # id(pool) -> pool index (pools live as long as the scheduler)
_TL = threading.local()


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
            if rt.ON and p.on:
                try:
                    info = {"enable_caching": bool(getattr(self, "enable_caching", False)),
                            "hash_block_size": getattr(self, "hash_block_size", None),
                            "enable_kv_cache_events": getattr(self, "enable_kv_cache_events", None),
                            "medium": getattr(self, "medium", None),
                            "class": type(self).__name__}
                    rt.emit_kv_config(pool_id(self), getattr(self, "num_gpu_blocks", 0),
                                      getattr(self, "hash_block_size", 0) or 0,
                                      info["enable_caching"], info)
                except Exception as e:
                    p.fail(e)
        return w
    p.wrap(cls, "__init__", make_init)

    def make_alloc(orig):
        def w(self, num_blocks, *a, **kw):
            if not (rt.ON and p.on):
                return orig(self, num_blocks, *a, **kw)
            _TL.evicted = ev = []
            try:
                ret = orig(self, num_blocks, *a, **kw)
            finally:
                _TL.evicted = None
            try:
                pid = pool_id(self)
                nf = _nfree(self)
                if ev:
                    rt.emit_kv(EVICT, pid, nf, 0, ev)
                if ret:
                    rt.emit_kv(ALLOC, pid, nf, 0, [b.block_id for b in ret])
            except Exception as e:
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
            try:
                freed = []
                kept = 0
                for b in blocks:
                    if b.is_null if hasattr(b, "is_null") else False:
                        continue
                    bp = getattr(b, "pool", None)
                    if bp is not None and bp is not self:
                        continue  # forwarded to its own pool, which records it
                    if b.ref_cnt == 0:
                        freed.append(b.block_id)
                    else:
                        kept += 1
                if freed or kept:
                    rt.emit_kv(FREE, pool_id(self), _nfree(self), kept, freed)
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
                if r:
                    ev = getattr(_TL, "evicted", None)
                    if ev is not None:
                        ev.append(block.block_id)  # batched by get_new_blocks
                    elif rt.ON and p.on:
                        try:
                            rt.emit_kv(EVICT_CONNECTOR if getattr(_TL, "connector", False) else EVICT,
                                       pool_id(self), _nfree(self), 0, [block.block_id])
                        except Exception as e:
                            p.fail(e)
                return r
            return w
        p.wrap(cls, "_maybe_evict_cached_block", make_evict)

    if hasattr(cls, "evict_blocks"):
        def make_ec(orig):
            def w(self, block_ids, *a, **kw):
                if not (rt.ON and p.on):
                    return orig(self, block_ids, *a, **kw)
                _TL.evicted = ev = []
                try:
                    r = orig(self, block_ids, *a, **kw)
                finally:
                    _TL.evicted = None
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
