"""eBPF test workload: vLLM-shaped phases calling a fake libcuda through ctypes.

usage: workload.py STEPS [--fork N] [--spawn N] [--depth D]
Prints "ready <pid>", then for each "go" line on stdin runs STEPS engine steps (each followed by
one launch outside every phase) and prints "done <child pids>"; exits at EOF.
--fork N: in the first round, fork N children (os.fork) that each run STEPS steps and exit.
--spawn N: in the first round, also start N children with subprocess (fork+exec of this interpreter) that run
STEPS steps without waiting.
--child-delay S: children sleep S seconds before their first CUDA call (a worker's start-up).
--late-phase D: in the first round, after the steps, create a module (after any attach) whose phase
function GPUModelRunner._model_forward launches through a chain of D new functions, and call it
LATE_CALLS times, LATE_GAP seconds apart: a phase function first met behind D code objects that
nobody has seen yet.
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakecuda  # noqa: E402
from vllm.v1.engine.core import EngineCore  # noqa: E402


def run(steps, depth):
    core = EngineCore(depth)
    for _ in range(steps):
        core.step()
        fakecuda.launch(1)  # outside every phase


LATE_CALLS, LATE_GAP = 20, 0.02


def late_phase(d):
    src = "import fakecuda\n\ndef f0():\n    fakecuda.launch(1)\n"
    src += "".join(f"\ndef f{i}():\n    f{i - 1}()\n" for i in range(1, d))
    src += f"\nclass GPUModelRunner:\n    def _model_forward(self):\n        f{d - 1}()\n"
    ns = {}
    exec(compile(src, "/late/vllm/v1/worker/gpu_model_runner.py", "exec"), ns)
    r = ns["GPUModelRunner"]()
    for _ in range(LATE_CALLS):
        r._model_forward()
        time.sleep(LATE_GAP)


def main():
    args = sys.argv[1:]
    steps = int(args[0])
    fork = int(args[args.index("--fork") + 1]) if "--fork" in args else 0
    spawn = int(args[args.index("--spawn") + 1]) if "--spawn" in args else 0
    depth = int(args[args.index("--depth") + 1]) if "--depth" in args else 20
    delay = float(args[args.index("--child-delay") + 1]) if "--child-delay" in args else 0.0
    late = int(args[args.index("--late-phase") + 1]) if "--late-phase" in args else 0
    if "--child" in args:
        time.sleep(delay)
        run(steps, depth)
        return
    print("ready", os.getpid(), flush=True)
    first = True
    while sys.stdin.readline().strip() == "go":
        kids = round_(steps, depth, fork if first else 0, spawn if first else 0, delay)
        if first and late:
            late_phase(late)
        first = False
        print("done", " ".join(str(k) for k in kids), flush=True)


def round_(steps, depth, fork, spawn, delay):
    kids = []
    for _ in range(fork):
        pid = os.fork()
        if pid == 0:
            time.sleep(delay)
            run(steps, depth)
            os._exit(0)
        kids.append(pid)
    procs = [subprocess.Popen([sys.executable, __file__, str(steps), "--child", "--depth", str(depth),
                               "--child-delay", str(delay)])
             for _ in range(spawn)]
    run(steps, depth)
    for pid in kids:
        os.waitpid(pid, 0)
    for pr in procs:
        pr.wait()
    return kids + [pr.pid for pr in procs]


if __name__ == "__main__":
    main()
