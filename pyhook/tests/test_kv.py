import array


def ids(r):
    return list(array.array("I", r["block_ids"]))


def test_kv_block_pool_records(hook):
    from vllm.v1.core.block_pool import BlockPool

    pool = BlockPool(10, True, 16)
    (cfg,) = hook.drain({"py_kv_config"})
    assert cfg["num_gpu_blocks"] == 10 and cfg["block_size"] == 16 and cfg["enable_caching"] == 1
    pid = cfg["pool_id"]

    a = pool.get_new_blocks(3)
    (r,) = hook.drain({"py_kv_blocks"})
    assert r["op"] == 1 and ids(r) == [1, 2, 3] and r["num_free"] == 6 and r["pool_id"] == pid
    assert r["block_ids_len"] == 12

    pool.cache_block(a[0], "h1")
    pool.touch([a[0]])            # shared hit: ref 1 -> 2
    (r,) = hook.drain({"py_kv_blocks"})
    assert r["op"] == 3 and r["aux"] == 0 and ids(r) == [1]

    pool.free_blocks(reversed(a))  # iterator: hook must list() it and pass the list on
    (r,) = hook.drain({"py_kv_blocks"})
    # block 1 still referenced once (touch), 3 and 2 reached ref_cnt 0
    assert r["op"] == 2 and ids(r) == [3, 2] and r["aux"] == 1 and r["num_free"] == 8
    assert a[1].ref_cnt == 0 and a[0].ref_cnt == 1

    pool.free_blocks([a[0]])       # cached block: appended to LRU tail
    (r,) = hook.drain({"py_kv_blocks"})
    assert ids(r) == [1] and r["num_free"] == 9

    pool.touch([a[0]])             # revives 0 -> 1 (leaves the free queue)
    (r,) = hook.drain({"py_kv_blocks"})
    assert r["op"] == 3 and r["aux"] == 1 and ids(r) == [1] and r["num_free"] == 8
    pool.free_blocks([a[0]])
    hook.drain()

    # allocate everything: the cached block 1 (at the LRU tail) is evicted when reused
    pool.get_new_blocks(9)
    recs = hook.drain({"py_kv_blocks"})
    assert [r["op"] for r in recs] == [4, 1]
    assert ids(recs[0]) == [1]
    assert len(ids(recs[1])) == 9 and recs[1]["num_free"] == 0


def test_kv_evict_connector_and_reset(hook):
    from vllm.v1.core.block_pool import BlockPool

    pool = BlockPool(5, True, 16)
    b = pool.get_new_blocks(2)
    pool.cache_block(b[0], "x")
    pool.cache_block(b[1], "y")
    hook.drain()
    pool.evict_blocks({b[0].block_id, b[1].block_id})
    (r,) = hook.drain({"py_kv_blocks"})
    assert r["op"] == 5 and sorted(ids(r)) == [1, 2]
    assert pool.reset_prefix_cache() is False
    (r,) = hook.drain({"py_kv_blocks"})
    assert r["op"] == 6 and r["aux"] == 0
    pool.free_blocks(b)
    assert pool.reset_prefix_cache() is True
    recs = hook.drain({"py_kv_blocks"})
    assert recs[-1]["op"] == 6 and recs[-1]["aux"] == 1


def test_touch_flatten_2025_form():
    from profilemate_trace.patches.kv import _flatten

    assert _flatten(([1, 2], [3])) == [1, 2, 3]
    assert _flatten([4, 5]) == [4, 5]
