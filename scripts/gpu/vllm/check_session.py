#!/usr/bin/env python3
"""Check a profilemate-trace session of a real vLLM run against vLLM's own statistics.

    check_session.py [--label L] SESSION_DIR VLLM_RESULT.json

Prints, per output file, its row count; then compares what both sides know:
  * preemptions: preemption_events.csv (event=preempted) vs vLLM's vllm:num_preemptions counter
  * requests: request_lifecycle.csv finished requests vs the requests vLLM completed
  * KV cache: kv_cache_usage.csv total_blocks vs vLLM's num_gpu_blocks; peak usage
  * CUDA graphs: captured num_tokens vs vLLM's cudagraph_capture_sizes; replays > 0
  * forward passes: prefill and decode steps with GPU time
Lines start with PASS, FAIL or INFO. Exit status 1 when any FAIL.
"""
import argparse
import csv
import json
import os
import sys


def rows(s, name):
    p = os.path.join(s, name)
    if not os.path.exists(p):
        return None
    with open(p, newline="") as f:
        return list(csv.DictReader(f))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", default="")
    ap.add_argument("session")
    ap.add_argument("result")
    a = ap.parse_args()
    s, L = a.session.rstrip("/"), a.label
    fails = 0

    def say(ok, msg):
        nonlocal fails
        tag = "INFO" if ok is None else ("PASS" if ok else "FAIL")
        fails += ok is False
        print(f"{tag} [{L}] {msg}")

    try:
        r = json.load(open(a.result))
    except Exception as e:
        say(False, f"no vLLM result ({e}): the engine did not finish")
        r = {}
    meta = json.load(open(os.path.join(s, "metadata.json")))
    files = sorted(f for f in os.listdir(s) if f.endswith((".csv", ".json", ".txt")))
    counts = {}
    for f in files:
        if f.endswith(".csv"):
            counts[f] = len(rows(s, f) or [])
    say(None, "rows: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    for st in meta.get("streams", []):
        say(None, f"stream {st.get('file')}: records={st.get('records')} dropped={st.get('records_dropped', st.get('dropped'))} state={st.get('producer_state')}")
    unavailable = [p for p, v in (meta.get("pyhook_patches") or {}).items() if isinstance(v, str) and v != "ok"] \
        if isinstance(meta.get("pyhook_patches"), dict) else meta.get("pyhook_patches")
    say(None, f"pyhook patches not ok: {unavailable}")

    for f in ["gpu_kernels.csv", "forward_pass_timing.csv", "batch_utilization.csv", "kv_cache_usage.csv",
              "request_lifecycle.csv", "cuda_graph_usage.csv", "cpu_operations_timing.csv"]:
        say(counts.get(f, 0) > 0, f"{f} non-empty ({counts.get(f, 0)} rows)")

    attach = L.startswith("attach")
    pre = [x for x in rows(s, "preemption_events.csv") or [] if x.get("event", "preempted") == "preempted"]
    if "preemptions" in r and not attach:
        say(len(pre) == r["preemptions"] or (r["preemptions"] > 0 and len(pre) >= r["preemptions"]),
            f"preemptions: trace {len(pre)}, vLLM counter {r['preemptions']} (measured load; the trace also holds warm-up)")
    else:
        say(None, f"preemptions in window: {len(pre)}")
    lc = rows(s, "request_lifecycle.csv") or []
    fin = [x for x in lc if x.get("finished_sec")]
    if r.get("requests") and not attach:
        say(len(fin) >= r["requests"], f"finished requests: trace {len(fin)}, vLLM {r['requests']} measured (+ warm-up)")
        outtok = sum(int(x.get("num_output_tokens") or 0) for x in fin)
        say(outtok >= r.get("output_tokens", 0), f"output tokens: trace {outtok}, vLLM {r.get('output_tokens')} measured (+ warm-up)")
    kv = rows(s, "kv_cache_usage.csv") or []
    if kv:
        tb = {int(x["total_blocks"]) for x in kv if x.get("total_blocks")}
        peak = max(float(x["usage_pct"]) for x in kv)
        want = r.get("num_gpu_blocks")
        say(want is None or any(abs(t - want) <= 1 for t in tb), f"KV total_blocks {sorted(tb)} vs vLLM num_gpu_blocks {want}; peak usage {peak:.1f}%")
        say(None, f"vLLM's own KV gauge at the end: {r.get('metrics_after')}")
    caps = rows(s, "cuda_graph_captures.csv") or []
    sizes = sorted({int(x["num_tokens"]) for x in caps if x.get("num_tokens")})
    want = sorted(set(r.get("cudagraph_capture_sizes") or []))
    if not attach:
        say(bool(caps) and set(sizes) <= set(want) | {0} and len(sizes) >= min(len(want), 1),
            f"graph captures: {len(caps)} rows, sizes {sizes[:8]}… vs vLLM capture sizes {want[:8]}… ({len(want)})")
    use = rows(s, "cuda_graph_usage.csv") or []
    rep = sum(int(x.get("replay_count") or 0) for x in use)
    say(rep > 0, f"graph replays: {rep} over {len(use)} shapes")
    fp = rows(s, "forward_pass_timing.csv") or []
    ph = {}
    for x in fp:
        ph.setdefault(x.get("phase"), []).append(float(x.get("gpu_time_us") or 0))
    for k, v in ph.items():
        v.sort()
        say(None, f"forward {k}: {len(v)} steps, GPU p50 {v[len(v) // 2]:.0f} us, with GPU time {sum(1 for t in v if t > 0)}")
    say(any(sum(1 for t in v if t > 0) for v in ph.values()), "forward passes carry GPU time")
    if L.startswith("moe"):
        act = rows(s, "moe_expert_activations.csv") or []
        say(len(act) > 0, f"moe_expert_activations.csv: {len(act)} rows, layers {len({x['layer_idx'] for x in act})}")
        try:
            say(None, "moe_summary.json: " + json.dumps(json.load(open(os.path.join(s, "moe_summary.json"))))[:400])
        except Exception as e:
            say(False, f"moe_summary.json: {e}")
    if "output_tokens_per_s" in r:
        say(None, f"vLLM: {r['output_tokens_per_s']} output tok/s, p50 TPOT {r['tpot_p50_ms']} ms, preemptions {r.get('preemptions')}")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
