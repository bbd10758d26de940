"""Target for cmd/profilemate-trace TestAttachInjectPtraceRealVLLM: a process started with NOTHING
of ours (no PYTHONPATH, no LD_PRELOAD, no PROFILEMATE_*; this file imports nothing from the
repo, so profilemate_trace is not in sys.modules until the injected agent starts the hook) that
builds REAL vLLM serving objects (a V1 Scheduler with its KVCacheManager / BlockPool, from
vllm_objects.build, which imports nothing of ours) and serves
requests that keep arriving, sleeping 20 ms between steps (clock_nanosleep) while a second thread
is parked in read() on stdin: the safe points the ptrace loader picks from.

Protocol (stdout, one line each): ``READY <pid> <num_gpu_blocks>`` once the first step ran; then
per command on stdin: ``progress`` -> ``PROGRESS <steps> <hook imported 0/1>``; ``check`` ->
``CHECK <json>`` with every step's own counts (what this
process scheduled) and, inside the target, whether every vLLM class / module attribute and the
live objects' instance dicts are the original objects (identity), hook threads, ring fds and
mappings; ``quit`` exits."""
import json
import os
import sys
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

BLOCK = 16


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # real/ and tests/: neither holds profilemate_trace
from identity import changed, snapshot  # noqa: E402  (imports nothing of ours)
from vllm_objects import build as _build  # noqa: E402  (imports nothing of ours)
from vllm_objects import request_factory, runner_output  # noqa: E402


def build(num_blocks, block_size, max_tokens, max_seqs, max_model_len=512):
    return _build(num_blocks, block_size, max_tokens, max_seqs, prefix_caching=True, max_model_len=max_model_len)[1]


def main():
    s = build(num_blocks=48, block_size=BLOCK, max_tokens=64, max_seqs=4)
    pool = s.kv_cache_manager.block_pool
    # vLLM's NONE_HASH global is initialised once, here, before the identity snapshot
    # (make_request would re-initialise it per request).
    make = request_factory(BLOCK)
    to_output = runner_output()
    lock = threading.Lock()
    steps = []  # per step: [tokens, reqs, kv free after schedule, after update]

    def step(k):
        if k % 3 == 0:  # requests keep arriving: varied prompt and output lengths
            s.add_request(make(k, 9 + (k * 13) % 70, 2 + k % 7))
        so = s.schedule()
        free_sched = pool.get_num_free_blocks()
        s.update_from_output(so, to_output(s, so))
        with lock:
            steps.append([so.total_num_scheduled_tokens, len(so.num_scheduled_tokens), free_sched, pool.get_num_free_blocks()])

    step(0)
    snap = snapshot()
    objs = {"scheduler": s, "kv_cache_manager": s.kv_cache_manager, "block_pool": pool}
    objs.update({"coordinator": getattr(s.kv_cache_manager, "coordinator", None)})
    objs = {k: (o, dict(vars(o))) for k, o in objs.items() if o is not None}
    stop = threading.Event()

    def check():
        after = snapshot()
        inst = {}
        for k, (o, d0) in objs.items():
            d = vars(o)
            inst[k] = sorted(set(d) ^ set(d0)) + [a for a in d0 if a in d and d[a] is not d0[a] and callable(d0[a])]
        fds = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                link = os.readlink("/proc/self/fd/" + fd)
            except OSError:
                continue
            if "memfd:profilemate" in link or "/profilemate-inject-" in link:
                fds.append(link)
        with open("/proc/self/maps") as f:
            maps = [line.split()[-1] for line in f if "memfd:profilemate" in line]
        with lock:
            st = [list(x) for x in steps]
        return {"steps": st, "changed": [list(map(str, k)) for k in changed(snap, after)],
                "instances": inst, "threads": [t.name for t in threading.enumerate() if t.name.startswith("pm-")],
                "fds": fds, "maps": maps, "hook_imported": "profilemate_trace" in sys.modules,
                "num_gpu_blocks": pool.num_gpu_blocks, "free_now": pool.get_num_free_blocks()}

    def control():  # parked in read() on stdin: a safe point for the loader
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "check":
                print("CHECK " + json.dumps(check()), flush=True)
            elif cmd == "progress":  # cheap, for polling: steps so far, hook imported (0/1)
                with lock:
                    n = len(steps)
                print("PROGRESS %d %d" % (n, "profilemate_trace" in sys.modules), flush=True)
            elif cmd == "quit":
                break
        stop.set()

    threading.Thread(target=control, name="control", daemon=True).start()
    print("READY %d %d" % (os.getpid(), pool.num_gpu_blocks), flush=True)
    k = 1
    while not stop.is_set():
        step(k)
        k += 1
        time.sleep(0.02)  # clock_nanosleep: the main thread parks between steps


if __name__ == "__main__":
    main()
