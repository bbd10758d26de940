#!/usr/bin/env python3
"""Summarise e2e-vllm.sh's rotate stage: per engine and mode, median output tokens/s and p50 time
per output token over its loads, and the cost against the same engine's baseline (the plain
engine's untraced loads; the preloaded engine's dormant loads) and against the untraced loads.

    rotate_report.py rotate.jsonl

Cost = base tok/s / mode tok/s - 1 (time per token; positive = slower). Warm-up loads are listed
but never used as a baseline."""
import json
import statistics
import sys

by = {}
for line in open(sys.argv[1]):
    line = line.strip()
    if not line:
        continue
    d = json.loads(line)
    if d.get("r"):
        by.setdefault((d.get("engine", "?"), d["mode"]), []).append(d["r"])


def med(rs, k):
    return statistics.median(r[k] for r in rs)


base = {"plain": ("plain", "untraced"), "pre": ("pre", "dormant")}
untraced = med(by[("plain", "untraced")], "output_tokens_per_s") if ("plain", "untraced") in by else None
print("| engine | mode | loads | output tok/s: median (each load) | vs same engine's baseline | vs untraced engine | p50 TPOT ms (median) | preemptions |")
print("|---|---|---|---|---|---|---|---|")
for (eng, mode), rs in by.items():
    tps = [r["output_tokens_per_s"] for r in rs]
    m = statistics.median(tps)
    b = base.get(eng)
    vs_b = ""
    if b in by and b != (eng, mode) and not mode.startswith("warmup"):
        vs_b = f"{100 * (med(by[b], 'output_tokens_per_s') / m - 1):+.1f} %"
    vs_u = f"{100 * (untraced / m - 1):+.1f} %" if untraced and (eng, mode) != ("plain", "untraced") else ""
    print(f"| {eng} | {mode} | {len(rs)} | {m:.0f} ({', '.join(f'{x:.0f}' for x in tps)}) | {vs_b} | {vs_u} | "
          f"{med(rs, 'tpot_p50_ms'):.3f} | {', '.join(str(r.get('preemptions')) for r in rs)} |")
print("\n(cost = base tok/s / mode tok/s - 1: time per token, positive = slower)")
