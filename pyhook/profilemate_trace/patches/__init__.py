"""All patches, in installation order."""


def all_patches():
    from . import cudagraph, kv, moe, scheduler, worker

    out = []
    for m in (kv, scheduler, cudagraph, worker, moe):
        out.extend(m.patches())
    return out


def reset_state(moe_keep_alive=False):
    """Late detach: forget every per-session table of the patch modules (pool ids, requests
    waiting for their first token, listeners, MoE counters, descriptor cache), so a later
    attach in the same process starts from nothing."""
    from . import _ctx, cudagraph, kv, moe, scheduler, worker

    from .. import runtime as rt

    kv._pool_ids.clear()
    kv._LIVE.clear()
    del kv._EV[:]
    del cudagraph._DORMANT_CAPS[:]
    cudagraph._dormant_dropped[0] = 0
    rt._snapshots.clear()
    scheduler._preempted.clear()
    scheduler._awaiting.clear()
    scheduler._limits.clear()
    del cudagraph._WRAPPER_PATCH[:]
    worker.reset()
    moe.reset(moe_keep_alive)
    _ctx._cache.clear()
