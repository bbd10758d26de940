"""Check one attach --inject=ptrace capture of inject_workload.py (called by inject-check.sh).

  python inject_check.py EXPECT.json SESSION_DIR PYHOOK_DIR STEPS_LOG T_ATTACH_START T_ATTACH_END LABEL

Prints PASS/FAIL lines and the measurements; exits 1 if a check failed:
  * every complete step in the window (marker to next marker) has exactly torch.profiler's kernel
    counts per name for one step, and there are at least 20 of them;
  * metadata.json: injected by ptrace, detach acknowledged, staging removed; the agent's
    published first-enable time is printed;
  * the target after detach: no agent thread (pm-*), ring descriptor or mapping, no tracer, no
    staging directory;
  * steps/s in the 3 s before the attach, during it, and in the 3 s after; the longest step
    during the attach against the median step before (what the workload felt).
"""
import collections
import csv
import glob
import json
import os
import statistics
import struct
import sys

exp_path, sess, pyhook, steps_log, t0, t1, label = sys.argv[1:8]
t0, t1 = float(t0), float(t1)
sys.path.insert(0, pyhook)
from profilemate_trace import _records as R  # noqa: E402

failed = []


def check(name, ok, detail):
    print("%s %s: %s (%s)" % ("PASS" if ok else "FAIL", label, name, detail), flush=True)
    if not ok:
        failed.append(name)


exp = json.load(open(exp_path))["per_step"]
md = json.load(open(os.path.join(sess, "metadata.json")))
inj = md.get("injection") or {}
procs = inj.get("processes") or []
check("metadata.json has the injection", inj.get("requested") == "ptrace" and len(procs) >= 1, json.dumps(inj)[:400])
p = procs[0] if procs else {}
pid = p.get("pid", 0)
check("loaded by ptrace", p.get("method") == "ptrace" and p.get("start_result") == 0,
      "thread %s parked in %s, stopped %s ms, load %s ms" % (p.get("tid"), p.get("syscall"), p.get("thread_stopped_ms"), p.get("load_ms")))
check("detach acknowledged", p.get("detach") == "acknowledged" and inj.get("staging_removed") is True,
      "detach %r, staging removed %r" % (p.get("detach"), inj.get("staging_removed")))
stall = p.get("first_enable_stall_ms")
print("MEASURE %s: first enable (agent arming CUPTI late) took %s ms (agent's first_enable_ns)" % (label, stall))

demangled = {}
with open(os.path.join(sess, "gpu_kernels.csv")) as f:
    for r in csv.DictReader(f):
        demangled[r["raw_name"]] = r["demangled_name"] or r["raw_name"]
kernels = []
for path in glob.glob(os.path.join(sess, "raw", "%d.cupti*.pmr" % pid)):
    b = open(path, "rb").read()
    mlen = struct.unpack_from("<I", b, 12)[0]
    off = 16 + mlen + (-mlen % 8)
    names, ks = {}, []
    while off + 8 <= len(b):
        t, _, size = struct.unpack_from("<HHI", b, off)
        spec = R.BY_TYPE.get(t)
        if spec is not None and spec.name in ("kernel", "kernel_name"):
            r = spec.unpack(b[off : off + size])
            if spec.name == "kernel_name":
                names[r["name_id"]] = r["name"].decode(errors="replace")
            else:
                ks.append((r["start_ns"], r["name_id"]))
        off += size
    for ts, nid in ks:
        raw = names.get(nid, "?")
        kernels.append((ts, demangled.get(raw, raw)))
kernels.sort()
marks = [i for i, (_, n) in enumerate(kernels) if "spin_kernel" in n]
steps = [collections.Counter(n for _, n in kernels[a:b]) for a, b in zip(marks, marks[1:])]
want = collections.Counter(exp)
bad = [(i, dict(s - want), dict(want - s)) for i, s in enumerate(steps) if s != want]
check("kernel counts per name of every complete step == torch.profiler's one step",
      len(steps) >= 20 and not bad,
      "%d kernels, %d complete steps, %d differ%s" % (len(kernels), len(steps), len(bad),
                                                       ("; first: step %d extra %s missing %s" % bad[0]) if bad else ""))

# The target after detach.
left = []
for tid in os.listdir("/proc/%d/task" % pid) if os.path.isdir("/proc/%d" % pid) else []:
    try:
        comm = open("/proc/%d/task/%s/comm" % (pid, tid)).read().strip()
        status = open("/proc/%d/task/%s/status" % (pid, tid)).read()
    except OSError:
        continue
    if comm.startswith("pm-"):
        left.append("thread %s %s" % (tid, comm))
    if "TracerPid:\t0\n" not in status:
        left.append("thread %s traced" % tid)
for fd in os.listdir("/proc/%d/fd" % pid) if os.path.isdir("/proc/%d" % pid) else []:
    try:
        link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        if "memfd:profilemate" in link or "/profilemate-inject-" in link or link.endswith("/libprofilemate.so"):
            left.append("fd " + fd)
    except OSError:
        pass
maps = open("/proc/%d/maps" % pid).read() if os.path.isdir("/proc/%d" % pid) else ""
left += ["ring mapping" for l in maps.splitlines() if "memfd:profilemate" in l]
left += glob.glob("/tmp/profilemate-inject-%d-*" % pid)
check("target alive and left as it was", os.path.isdir("/proc/%d" % pid) and not left, ", ".join(left) or "nothing left")

# Steps/s around the attach, from the workload's own log.
rows = []
for line in open(steps_log):
    try:
        a, d = line.split()
        rows.append((float(a), float(d)))
    except ValueError:
        pass


def rate(lo, hi):
    n = sum(1 for a, _ in rows if lo <= a < hi)
    return n / (hi - lo) if hi > lo else 0.0


before = [d for a, d in rows if t0 - 3 <= a < t0]
during = [d for a, d in rows if t0 <= a < t1]
print("MEASURE %s: steps/s before %.1f, during attach %.1f, after %.1f" % (label, rate(t0 - 3, t0), rate(t0, t1), rate(t1, t1 + 3)))
if before and during:
    print("MEASURE %s: step time before: median %.2f ms; during attach: median %.2f ms, longest %.2f ms (the stall the workload felt)"
          % (label, 1e3 * statistics.median(before), 1e3 * statistics.median(during), 1e3 * max(during)))
check("workload kept stepping after detach", rate(t1, t1 + 3) > 0.5 * rate(t0 - 3, t0) > 0,
      "after %.1f/s vs before %.1f/s" % (rate(t1, t1 + 3), rate(t0 - 3, t0)))
sys.exit(1 if failed else 0)
