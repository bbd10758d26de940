"""All patches, in installation order."""


def all_patches():
    from . import cudagraph, kv, moe, scheduler, worker

    out = []
    for m in (kv, scheduler, cudagraph, worker, moe):
        out.extend(m.patches())
    return out
