"""Aggregate bench-gpu results (median over repetitions) into a markdown table."""
import json
import statistics
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
gpu = open(sys.argv[2]).read().strip().replace("\n", ", ")
print(f"GPU/driver/date: {gpu}\n")
for loop in sorted({r["loop"] for r in rows}):
    base = statistics.median(r["r"]["steps_per_s"] for r in rows if r["loop"] == loop and r["mode"] == "untraced")
    base_rss = statistics.median(r["r"]["rss_kb"] for r in rows if r["loop"] == loop and r["mode"] == "untraced")
    print(f"### {loop} loop (untraced: {base:.1f} steps/s)\n")
    print("| mode | steps/s (median) | cost vs untraced | runs (steps/s) | records | agent thread CPU per record | RSS delta |")
    print("|---|---|---|---|---|---|---|")
    for mode in ("untraced", "dormant", "dormant-light", "dormant-armgraph", "graph", "lean", "nodes", "torchprof"):
        rs = [r for r in rows if r["loop"] == loop and r["mode"] == mode]
        if not rs:
            continue
        v = statistics.median(r["r"]["steps_per_s"] for r in rs)
        recs = statistics.median(r["records"] for r in rs)
        acpu = statistics.median(r["r"]["agent_thread_cpu_s"] for r in rs)
        per = f"{1e6 * acpu / recs:.2f} µs" if recs else "-"
        rss = statistics.median(r["r"]["rss_kb"] for r in rs) - base_rss
        runs = ", ".join(f"{r['r']['steps_per_s']:.0f}" for r in rs)
        print(f"| {mode} | {v:.1f} | {100 * (base - v) / base:+.2f} % | {runs} | {recs:.0f} | {per} | {rss / 1024:+.1f} MiB |")
    print()
