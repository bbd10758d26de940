"""Compare the agent's per-process summary (pmdrain, detail=nodes) with torch.profiler's.

  python3 compare.py --agent agent.json --roles roles.json --torch torch.json [--agent-graph agent_graph.json]

Checks per role (main, fork_child and spawn_child against "child"):
  * kernel count per short name equal (short: 'at::native::vectorized_elementwise_kernel');
    also per full name where both sides' demangled names agree after removing spaces
  * median kernel duration per short name within 2 %
  * graph replay count exact (torch: cudaGraphLaunch calls; agent: distinct graph-launch
    correlation ids at nodes level, or graph_trace records in --agent-graph)
  * memcpy bytes and counts per direction exact
Exit status 1 on any mismatch. Prints a table either way.
"""
import argparse
import json
import sys


def by_short(kernels, key_full):
    out = {}
    for name, k in kernels.items():
        s = k["short"]
        o = out.setdefault(s, {"count": 0, "graph_count": 0, "medians": []})
        o["count"] += k["count"]
        o["graph_count"] += k.get("graph_count", 0)
        o["medians"].append((k["count"], k.get("median_us", 0.0)))
    for o in out.values():
        # count-weighted median of medians (exact when one full name per short name)
        ms = sorted(o["medians"], key=lambda t: t[1])
        total = sum(c for c, _ in ms)
        acc, med = 0, 0.0
        for c, m in ms:
            acc += c
            if acc * 2 >= total:
                med = m
                break
        o["median_us"] = med
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", required=True, help="pmdrain summary, detail=nodes")
    ap.add_argument("--agent-graph", help="pmdrain summary of a second run at detail=graph (graph replay count)")
    ap.add_argument("--roles", required=True)
    ap.add_argument("--torch", required=True)
    ap.add_argument("--tolerance", type=float, default=0.02)
    args = ap.parse_args()
    agent = {str(p["pid"]): p for p in json.load(open(args.agent))["processes"]}
    roles = json.load(open(args.roles))
    torch = json.load(open(args.torch))
    graph_runs = None
    if args.agent_graph:
        graph_runs = json.load(open(args.agent_graph))["processes"]
    ok = True
    rows = []
    for pid, role in sorted(roles.items(), key=lambda t: t[1]):
        ref = torch["main" if role == "main" else "child"]
        a = agent.get(pid)
        if a is None:
            print(f"FAIL {role} (pid {pid}): no ring from this process")
            ok = False
            continue
        if a.get("ring_records_dropped") or a.get("source_dropped"):
            print(f"WARN {role}: agent dropped records: ring {a.get('ring_records_dropped')} source {a.get('source_dropped')}")
        ak, tk = by_short(a["kernels"], "full"), by_short(ref["kernels"], None)
        for name in sorted(set(ak) | set(tk)):
            ac, tc = ak.get(name, {}).get("count", 0), tk.get(name, {}).get("count", 0)
            am, tm = ak.get(name, {}).get("median_us", 0.0), tk.get(name, {}).get("median_us", 0.0)
            dev = abs(am - tm) / tm if tm else (0.0 if am == 0 else 1.0)
            good = ac == tc and dev <= args.tolerance
            ok &= good
            rows.append((role, name[:60], ac, tc, f"{am:.2f}", f"{tm:.2f}", f"{dev*100:.1f}%", "ok" if good else "FAIL"))
        # exact full-name agreement (informational)
        full_a = {k["full"].replace(" ", ""): k["count"] for k in a["kernels"].values()}
        full_t = {n.replace(" ", ""): k["count"] for n, k in ref["kernels"].items()}
        same = sum(1 for n in full_t if full_a.get(n) == full_t[n])
        print(f"{role}: full demangled names agreeing with torch: {same}/{len(full_t)}")
        # graph replays
        corr_launches = sum(k.get("graph_count", 0) for k in a["kernels"].values())
        nodes_per_replay = None
        t_graph_kernels = sum(k.get("graph_count", 0) for k in ref["kernels"].values())
        if ref["graph_replays"]:
            nodes_per_replay = t_graph_kernels / ref["graph_replays"]
        a_replays = corr_launches / nodes_per_replay if nodes_per_replay else 0
        if graph_runs is not None and role == "main":
            a_replays = max((p.get("graph_replays", 0) for p in graph_runs), default=0)
        good = round(a_replays) == ref["graph_replays"] and (nodes_per_replay is None or corr_launches == t_graph_kernels)
        ok &= good
        rows.append((role, "graph replays", round(a_replays), ref["graph_replays"], "", "", "", "ok" if good else "FAIL"))
        for kind in sorted(set(a["memcpy_bytes"]) | set(ref["memcpy_bytes"])):
            ab, tb = a["memcpy_bytes"].get(kind, 0), ref["memcpy_bytes"].get(kind, 0)
            an, tn = a["memcpy_count"].get(kind, 0), ref["memcpy_count"].get(kind, 0)
            good = ab == tb and an == tn
            ok &= good
            rows.append((role, f"memcpy {kind} bytes/count", f"{ab}/{an}", f"{tb}/{tn}", "", "", "", "ok" if good else "FAIL"))
    hdr = ("role", "kernel / item", "agent", "torch", "agent med µs", "torch med µs", "Δmed", "")
    w = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
    for r in [hdr] + rows:
        print("  ".join(str(c).ljust(w[i]) for i, c in enumerate(r)))
    print("RESULT:", "all match" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
