"""Cost of a probed libcuda call, seen from Python: N cuLaunchKernel calls through ctypes, made
DEPTH Python frames below a phase function (GPUModelRunner.execute_model).

usage: bench.py N DEPTH ROUNDS
Prints "ready", then for each "go" line on stdin runs ROUNDS rounds of N calls inside
execute_model and prints the best round's nanoseconds per call ("ns <value>").
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakecuda  # noqa: E402
import vllm.v1.worker.gpu_model_runner as gmr  # noqa: E402


def at_depth(d, fn):
    if d:
        return at_depth(d - 1, fn)
    return fn()


def main():
    n, depth, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    launch = fakecuda._lib.cuLaunchKernel
    p, u = fakecuda.p, fakecuda.u
    args = (p(fakecuda.FUNC), u(1), u(1), u(1), u(32), u(1), u(1), u(0), p(fakecuda.STREAM), p(0), p(0))

    def loop():
        best = None
        for _ in range(rounds):
            t0 = time.perf_counter_ns()
            for _ in range(n):
                launch(*args)
            dt = (time.perf_counter_ns() - t0) / n
            best = dt if best is None else min(best, dt)
        return best

    result = []
    # The real execute_model runs _prepare_inputs, then layer(depth): replace both so the timed
    # loop runs DEPTH frames below the execute_model frame (the phase marker).
    gmr.layer = lambda d: result.append(at_depth(depth, loop))
    runner = gmr.GPUModelRunner(depth)
    runner._prepare_inputs = lambda: None
    print("ready", flush=True)
    while sys.stdin.readline().strip() == "go":
        result.clear()
        runner.execute_model()
        print("ns %.1f" % result[0], flush=True)


if __name__ == "__main__":
    main()
