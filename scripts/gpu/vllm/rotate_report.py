#!/usr/bin/env python3
"""Summarise e2e-vllm.sh's rotate stage: per mode, median output tokens/s and p50 TPOT over its loads.

    rotate_report.py rotate.jsonl
"""
import json
import statistics
import sys

by = {}
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d.get("r"):
        by.setdefault(d["mode"], []).append(d["r"])
order = [m for m in ("untraced", "dormant", "after-detach", "graph", "nodes", "torchprof") if m in by]
base_tps = statistics.median(r["output_tokens_per_s"] for r in by["untraced"]) if "untraced" in by else None
# same-engine baseline: the preloaded engine's untraced loads (before any attach, and after detach)
dl = by.get("dormant", []) + by.get("after-detach", [])
base_dorm = statistics.median(r["output_tokens_per_s"] for r in dl) if dl else None
print("| mode | loads | output tok/s (median; each load) | vs untraced | vs the same engine untraced | p50 TPOT ms (median) | preemptions |")
print("|---|---|---|---|---|---|---|")
for m in order:
    rs = by[m]
    tps = [r["output_tokens_per_s"] for r in rs]
    med = statistics.median(tps)
    tp = statistics.median(r["tpot_p50_ms"] for r in rs)
    vs_u = f"{100 * (base_tps / med - 1):+.1f} %" if base_tps else ""
    vs_d = f"{100 * (base_dorm / med - 1):+.1f} %" if base_dorm and m in ("graph", "nodes") else ""
    print(f"| {m} | {len(rs)} | {med:.0f} ({', '.join(f'{x:.0f}' for x in tps)}) | {vs_u} | {vs_d} | {tp:.3f} | "
          f"{', '.join(str(r['preemptions']) for r in rs)} |")
print("\n(cost = time per token: base_tok_s / mode_tok_s - 1; positive = slower)")
