"""One benchmark process for `make bench-gpu`. Prints one JSON line.

  python3 bench.py --loop graph|eager [--seconds S] [--torch-profiler]

graph: a decode-like step: replay a CUDA graph of an MLP stack, then read back the sampled
       tokens (D2H) and synchronize, as vLLM does every decode step; an eager prefill-like
       step every 16 steps. --size small: 24 layers of 1024x1024 (a ~0.2 ms step, a stress
       case); --size 8b: 32 layers shaped like Llama-3-8B's MLP (4096->14336->4096, fp16,
       ~7.5 GB of weights read per step, a few ms like a real 8B decode step).
eager: many small eager kernels (elementwise ops on a small tensor), synchronizing every 100.
Reports steps/s over the measured window, the process CPU time, the CPU time of the agent's
own thread (named "pm-agent*") and VmRSS.
"""
import argparse
import json
import os
import time

import torch


def thread_cpu(prefix):
    """CPU seconds of this process's threads whose name starts with prefix (schedstat: ns)."""
    total = 0.0
    for tid in os.listdir("/proc/self/task"):
        try:
            comm = open(f"/proc/self/task/{tid}/comm").read().strip()
            if not comm.startswith(prefix):
                continue
            total += int(open(f"/proc/self/task/{tid}/schedstat").read().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            pass
    return total


def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def make_graph_step(size):
    if size == "8b":
        h, f, n = 4096, 14336, 32
        layers = [(torch.nn.Linear(h, f, bias=False, device="cuda", dtype=torch.float16),
                   torch.nn.Linear(f, h, bias=False, device="cuda", dtype=torch.float16)) for _ in range(n)]
    else:
        h = 1024
        layers = [(torch.nn.Linear(h, h, device="cuda", dtype=torch.float16), None) for _ in range(24)]
    x = torch.randn(64, h, device="cuda", dtype=torch.float16)

    def fwd(inp):
        for up, down in layers:
            inp = torch.relu(up(inp))
            if down is not None:
                inp = down(inp)
        return inp

    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        for _ in range(3):
            fwd(x)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(g):
        out = fwd(x)
        tok = out.argmax(dim=-1)
    prefill_x = torch.randn(512, h, device="cuda", dtype=torch.float16)
    n = [0]

    def step():
        g.replay()
        tok.cpu()  # D2H read-back + sync, as a decode step does
        n[0] += 1
        if n[0] % 16 == 0:
            with torch.no_grad():
                fwd(prefill_x).sum().item()

    return step


def make_eager_step():
    x = torch.randn(4096, device="cuda")
    n = [0]

    def step():
        nonlocal x
        x = torch.sin(x) * 0.5 + 0.1
        n[0] += 1
        if n[0] % 100 == 0:
            torch.cuda.synchronize()

    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--loop", choices=["graph", "eager"], required=True)
    ap.add_argument("--size", choices=["small", "8b"], default="small")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--torch-profiler", action="store_true")
    a = ap.parse_args()
    step = make_graph_step(a.size) if a.loop == "graph" else make_eager_step()
    for _ in range(50):
        step()
    torch.cuda.synchronize()
    prof = None
    if a.torch_profiler:
        from torch.profiler import ProfilerActivity, profile

        prof = profile(activities=[ProfilerActivity.CUDA])
        prof.__enter__()
    c0, a0, t0 = time.process_time(), thread_cpu("pm-"), time.perf_counter()
    n = 0
    while True:
        for _ in range(20):
            step()
        n += 20
        if time.perf_counter() - t0 >= a.seconds:
            break
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    c1, a1 = time.process_time(), thread_cpu("pm-")
    if prof is not None:
        prof.__exit__(None, None, None)
    print(json.dumps({"steps_per_s": n / (t1 - t0), "steps": n, "cpu_s": c1 - c0, "agent_thread_cpu_s": a1 - a0, "rss_kb": rss_kb()}))


if __name__ == "__main__":
    main()
