def test_exception_in_hook_disables_patch_reports_once_and_vllm_continues(hook, capfd):
    from profilemate_trace import runtime as rt
    from profilemate_trace.patches import kv
    from vllm.v1.core.block_pool import BlockPool

    p = [x for x in rt._patches if x.name == "kv.block_pool"][0]
    pool = BlockPool(6, False, 16)
    hook.drain()
    orig = kv._pool_ids
    calls = []

    class Boom(dict):
        def get(self, *a):
            calls.append(1)
            raise RuntimeError("unexpected tensor device")

    kv._pool_ids = Boom()
    try:
        b = pool.get_new_blocks(2)             # hook raises inside: vLLM result unchanged
        assert [x.block_id for x in b] == [1, 2]
        pool.free_blocks(b)                    # patch now disabled: plain vLLM behaviour
        assert pool.get_num_free_blocks() == 5
        pool.get_new_blocks(1)
    finally:
        kv._pool_ids = orig
    assert len(calls) == 1
    err = capfd.readouterr().err
    assert err.count("patch kv.block_pool disabled after an error") == 1
    st = [r for r in hook.drain({"py_patch_status"}) if r["text"].startswith(b"kv.block_pool\0")]
    assert len(st) == 1 and st[0]["status"] == 4 and b"unexpected tensor device" in st[0]["text"]
    assert p.errors == 1 and not p.on
    # re-enable for later tests
    p.on = True
    p.status = 1


def test_missing_target_reported_unavailable(hook):
    import types

    from profilemate_trace.patches import base, kv

    p = base.Patch("kv.block_pool.renamed", "vllm.fake_renamed", "ENABLE_KV_CACHE_TRACKING", kv.install)
    mod = types.ModuleType("vllm.fake_renamed")
    base._install(p, mod)
    assert p.status == 2 and "no BlockPool" in p.reason
    (r,) = [x for x in hook.drain({"py_patch_status"}) if x["text"].startswith(b"kv.block_pool.renamed\0")]
    assert r["status"] == 2
    # an installer that raises is also contained
    p2 = base.Patch("broken", "m", None, lambda p, m: 1 / 0)
    base._install(p2, mod)
    assert p2.status == 2 and "ZeroDivisionError" in p2.reason


def test_dormant_hook_records_nothing(hook):
    from profilemate_trace import runtime as rt
    from vllm.v1.core.block_pool import BlockPool

    hook.drain()
    rt.ON = False
    try:
        pool = BlockPool(6, False, 16)
        b = pool.get_new_blocks(2)
        pool.free_blocks(b)
        assert pool.get_num_free_blocks() == 5
    finally:
        rt.ON = True
    assert hook.drain() == []


def test_status_line_names_unavailable_patches(hook, capfd):
    from profilemate_trace import runtime as rt
    from profilemate_trace.patches import base

    p = base.Patch("x.renamed", "m", None, None)
    p.status, p.reason = 2, "Scheduler has no schedule"
    rt._patches.append(p)
    try:
        rt._status_line()
    finally:
        rt._patches.remove(p)
    err = capfd.readouterr().err
    assert "unavailable: x.renamed (Scheduler has no schedule)" in err and "patches installed" in err
