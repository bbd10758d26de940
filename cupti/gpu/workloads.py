"""Deterministic torch workloads for comparing the CUPTI agent with torch.profiler.

Two ways to run the same work:

  python3 workloads.py run [--roles FILE]       # plain; traced from outside (pmdrain / profilemate-trace run)
  python3 workloads.py profile --out FILE.json  # the same work under torch.profiler, one process per role

`run` executes, in one process tree:
  * a fork-before-CUDA child (multiprocessing "fork" before the parent touches CUDA) -> role "fork_child"
  * the main workload in the parent                                                   -> role "main"
  * a multiprocessing "spawn" child                                                     -> role "spawn_child"
and writes {pid: role} to --roles (default $PM_ROLES_FILE or ./roles.json).

`profile` runs each role's work in a fresh process under torch.profiler (CUDA activities) and
writes, per role: kernel counts and median durations per kernel name (torch's demangled name and
a short name), how many of those ran inside CUDA graphs, the graph replay count
(cudaGraphLaunch calls), and memcpy bytes/counts per direction.

Both children run `child_work()`; both compare with the "child" profile. The fork child exits
through os._exit (as multiprocessing does); it sleeps 0.6 s first so that the agent's streaming
thread (150 ms period) has flushed everything.

Targets: CUDA 13.0, driver 580, torch 2.11+cu130, Python 3.12, one GPU.
"""
import argparse
import json
import multiprocessing as mp
import os
import re
import sys
import tempfile
import time

N_ELEMWISE = 10       # x (sin, cos, exp)
N_MATMUL = 8
N_TRITON = 5
N_GRAPH_REPLAYS = 20
N_COPIES = 4          # each direction
COPY_BYTES = 4 << 20  # 1 Mi float32


def _triton_kernel():
    try:
        import triton
        import triton.language as tl
    except Exception:  # pragma: no cover - triton ships with torch cu130 wheels
        return None

    @triton.jit
    def pm_triton_add(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask), mask=mask)

    return pm_triton_add


def main_work():
    import torch
    torch.manual_seed(0)
    dev = torch.device("cuda")
    x = torch.randn(1 << 20, device=dev)
    for _ in range(N_ELEMWISE):
        y = torch.sin(x)
        z = torch.cos(y)
        x = torch.exp(z) * 0 + x  # keep values bounded; adds mul+add kernels
    a = torch.randn(1024, 1024, device=dev, dtype=torch.float16)
    b = torch.randn(1024, 1024, device=dev, dtype=torch.float16)
    for _ in range(N_MATMUL):
        c = a @ b
    k = _triton_kernel()
    if k is not None:
        out = torch.empty_like(x)
        for _ in range(N_TRITON):
            k[(triton_grid(x.numel()),)](x, x, out, x.numel(), BLOCK=1024)
    # CUDA graph: capture once, replay N times
    static_x = torch.randn(4096, device=dev)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            static_y = (static_x.sin() * 2 + 1).relu()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        static_y = (static_x.sin() * 2 + 1).relu()
    for _ in range(N_GRAPH_REPLAYS):
        g.replay()
    # copies
    h = torch.randn(COPY_BYTES // 4).pin_memory()
    d = torch.empty(COPY_BYTES // 4, device=dev)
    for _ in range(N_COPIES):
        d.copy_(h, non_blocking=True)
    h2 = torch.empty_like(h).pin_memory()
    for _ in range(N_COPIES):
        h2.copy_(d, non_blocking=True)
    torch.cuda.synchronize()
    return float(static_y.sum().item()) + float(c.float().sum().item())


def triton_grid(n, block=1024):
    return (n + block - 1) // block


def child_work():
    import torch
    torch.manual_seed(1)
    x = torch.randn(1 << 16, device="cuda")
    for _ in range(7):
        x = torch.sin(x)
    torch.cuda.synchronize()
    return float(x.sum().item())


def _fork_child_entry():
    child_work()
    time.sleep(0.6)  # > several agent flush periods; the child leaves through os._exit


def _spawn_child_entry():
    child_work()


def cmd_run(args):
    roles = {}
    # fork BEFORE the parent touches CUDA (vLLM's default worker start)
    fctx = mp.get_context("fork")
    fc = fctx.Process(target=_fork_child_entry)
    fc.start()
    roles[fc.pid] = "fork_child"
    main_work()
    roles[os.getpid()] = "main"
    fc.join()
    sctx = mp.get_context("spawn")
    sc = sctx.Process(target=_spawn_child_entry)
    sc.start()
    roles[sc.pid] = "spawn_child"
    sc.join()
    if fc.exitcode != 0 or sc.exitcode != 0:
        print(f"children failed: fork {fc.exitcode} spawn {sc.exitcode}", file=sys.stderr)
        return 1
    path = args.roles or os.environ.get("PM_ROLES_FILE", "roles.json")
    with open(path, "w") as f:
        json.dump({str(k): v for k, v in roles.items()}, f, indent=1)
    print(f"workloads: roles written to {path}: {roles}")
    return 0


_ANON = "(anonymous namespace)"


def short_name(name):
    """'void at::native::foo<4, ...>(int, ...)' -> 'at::native::foo' (matches cupti.Demangle's short form)."""
    s = name.replace(_ANON, "\x00")
    out, depth = [], 0
    for ch in s:
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(ch)
    s = "".join(out).strip().replace("\x00", _ANON)
    if s.startswith("void "):
        s = s[5:]
    return s.strip()


def _median(v):
    v = sorted(v)
    if not v:
        return 0.0
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2


def profile_role(role):
    """Runs one role's work under torch.profiler in this process and returns the summary."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    fn = main_work if role == "main" else child_work
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tf:
        path = tf.name
    prof.export_chrome_trace(path)
    with open(path) as f:
        trace = json.load(f)
    os.unlink(path)
    evs = trace.get("traceEvents", [])
    runtime_by_corr = {}
    graph_launches = 0
    for e in evs:
        if e.get("cat") in ("cuda_runtime", "cuda_driver"):
            corr = (e.get("args") or {}).get("correlation")
            if corr is not None:
                runtime_by_corr[corr] = e.get("name", "")
            if e.get("name", "").startswith(("cudaGraphLaunch", "cuGraphLaunch")):
                graph_launches += 1
    kernels, durs = {}, {}
    copies_b, copies_n = {}, {}
    for e in evs:
        cat = e.get("cat")
        args = e.get("args") or {}
        if cat == "kernel":
            n = e["name"]
            k = kernels.setdefault(n, {"short": short_name(n), "count": 0, "graph_count": 0})
            k["count"] += 1
            if runtime_by_corr.get(args.get("correlation"), "").startswith(("cudaGraphLaunch", "cuGraphLaunch")):
                k["graph_count"] += 1
            durs.setdefault(n, []).append(float(e.get("dur", 0)))
        elif cat == "gpu_memcpy":
            m = re.search(r"(HtoD|DtoH|DtoD|HtoH|PtoP)", e.get("name", ""))
            kind = m.group(1) if m else e.get("name", "?")
            copies_b[kind] = copies_b.get(kind, 0) + int(args.get("bytes", 0))
            copies_n[kind] = copies_n.get(kind, 0) + 1
    for n, k in kernels.items():
        k["median_us"] = _median(durs[n])
    return {"kernels": kernels, "graph_replays": graph_launches, "memcpy_bytes": copies_b, "memcpy_count": copies_n,
            "torch": torch.__version__, "cuda": torch.version.cuda}


def _profile_child(role, q):
    try:
        q.put((role, profile_role(role), None))
    except Exception as ex:  # report, never hang the parent
        q.put((role, None, repr(ex)))


def cmd_profile(args):
    # each role in a fresh spawn process: CUDA context and CUPTI state start clean, like under the agent
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    out = {}
    for role in ("main", "child"):
        p = ctx.Process(target=_profile_child, args=(role, q))
        p.start()
        r, summary, err = q.get(timeout=600)
        p.join()
        if err:
            print(f"profile {role}: {err}", file=sys.stderr)
            return 1
        out[r] = summary
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"workloads: torch.profiler summary written to {args.out}")
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--roles")
    p = sub.add_parser("profile")
    p.add_argument("--out", required=True)
    args = ap.parse_args()
    return cmd_run(args) if args.cmd == "run" else cmd_profile(args)


if __name__ == "__main__":
    sys.exit(main())
