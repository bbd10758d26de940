"""Hook CPU cost per scheduler step and per KV block operation, all trackers on.

    python pyhook/bench/bench_hook.py [--python VENV_PYTHON] [--reqs 64] [--steps 300]

Runs the same workload in fresh interpreters without the hook and with it (PYTHONPATH=pyhook,
Option 2 spill mode, i.e. the spill thread really drains the ring to raw files), and prints a
markdown table of medians. With --python pointing at a venv made by
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
    _cfg, s = build(num_blocks=8192, block_size=16, max_tokens=8192, max_seqs=max(N_REQ, 1),
                    prefix_caching=True)
    reqs = [make_request(i, 128, 10**6) for i in range(N_REQ)]
else:
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.request import Request
    s = Scheduler(num_blocks=8192, block_size=16, max_num_batched_tokens=8192, max_num_seqs=max(N_REQ, 1))
    reqs = [Request("r%%d" %% i, [1] * 128, 10**6) for i in range(N_REQ)]
for r in reqs:
    s.add_request(r)

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
    return so

for _ in range(5):   # prefill + warm-up
    step()
gc.disable()
ts = []
for _ in range(STEPS):
    t0 = pc(); step(); ts.append(pc() - t0)
pool = s.kv_cache_manager.block_pool
bt = []
for _ in range(5):
    t0 = pc()
    for _ in range(OPS):
        b = pool.get_new_blocks(1)
        pool.free_blocks(b)
    bt.append((pc() - t0) / (2 * OPS))
gc.enable()
hooked = "profilemate_trace.runtime" in sys.modules and sys.modules["profilemate_trace.runtime"].ON
recs = 0
if hooked:
    import profilemate_trace.runtime as rt
    recs = rt.RING.written
print("BENCH " + json.dumps({"step_ns": ts, "block_op_ns": bt, "hooked": hooked, "records": recs,
                             "decode_reqs": N_REQ}))
'''


def run(py, hook, args, real_dir):
    code = INNER % {"real": bool(args.python), "reqs": args.reqs, "steps": args.steps, "ops": args.ops,
                    "real_dir": real_dir}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROFILEMATE_", "VLLM_PROFILING", "ENABLE_"))}
    paths = [] if args.python else [FAKE]
    if hook:
        paths.insert(0, PYHOOK)
        env["VLLM_PROFILING_DIR"] = tempfile.mkdtemp(prefix="pm-bench-")
        env["PROFILEMATE_PYHOOK_AUTO_EXPORT"] = "0"
        env["PROFILEMATE_PYHOOK_QUIET"] = "1"
    else:
        paths.insert(0, PYHOOK)  # for drive_real_vllm's import of profilemate_trace.decode only
        env["PROFILEMATE_PYHOOK_DISABLE"] = "1"
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
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--ops", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    py = args.python or sys.executable
    real_dir = os.path.join(PYHOOK, "tests", "real")
    base, hook = [], []
    for _ in range(args.repeat):  # interleave to spread machine noise
        base.append(run(py, False, args, real_dir))
        hook.append(run(py, True, args, real_dir))
    assert all(h["hooked"] for h in hook) and not any(b["hooked"] for b in base)

    def med(rs, key):
        return statistics.median(x for r in rs for x in r[key])

    bs, hs = med(base, "step_ns"), med(hook, "step_ns")
    bb, hb = med(base, "block_op_ns"), med(hook, "block_op_ns")
    recs = statistics.median(r["records"] for r in hook)
    vv = "fake (pyhook/tests/fakevllm)"
    if args.python:
        vv = subprocess.run([py, "-c", "import vllm; print(vllm.__version__)"], capture_output=True, text=True,
                            env=dict(os.environ, VLLM_LOGGING_LEVEL="ERROR")).stdout.strip().splitlines()[-1]
    print("machine: %s, %s, %d cores; python %s; vLLM %s; date %s" % (
        platform.node(), platform.processor() or platform.machine(), os.cpu_count(),
        platform.python_version(), vv, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    print("workload: %d running requests (decode), schedule()+update_from_output() per step, %d steps x %d runs;"
          " block op = get_new_blocks(1) or free_blocks([b]); all trackers on, Option 2 spill mode"
          % (args.reqs, args.steps, args.repeat))
    print()
    print("| measure | without hook | with hook | hook cost |")
    print("|---|---|---|---|")
    print("| scheduler step (median) | %.1f µs | %.1f µs | %.1f µs |" % (bs / 1e3, hs / 1e3, (hs - bs) / 1e3))
    print("| KV block operation (median) | %.2f µs | %.2f µs | %.2f µs |" % (bb / 1e3, hb / 1e3, (hb - bb) / 1e3))
    print("| records written per run | – | %d | – |" % recs)


if __name__ == "__main__":
    main()
