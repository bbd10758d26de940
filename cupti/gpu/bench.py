"""Throughput cost of the CUPTI agent, in one run, interleaved.

  python3 bench.py run --agent /path/libprofilemate.so --pmdrain /path/pmdrain [--seconds 3] [--reps 3] --out bench.json

Workloads (each in a fresh process per mode and repetition):
  graph_decode  CUDA-graph replay of a 24-layer decode-like step, then a small D2H read-back
                (forces a sync), as vLLM does every decode step
  eager         100 tiny elementwise kernels, then synchronize

Modes:
  untraced      no agent
  dormant       agent preloaded and armed at cuInit, collection off (pmdrain -start dormant)
  graph         agent collecting at detail=graph, rings drained by pmdrain
  nodes         agent collecting at detail=nodes
  torch         torch.profiler (CUDA activities only) around the loop, no agent

Per run: steps/s over --seconds after a 1 s warm-up; the agent thread's CPU time
(/proc/self/task/<tid>/schedstat of the thread named "pm-cupti") over the timed loop; VmRSS and
RssShmem of the process; records written by the agent (from pmdrain's summary). Reports the
median over repetitions, the cost vs untraced, agent CPU per record and agent memory
(RSS - untraced RSS), and prints a markdown table for docs/benchmarks.md.

Targets: CUDA 13.0, driver 580, torch 2.11+cu130, Python 3.12, one GPU.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

MODES = ["untraced", "dormant", "graph", "nodes", "torch"]
WORKLOADS = ["graph_decode", "eager"]


def agent_thread_ns():
    total = 0
    found = False
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().strip() != "pm-cupti":
                    continue
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
                found = True
        except OSError:
            pass
    return total if found else None


def mem_kb():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssShmem", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0])
    return out


def build(workload):
    import torch
    torch.manual_seed(0)
    dev = "cuda"
    if workload == "graph_decode":
        layers = [torch.nn.Linear(1024, 1024, device=dev, dtype=torch.float16) for _ in range(24)]
        x = torch.randn(8, 1024, device=dev, dtype=torch.float16)

        def step_body():
            h = x
            for lin in layers:
                h = torch.nn.functional.gelu(lin(h)) + h
            return h

        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s), torch.no_grad():
            for _ in range(3):
                out = step_body()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g), torch.no_grad():
            out = step_body()

        def step():
            g.replay()
            return out[:, :1].to("cpu")  # D2H read-back: synchronizes like sampled-token read-back
        return step
    x = torch.zeros(4096, device=dev)

    def step():
        for _ in range(50):
            x.mul_(1.0001).add_(1e-6)
        torch.cuda.synchronize()
    return step


def cmd_worker(args):
    import torch
    step = build(args.workload)
    prof = None
    if args.mode == "torch":
        from torch.profiler import ProfilerActivity, profile
        prof = profile(activities=[ProfilerActivity.CUDA])
        prof.__enter__()
    t_end = time.monotonic() + 1.0
    while time.monotonic() < t_end:  # warm-up
        step()
    torch.cuda.synchronize()
    cpu0 = agent_thread_ns()
    n = 0
    t0 = time.monotonic()
    t_end = t0 + args.seconds
    while time.monotonic() < t_end:
        step()
        n += 1
    torch.cuda.synchronize()
    el = time.monotonic() - t0
    cpu1 = agent_thread_ns()
    mem = mem_kb()
    if prof is not None:
        prof.__exit__(None, None, None)
    res = {"workload": args.workload, "mode": args.mode, "steps": n, "seconds": el, "steps_per_s": n / el,
           "agent_cpu_ns": (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None, "mem_kb": mem,
           "pid": os.getpid()}
    print("BENCH " + json.dumps(res), flush=True)
    return 0


def run_one(args, workload, mode):
    me = os.path.abspath(__file__)
    worker = [sys.executable, me, "worker", "--workload", workload, "--mode", mode, "--seconds", str(args.seconds)]
    summary = None
    if mode in ("dormant", "graph", "nodes"):
        summary = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
        start = "dormant" if mode == "dormant" else mode
        cmd = [args.pmdrain, "-agent", args.agent, "-start", start, "-summary", summary, "--"] + worker
    else:
        cmd = worker
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("PROFILEMATE_") or k in ("LD_PRELOAD", "CUDA_INJECTION64_PATH", "NVTX_INJECTION64_PATH"):
            del env[k]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.seconds * 10 + 120)
    line = next((l for l in p.stdout.splitlines() if l.startswith("BENCH ")), None)
    if p.returncode != 0 or line is None:
        raise SystemExit(f"{workload}/{mode} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    res = json.loads(line[6:])
    if summary:
        with open(summary) as f:
            procs = json.load(f)["processes"]
        os.unlink(summary)
        me_p = next((q for q in procs if q["pid"] == res["pid"]), None)
        if me_p:
            res["records"] = me_p.get("ring_records_written", 0) + me_p.get("ring_records_dropped", 0)
            res["ring_dropped"] = me_p.get("ring_records_dropped", 0)
            res["source_dropped"] = me_p.get("source_dropped", 0)
            res["agent_stats"] = me_p.get("agent_stats")
    return res


def cmd_run(args):
    results = []
    for rep in range(args.reps):
        for wl in WORKLOADS:
            modes = MODES if rep % 2 == 0 else list(reversed(MODES))  # interleave order
            for mode in modes:
                r = run_one(args, wl, mode)
                r["rep"] = rep
                results.append(r)
                print(f"rep {rep} {wl:12s} {mode:9s} {r['steps_per_s']:10.1f} steps/s", flush=True)
    table = []
    for wl in WORKLOADS:
        base = statistics.median(r["steps_per_s"] for r in results if r["workload"] == wl and r["mode"] == "untraced")
        base_rss = statistics.median(r["mem_kb"]["VmRSS"] for r in results if r["workload"] == wl and r["mode"] == "untraced")
        for mode in MODES:
            rs = [r for r in results if r["workload"] == wl and r["mode"] == mode]
            sps = statistics.median(r["steps_per_s"] for r in rs)
            cpu = [r["agent_cpu_ns"] / r["records"] for r in rs if r.get("agent_cpu_ns") and r.get("records")]
            rss = statistics.median(r["mem_kb"]["VmRSS"] for r in rs)
            table.append({"workload": wl, "mode": mode, "steps_per_s": sps, "cost_pct": (1 - sps / base) * 100,
                          "agent_cpu_ns_per_record": statistics.median(cpu) if cpu else None,
                          "rss_delta_mb": (rss - base_rss) / 1024, "reps": len(rs),
                          "records_per_run": statistics.median([r.get("records", 0) for r in rs]),
                          "dropped": sum(r.get("ring_dropped", 0) + r.get("source_dropped", 0) for r in rs)})
    import torch
    meta = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
            "date": time.strftime("%Y-%m-%d"), "seconds": args.seconds, "reps": args.reps}
    try:
        meta["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                        capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "table": table, "runs": results}, f, indent=1)
    print(f"\n{meta}\n")
    print("| workload | mode | steps/s | cost vs untraced | agent CPU ns/record | RSS Δ MiB | records/run | dropped |")
    print("|---|---|---|---|---|---|---|---|")
    for t in table:
        cpu = f"{t['agent_cpu_ns_per_record']:.0f}" if t["agent_cpu_ns_per_record"] is not None else "–"
        print(f"| {t['workload']} | {t['mode']} | {t['steps_per_s']:.1f} | {t['cost_pct']:+.2f} % | {cpu} | "
              f"{t['rss_delta_mb']:.1f} | {t['records_per_run']:.0f} | {t['dropped']} |")
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--workload", choices=WORKLOADS, required=True)
    w.add_argument("--mode", choices=MODES, required=True)
    w.add_argument("--seconds", type=float, default=3)
    r = sub.add_parser("run")
    r.add_argument("--agent", required=True)
    r.add_argument("--pmdrain", required=True)
    r.add_argument("--seconds", type=float, default=3)
    r.add_argument("--reps", type=int, default=3)
    r.add_argument("--out", default="bench.json")
    args = ap.parse_args()
    if args.cmd == "run":
        args.agent = os.path.abspath(args.agent)
        args.pmdrain = os.path.abspath(args.pmdrain)
        return cmd_run(args)
    return cmd_worker(args)


if __name__ == "__main__":
    sys.exit(main())
