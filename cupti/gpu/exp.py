"""Overhead experiment driver for the CUPTI agent (GPU machine; not part of make test-gpu).

One process measures several configurations in interleaved segments, so the comparison between
them does not cross processes:

  --role base   (no agent)        configs: untraced, torchprof (torch.profiler, CUDA only)
  --role agent  (LD_PRELOAD agent) configs: dormant, or NAME=DETAIL:MASK[:SAMPLE[:rb]], switched through
                the ring's control word (PROFILEMATE_KINDS is put in the environment first;
                the agent re-reads it at each control change)

Each segment: switch, warm WARM s untimed, then SEG s timed (steps/s). The ring is drained
after each segment (records are counted by type; on the first repetition kernel and graph-trace
correlation ids are matched against driver- and runtime-API records).
The loops are scripts/gpu/bench.py's (imported from --dist).

  python3 exp.py --dist .gpu --role agent --loop eager --configs dormant,def=graph:0xff,ck=graph:0x1
  python3 exp.py --summary results.jsonl
"""
import argparse
import json
import mmap
import os
import struct
import sys
import time


def find_ring():
    for fd in os.listdir("/proc/self/fd"):
        try:
            if "profilemate-cupti" in os.readlink(f"/proc/self/fd/{fd}"):
                return int(fd)
        except OSError:
            pass
    return None


class Ring:
    def __init__(self, fd):
        self.mm = mmap.mmap(fd, os.fstat(fd).st_size)
        self.hsize = struct.unpack_from("<I", self.mm, 12)[0]
        self.dsize = struct.unpack_from("<Q", self.mm, 16)[0]

    def u32(self, off):
        return struct.unpack_from("<I", self.mm, off)[0]

    def control(self, enable, detail, sample=0):
        struct.pack_into("<III", self.mm, 64, enable, detail, struct.unpack_from("<I", self.mm, 72)[0])
        struct.pack_into("<I", self.mm, 88, sample)
        seq = self.u32(72) + 1
        struct.pack_into("<I", self.mm, 72, seq)
        t0 = time.time()
        while self.u32(76) != seq:
            if time.time() - t0 > 20:
                raise SystemExit("agent did not acknowledge the control change")
            time.sleep(0.002)

    def drain(self, corr=False):
        head = struct.unpack_from("<Q", self.mm, 128)[0]
        tail = struct.unpack_from("<Q", self.mm, 192)[0]
        types = {}
        kern, gt, drv, rt = set(), set(), set(), set()
        pos = tail
        while pos < head:
            off = self.hsize + (pos & (self.dsize - 1))
            typ, _, size = struct.unpack_from("<HHI", self.mm, off)
            if size == 0:
                break
            pos += size
            if typ == 0:
                continue
            types[typ] = types.get(typ, 0) + 1
            if corr:
                if typ == 1:
                    kern.add(struct.unpack_from("<I", self.mm, off + 32)[0])
                elif typ == 3:
                    gt.add(struct.unpack_from("<I", self.mm, off + 24)[0])
                elif typ == 7:
                    dom, _, _, c = struct.unpack_from("<IIII", self.mm, off + 24)
                    (drv if dom == 4 else rt).add(c)
        struct.pack_into("<Q", self.mm, 192, head)
        out = {"types": {str(k): v for k, v in sorted(types.items())},
               "ring_dropped": struct.unpack_from("<Q", self.mm, 144)[0]}
        if corr and (drv or rt):
            out["corr"] = {"kernels": len(kern), "kernels_in_driver": len(kern & drv), "kernels_in_runtime": len(kern & rt),
                           "graphs": len(gt), "graphs_in_driver": len(gt & drv), "graphs_in_runtime": len(gt & rt),
                           "driver_api": len(drv), "runtime_api": len(rt)}
        return out


def measure(step, secs):
    import torch
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    n = 0
    while True:
        for _ in range(20):
            step()
        n += 20
        if time.perf_counter() - t0 >= secs:
            break
    torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def parse_cfg(c):
    if "=" not in c:
        return c, None
    name, spec = c.split("=", 1)
    p = spec.split(":")
    detail = {"graph": 1, "nodes": 2, "off": 0}[p[0]]
    return name, (detail, p[1], int(p[2]) if len(p) > 2 and p[2] else 0, len(p) > 3 and p[3] == "rb")


def run(a):
    sys.path.insert(0, a.dist)
    import bench  # scripts/gpu/bench.py
    import torch
    def build():
        st = bench.make_graph_step(a.size) if a.loop == "graph" else bench.make_eager_step()
        for _ in range(50):
            st()
        return st
    step0 = build()
    torch.cuda.synchronize()
    ring = None
    if a.role == "agent":
        fd = find_ring()
        if fd is None:
            raise SystemExit("no agent ring in this process")
        ring = Ring(fd)
    cfgs = [parse_cfg(c) for c in a.configs.split(",")]
    first = True
    out = open(a.out, "a") if a.out else None
    for rep in range(a.reps):
        for name, spec in cfgs:
            prof = None
            if name == "torchprof":
                from torch.profiler import ProfilerActivity, profile
                prof = profile(activities=[ProfilerActivity.CUDA])
                prof.__enter__()
            elif ring is not None:
                if spec is None:
                    ring.control(0, 1)
                else:
                    os.environ["PROFILEMATE_KINDS"] = spec[1]
                    ring.control(1, spec[0], spec[2])
            # ":rb": capture the graph again after the enable (a graph captured while dormant
            # is what a late attach sees; the record counts tell whether CUPTI traces it)
            step = build() if spec and spec[3] else step0
            measure(step, a.warm * (4 if first and spec else 1))
            first = first and not spec
            sps = measure(step, a.seg)
            info = {}
            if ring is not None:
                ring.control(0, 1)  # dormant: forced flush of the segment's records before counting
                info = ring.drain(corr=rep == 0)
            if prof is not None:
                t0 = time.perf_counter()
                prof.__exit__(None, None, None)
                info["exit_s"] = round(time.perf_counter() - t0, 2)
            line = {"label": a.label, "loop": f"{a.loop}-{a.size}", "cfg": name, "rep": rep, "steps_per_s": round(sps, 1), **info}
            print(json.dumps(line), flush=True)
            if out:
                out.write(json.dumps(line) + "\n")
                out.flush()


def summary(path):
    import statistics
    rows = [json.loads(l) for l in open(path) if l.strip()]
    by = {}
    for r in rows:
        by.setdefault(r["loop"], {}).setdefault(f'{r["label"]}/{r["cfg"]}', []).append(r["steps_per_s"])
    for loop, cfgs in by.items():
        base = [v for k, vs in cfgs.items() if k in ("base/untraced", "base2/untraced") for v in vs]
        dorm = [v for k, vs in cfgs.items() if k.endswith("/dormant") for v in vs]
        mb = statistics.median(base) if base else None
        md = statistics.median(dorm) if dorm else None
        print(f"\n{loop}: untraced median {mb}, dormant median {md}")
        print(f"{'config':28} {'n':>2} {'median steps/s':>15} {'vs untraced':>12} {'vs dormant':>11}  all")
        for k, vs in cfgs.items():
            m = statistics.median(vs)
            cu = f"{(mb / m - 1) * 100:+.1f}%" if mb else "-"
            cd = f"{(md / m - 1) * 100:+.1f}%" if md else "-"
            print(f"{k:28} {len(vs):>2} {m:>15.1f} {cu:>12} {cd:>11}  {[round(v) for v in vs]}")
    for r in rows:
        if "corr" in r:
            print("corr", r["loop"], r["cfg"], json.dumps(r["corr"]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dist", default=".gpu")
    ap.add_argument("--role", choices=["base", "agent"])
    ap.add_argument("--label", default="")
    ap.add_argument("--loop", choices=["graph", "eager"])
    ap.add_argument("--size", default="small")
    ap.add_argument("--configs", default="")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seg", type=float, default=1.0)
    ap.add_argument("--warm", type=float, default=0.2)
    ap.add_argument("--out")
    ap.add_argument("--summary")
    a = ap.parse_args()
    if a.summary:
        summary(a.summary)
        return
    a.label = a.label or a.role
    run(a)


if __name__ == "__main__":
    main()
