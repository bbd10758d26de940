"""torch workload for inject-check.sh: a loop of identical steps, started with nothing preloaded.

  python inject_workload.py --profile-step OUT.json   # torch.profiler over PROFILED_STEPS steps:
                                                      # kernel counts per name for one step
  python inject_workload.py --serve LOG [--seconds N] # run steps for N seconds (default 120) or
                                                      # until LOG.stop exists; one line per step
                                                      # in LOG: "<wall start s> <duration s>"

A step is a fixed mix of eager kernels: a marker (torch.cuda._sleep: spin_kernel, first in every
step, so a trace can be cut into steps), 3 sin, 2 fp16 matmuls, 1 add; then a synchronize and
a 2 ms sleep (threads parked between steps, as a server between batches).
"""
import argparse
import collections
import json
import os
import sys
import time

PROFILED_STEPS = 5


def setup():
    import torch

    x = torch.randn(1 << 20, device="cuda")
    a = torch.randn(2048, 2048, device="cuda", dtype=torch.float16)
    b = torch.randn(2048, 2048, device="cuda", dtype=torch.float16)
    return torch, x, a, b


def step(torch, x, a, b):
    torch.cuda._sleep(1000)  # marker kernel
    for _ in range(3):
        x = torch.sin(x)
    for _ in range(2):
        c = a @ b
    x = x + 1.0
    torch.cuda.synchronize()
    return x, c


def profile(out):
    from torch.profiler import ProfilerActivity, profile as tprofile

    torch, x, a, b = setup()
    for _ in range(20):  # warm-up: cuBLAS heuristics, allocator
        x, _ = step(torch, x, a, b)
    with tprofile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(PROFILED_STEPS):
            x, _ = step(torch, x, a, b)
    path = out + ".trace.json"
    prof.export_chrome_trace(path)
    with open(path) as f:
        tr = json.load(f)
    os.unlink(path)
    counts = collections.Counter(e["name"] for e in tr.get("traceEvents", []) if e.get("cat") == "kernel")
    bad = {k: v for k, v in counts.items() if v % PROFILED_STEPS}
    if bad:
        sys.exit("torch.profiler: kernel counts not a multiple of %d steps: %s" % (PROFILED_STEPS, bad))
    per_step = {k: v // PROFILED_STEPS for k, v in counts.items()}
    if sum(1 for k in per_step if "spin_kernel" in k) != 1:
        sys.exit("torch.profiler: no single marker kernel (spin_kernel) per step: %s" % per_step)
    with open(out, "w") as f:
        json.dump({"per_step": per_step, "profiled_steps": PROFILED_STEPS}, f, indent=1)
    print("torch.profiler: one step =", sum(per_step.values()), "kernels:", per_step)


def serve(log, seconds):
    torch, x, a, b = setup()
    for _ in range(20):
        x, _ = step(torch, x, a, b)
    print("READY", os.getpid(), flush=True)
    end = time.time() + seconds
    with open(log, "w", buffering=1 << 16) as f:
        n = 0
        while time.time() < end and not os.path.exists(log + ".stop"):
            t0 = time.time()
            x, _ = step(torch, x, a, b)
            f.write("%.6f %.6f\n" % (t0, time.time() - t0))
            n += 1
            if n % 100 == 0:
                f.flush()
            time.sleep(0.002)
    print("DONE", n, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile-step")
    ap.add_argument("--serve")
    ap.add_argument("--seconds", type=float, default=120)
    args = ap.parse_args()
    if args.profile_step:
        profile(args.profile_step)
    elif args.serve:
        serve(args.serve, args.seconds)
    else:
        ap.error("--profile-step or --serve")


if __name__ == "__main__":
    main()
