"""vLLM-shaped fake of vllm/v1/core/block_pool.py (method names and semantics as 0.33)."""
from dataclasses import dataclass


@dataclass(slots=True)
class KVCacheBlock:
    block_id: int
    ref_cnt: int = 0
    block_hash: object = None
    is_null: bool = False
    pool: object = None


class FreeKVCacheBlockQueue:
    def __init__(self, blocks):
        self.q = list(blocks)

    @property
    def num_free_blocks(self):
        return len(self.q)

    def popleft(self):
        return self.q.pop(0)

    def popleft_n(self, n):
        out, self.q = self.q[:n], self.q[n:]
        return out

    def remove(self, b):
        self.q.remove(b)

    def append_n(self, bs):
        self.q.extend(bs)

    def prepend_n(self, bs):
        self.q[:0] = bs


class BlockPool:
    def __init__(self, num_gpu_blocks, enable_caching, hash_block_size, enable_kv_cache_events=False,
                 metrics_collector=None):
        self.num_gpu_blocks = num_gpu_blocks
        self.enable_caching = enable_caching
        self.hash_block_size = hash_block_size
        self.blocks = [KVCacheBlock(i, pool=self) for i in range(num_gpu_blocks)]
        self.free_block_queue = FreeKVCacheBlockQueue(self.blocks)
        self.cached = {}
        self.null_block = self.free_block_queue.popleft()
        self.null_block.is_null = True

    def get_new_blocks(self, num_blocks):
        if num_blocks > self.get_num_free_blocks():
            raise ValueError("Cannot get %d free blocks from the pool" % num_blocks)
        ret = self.free_block_queue.popleft_n(num_blocks)
        for b in ret:
            if self.enable_caching:
                self._maybe_evict_cached_block(b)
            assert b.ref_cnt == 0
            b.ref_cnt += 1
        return ret

    def _maybe_evict_cached_block(self, block):
        if block.block_hash is None:
            return False
        self.cached.pop(block.block_hash, None)
        block.block_hash = None
        return True

    def cache_block(self, block, h):
        block.block_hash = h
        self.cached[h] = block

    def touch(self, blocks):
        for b in blocks:
            if b.is_null:
                continue
            if b.ref_cnt == 0:
                self.free_block_queue.remove(b)
            b.ref_cnt += 1

    def free_blocks(self, ordered_blocks):
        first, last = [], []
        for b in ordered_blocks:
            if b.is_null:
                continue
            b.ref_cnt -= 1
            if b.ref_cnt == 0:
                (first if b.block_hash is None or not self.enable_caching else last).append(b)
        self.free_block_queue.prepend_n(first)
        self.free_block_queue.append_n(last)

    def evict_blocks(self, block_ids):
        for i in block_ids:
            self._maybe_evict_cached_block(self.blocks[i])

    def reset_prefix_cache(self):
        if self.num_gpu_blocks - self.get_num_free_blocks() != 1:
            return False
        for b in self.blocks:
            b.block_hash = None
        self.cached.clear()
        return True

    def get_num_free_blocks(self):
        return self.free_block_queue.num_free_blocks

    def get_usage(self):
        return 1.0 - self.get_num_free_blocks() / (self.num_gpu_blocks - 1)
