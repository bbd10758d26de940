"""Compare a traced run of workload.py with torch.profiler on the same workload.

  python3 compare.py EXPECT_GRAPH.json EXPECT_NODES.json TORCHPROF.json GRAPH_SESSION NODES_SESSION PYHOOK_DIR

Checks (each printed as a row of a markdown table; exit 1 if any fails):
  * per kernel name: our count == torch.profiler's (nodes level: all kernels; graph level:
    kernels outside graphs), medians within 2 %;
  * CUDA-graph replays == the workload's count (graph level);
  * H2D / D2H bytes == torch.profiler's and the workload's;
  * the fork-before-CUDA child and the spawn child each have their own stream with their kernels.
Raw streams are decoded with the generated record layouts (pyhook/profilemate_trace/_records.py).
"""
import csv
import glob
import json
import os
import struct
import sys

exp_path, expn_path, tp_path, gdir, ndir, pyhook = sys.argv[1:7]
sys.path.insert(0, pyhook)
from profilemate_trace import _records as R  # noqa: E402

exp = json.load(open(exp_path))
expn = json.load(open(expn_path))
tp = json.load(open(tp_path))
rows, failed = [], []


def check(name, ok, detail):
    rows.append((name, "PASS" if ok else "FAIL", detail))
    if not ok:
        failed.append(name)


def raw_streams(session):
    """The CUPTI streams of a session: [(meta, [(record name, fields)])]."""
    out = []
    for p in sorted(glob.glob(os.path.join(session, "raw", "*.cupti.pmr"))):
        b = open(p, "rb").read()
        mlen = struct.unpack_from("<I", b, 12)[0]
        meta = json.loads(b[16 : 16 + mlen])
        off = 16 + mlen + (-mlen % 8)
        recs = []
        while off + 8 <= len(b):
            t, _, size = struct.unpack_from("<HHI", b, off)
            spec = R.BY_TYPE.get(t)
            if spec is not None:
                recs.append((spec.name, spec.unpack(b[off : off + size])))
            off += size
        out.append((meta, recs))
    return out


def kernels_csv(session):
    with open(os.path.join(session, "gpu_kernels.csv")) as f:
        return list(csv.DictReader(f))


G, N = kernels_csv(gdir), kernels_csv(ndir)
gs, ns = raw_streams(gdir), raw_streams(ndir)
main_pid, main_pid_nodes = exp["main_pid"], expn["main_pid"]
# Demangled names as the export writes them (torch.profiler reports demangled names).
demangled = {}
for r in G + N:
    demangled[r["raw_name"]] = r["demangled_name"] or r["raw_name"]


def counts(streams, pid):
    """Per demangled kernel name: (all, inside graphs, sorted durations us) for one process."""
    out = {}
    for meta, recs in streams:
        if meta["pid"] != pid:
            continue
        names = {r["name_id"]: r["name"].decode(errors="replace") for k, r in recs if k == "kernel_name"}
        for k, r in recs:
            if k != "kernel":
                continue
            n = demangled.get(names.get(r["name_id"], ""), names.get(r["name_id"], ""))
            c = out.setdefault(n, [0, 0, []])
            c[0] += 1
            c[1] += 1 if r["graph_id"] else 0
            c[2].append((r["end_ns"] - r["start_ns"]) / 1e3)
    for c in out.values():
        c[2].sort()
    return out


gc, nc = counts(gs, main_pid), counts(ns, main_pid_nodes)
# The CSV is the sum over processes of the raw streams.
for label, rows_, streams in (("graph", G, gs), ("nodes", N, ns)):
    total = sum(sum(1 for k, _ in recs if k == "kernel") for _, recs in streams)
    check(f"gpu_kernels.csv count == raw kernel records ({label})", sum(int(r["count"]) for r in rows_) == total, f"{total} records")

# Kernel counts and medians against torch.profiler (main process).
unmatched = []
for name, t in sorted(tp["kernels"].items(), key=lambda kv: -kv[1]["count"]):
    if name not in nc:
        unmatched.append(name)
        continue
    n_all, n_graph, durs = nc[name]
    short = name.split("<")[0].replace("void ", "")[:60]
    check(f"nodes count {short}", n_all == t["count"], f"ours {n_all} torch {t['count']}")
    g_eager = gc.get(name, [0, 0, []])
    check(f"graph-level eager count {short}", g_eager[0] - g_eager[1] == t["count"] - n_graph,
          f"ours {g_eager[0] - g_eager[1]} torch {t['count']} - {n_graph} in graphs")
    if t["count"] >= 20 and durs:
        med = durs[len(durs) // 2]
        rel = abs(med - t["median_us"]) / t["median_us"] if t["median_us"] else 0
        check(f"median {short}", rel <= 0.02, f"ours {med:.3f} us torch {t['median_us']:.3f} us ({100*rel:.2f} %)")
check("every torch.profiler kernel name matched", not unmatched, "; ".join(unmatched[:5]))

# Graph replays.
replays = 0
for meta, recs in gs:
    replays += sum(1 for n, _ in recs if n == "graph_trace")
check("graph replays (graph level)", replays == exp["replays"], f"ours {replays} workload {exp['replays']}")

# Copies.
for level, streams, mpid in (("graph", gs, main_pid), ("nodes", ns, main_pid_nodes)):
    h2d = d2h = 0
    for meta, recs in streams:
        if meta["pid"] != mpid:
            continue
        for n, r in recs:
            if n == "memcpy":
                if r["copy_kind"] == 1:
                    h2d += r["bytes"]
                elif r["copy_kind"] == 2:
                    d2h += r["bytes"]
    check(f"H2D bytes ({level})", h2d == tp["h2d_bytes"] and h2d >= exp["h2d_bytes"], f"ours {h2d} torch {tp['h2d_bytes']} workload >= {exp['h2d_bytes']}")
    check(f"D2H bytes ({level})", d2h == tp["d2h_bytes"] and d2h >= exp["d2h_bytes"], f"ours {d2h} torch {tp['d2h_bytes']} workload >= {exp['d2h_bytes']}")

# Children: their own streams, their own kernels.
for child, needle in (("fork_child", "exp_kernel"), ("spawn_child", "log1p")):
    pid = exp[child]["pid"]
    n = 0
    found = False
    for meta, recs in gs:
        if meta["pid"] != pid:
            continue
        found = True
        names = {r["name_id"]: r["name"].decode(errors="replace") for k, r in recs if k == "kernel_name"}
        n = sum(1 for k, r in recs if k == "kernel" and needle in names.get(r["name_id"], ""))
    check(f"{child} stream", found and n == exp[child]["kernels"], f"pid {pid} stream={found} {needle} kernels {n} (want {exp[child]['kernels']})")

print("| check | result | detail |\n|---|---|---|")
for r in rows:
    print("| %s | %s | %s |" % r)
print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
