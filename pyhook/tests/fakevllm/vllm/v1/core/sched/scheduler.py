"""Tiny vLLM-shaped Scheduler: FCFS, chunked prefill, block allocation through BlockPool,
preemption of the last running request when allocation fails (as vLLM's schedule())."""
import time
from types import SimpleNamespace

from vllm.v1.core.block_pool import BlockPool
from vllm.v1.core.sched.output import CachedRequestData, NewRequestData, SchedulerOutput
from vllm.v1.request import RequestStatus


class Scheduler:
    def __init__(self, num_blocks=16, block_size=4, max_num_batched_tokens=32, max_num_seqs=4,
                 enable_caching=False):
        self.scheduler_config = SimpleNamespace(max_num_batched_tokens=max_num_batched_tokens,
                                                max_num_seqs=max_num_seqs)
        self.max_num_scheduled_tokens = max_num_batched_tokens
        self.max_num_running_reqs = max_num_seqs
        self.block_size = block_size
        pool = BlockPool(num_blocks, enable_caching, block_size)
        self.kv_cache_manager = SimpleNamespace(block_pool=pool)
        self.pool = pool
        self.requests = {}
        self.waiting = []
        self.running = []
        self.req_blocks = {}
        self.finished_req_ids = set()
        self.num_preempted_total = 0

    def add_request(self, request):
        self.waiting.append(request)
        self.requests[request.request_id] = request

    def get_request_counts(self):
        return len(self.running), len(self.waiting)

    def _need(self, req, n):
        have = len(self.req_blocks.get(req.request_id, ()))
        want = -(-(req.num_computed_tokens + n) // self.block_size)
        return max(0, want - have)

    def _alloc(self, req, n):
        need = self._need(req, n)
        if need > self.pool.get_num_free_blocks():
            return False
        self.req_blocks.setdefault(req.request_id, []).extend(self.pool.get_new_blocks(need))
        return True

    def schedule(self, throttle_prefills=False):
        ts = time.monotonic()
        budget = self.max_num_scheduled_tokens
        nst = {}
        new, cached, resumed = [], [], set()
        preempted = False
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            n = min(req.num_tokens - req.num_computed_tokens, budget)
            while not self._alloc(req, n):
                victim = self.running.pop()
                self._preempt_request(victim, ts)
                preempted = True
                if victim is req:
                    break
            else:
                nst[req.request_id] = n
                cached.append(req.request_id)
                budget -= n
                i += 1
                continue
            break
        while self.waiting and not preempted and budget > 0 and len(self.running) < self.max_num_running_reqs:
            req = self.waiting[0]
            n = min(req.num_tokens - req.num_computed_tokens, budget)
            if not self._alloc(req, n):
                break
            self.waiting.pop(0)
            was_preempted = req.status == RequestStatus.PREEMPTED
            req.status = RequestStatus.RUNNING
            self.running.append(req)
            nst[req.request_id] = n
            budget -= n
            if was_preempted:
                cached.append(req.request_id)
                resumed.add(req.request_id)
            else:
                new.append(NewRequestData(req.request_id, req.prompt_token_ids))
        for rid, n in nst.items():
            self.requests[rid].num_computed_tokens += n
        so = SchedulerOutput(new, CachedRequestData(cached, resumed), nst, sum(nst.values()),
                             finished_req_ids=self.finished_req_ids)
        self.finished_req_ids = set()
        return so

    def _preempt_request(self, request, timestamp, drop_stale_output=False):
        assert request.status == RequestStatus.RUNNING
        self.pool.free_blocks(reversed(self.req_blocks.pop(request.request_id, [])))
        request.status = RequestStatus.PREEMPTED
        request.num_computed_tokens = 0
        request.num_preemptions += 1
        self.num_preempted_total += 1
        self.waiting.insert(0, request)

    def update_from_output(self, scheduler_output, model_runner_output):
        for rid, n in scheduler_output.num_scheduled_tokens.items():
            req = self.requests.get(rid)
            if req is None or req.status != RequestStatus.RUNNING:
                continue
            if req.num_computed_tokens >= req.num_tokens:
                req.output_token_ids.append(7)
                if len(req.output_token_ids) >= req.max_tokens:
                    req.status = RequestStatus.FINISHED_LENGTH_CAPPED
                    self.running.remove(req)
                    self._free_request(req)
        return {}

    def finish_requests(self, request_ids, finished_status):
        for rid in request_ids:
            req = self.requests.get(rid)
            if req is None:
                continue
            if req in self.running:
                self.running.remove(req)
            if req in self.waiting:
                self.waiting.remove(req)
            req.status = finished_status
            self._free_request(req)

    def _free_request(self, request, delay_free_blocks=False):
        assert request.is_finished()
        self.finished_req_ids.add(request.request_id)
        self.pool.free_blocks(reversed(self.req_blocks.pop(request.request_id, [])))
        del self.requests[request.request_id]
        return None, None

    def reset_prefix_cache(self, reset_running_requests=False, reset_connector=False):
        if reset_running_requests:
            ts = time.monotonic()
            while self.running:
                self._preempt_request(self.running.pop(), ts, drop_stale_output=True)
        return self.pool.reset_prefix_cache()
