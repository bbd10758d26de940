"""Deterministic torch workload for `make test-gpu`: eager ATen kernels, cuBLAS, a Triton
kernel, CUDA-graph replays, H2D/D2H copies of known sizes, a multiprocessing child forked
before CUDA is initialised and a spawned child.

  python3 workload.py --expect OUT.json            # plain run (to be traced from outside)
  python3 workload.py --torch-profiler OUT.json    # same work under torch.profiler (CUDA only)

--expect writes what the workload did (counts, bytes). --torch-profiler writes what Kineto saw:
per kernel name count and median duration, memcpy bytes by direction, for the main process
only (torch.profiler cannot follow children).
"""
import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile

N_SIN, N_MM, N_TRITON, N_REPLAY, N_COPY = 300, 40, 60, 200, 8
COPY_BYTES = 1 << 20
N_CHILD = 30


def child_fork(q):
    import torch  # CUDA is initialised here, in the child, for the first time

    x = torch.ones(1 << 16, device="cuda")
    for _ in range(N_CHILD):
        x = torch.exp(x * 0.5)
    torch.cuda.synchronize()
    q.put(os.getpid())


def child_spawn(q):
    import torch

    x = torch.ones(1 << 16, device="cuda")
    for _ in range(N_CHILD):
        x = torch.log1p(x)
    torch.cuda.synchronize()
    q.put(os.getpid())


def main_work():
    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def pm_triton_axpy(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        tl.store(y_ptr + i, tl.load(x_ptr + i, mask=m) * 2.0 + tl.load(y_ptr + i, mask=m), mask=m)

    x = torch.randn(1 << 20, device="cuda")
    for _ in range(N_SIN):
        x = torch.sin(x)
    a = torch.randn(1024, 1024, device="cuda", dtype=torch.float16)
    b = torch.randn(1024, 1024, device="cuda", dtype=torch.float16)
    for _ in range(N_MM):
        c = a @ b
    tx, ty = torch.randn(1 << 16, device="cuda"), torch.randn(1 << 16, device="cuda")
    pm_triton_axpy[(64,)](tx, ty, tx.numel(), BLOCK=1024)  # compile + warm
    torch.cuda.synchronize()
    for _ in range(N_TRITON):
        pm_triton_axpy[(64,)](tx, ty, tx.numel(), BLOCK=1024)
    static = torch.randn(1 << 16, device="cuda")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        for _ in range(3):
            static.mul_(1.0001)
            static.add_(0.5)
            torch.tanh_(static)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        static.mul_(1.0001)
        static.add_(0.5)
        torch.tanh_(static)
    for _ in range(N_REPLAY):
        g.replay()
    host = torch.ones(COPY_BYTES // 4, dtype=torch.float32).pin_memory()
    for _ in range(N_COPY):
        d = host.to("cuda", non_blocking=True)
        back = d.to("cpu")
    torch.cuda.synchronize()
    return {"sin": N_SIN, "matmul": N_MM, "triton": N_TRITON, "replays": N_REPLAY, "graph_nodes": 3,
            "h2d_bytes": N_COPY * COPY_BYTES, "d2h_bytes": N_COPY * COPY_BYTES}


def profile(out):
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        main_work()
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    prof.export_chrome_trace(path)
    with open(path) as f:
        tr = json.load(f)
    os.unlink(path)
    kernels, copies = {}, {"h2d_bytes": 0, "d2h_bytes": 0}
    for e in tr.get("traceEvents", []):
        cat = e.get("cat", "")
        if cat == "kernel":
            kernels.setdefault(e["name"], []).append(float(e.get("dur", 0)))
        elif cat == "gpu_memcpy":
            n = int(e.get("args", {}).get("bytes", 0))
            if "HtoD" in e["name"]:
                copies["h2d_bytes"] += n
            elif "DtoH" in e["name"]:
                copies["d2h_bytes"] += n
    res = {"kernels": {k: {"count": len(v), "median_us": statistics.median(v)} for k, v in kernels.items()}}
    res.update(copies)
    with open(out, "w") as f:
        json.dump(res, f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--expect")
    ap.add_argument("--torch-profiler")
    args = ap.parse_args()
    if args.torch_profiler:
        profile(args.torch_profiler)
        return
    q = mp.get_context("fork").Queue()
    pf = mp.get_context("fork").Process(target=child_fork, args=(q,))
    pf.start()  # forked before this process touches CUDA
    pf.join()
    exp = main_work()
    qs = mp.get_context("spawn").Queue()
    ps = mp.get_context("spawn").Process(target=child_spawn, args=(qs,))
    ps.start()
    ps.join()
    exp["fork_child"] = {"pid": q.get(timeout=60), "exitcode": pf.exitcode, "kernels": N_CHILD}
    exp["spawn_child"] = {"pid": qs.get(timeout=60), "exitcode": ps.exitcode, "kernels": N_CHILD}
    exp["main_pid"] = os.getpid()
    if args.expect:
        with open(args.expect, "w") as f:
            json.dump(exp, f, indent=1)


if __name__ == "__main__":
    main()
