"""GPU workload for the eBPF tracer on a real libcuda (python3.12 + torch).

  torch_phases.py phases STEPS   vLLM-shaped engine steps (Scheduler.schedule, GPUModelRunner.
                                 execute_model/_prepare_inputs with a CUDA-graph replay,
                                 sample_tokens -> Sampler.forward, update_from_output, a device
                                 sync per step). Prints "ready", runs one round per "go" line,
                                 prints "done {json}" with the number of graph replays and steps.
  torch_phases.py eager N DEPTH  N small elementwise ops (x.add_(1)) per round, DEPTH frames below
                                 GPUModelRunner.execute_model; prints "ops <ops/s>" per "go".

Used by tracer's TestGPU* and BenchmarkGPU* (PROFILEMATE_GPU=1), see docs/notes-ebpf.md.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "vllm_shaped"))
import torch  # noqa: E402

import vllm.v1.worker.gpu_model_runner as gmr  # noqa: E402
from vllm.v1.engine.core import EngineCore  # noqa: E402


def phases(steps):
    dev = torch.device("cuda")
    core = EngineCore(dev)
    core.step()  # warm-up before the tracer attaches (cuBLAS handles, allocator)
    torch.cuda.synchronize()
    print("ready", flush=True)
    while sys.stdin.readline().strip() == "go":
        for _ in range(steps):
            core.step()
        torch.cuda.synchronize()
        print("done", json.dumps({"steps": steps, "graph_replays": steps}), flush=True)


def at_depth(d, fn):
    if d:
        return at_depth(d - 1, fn)
    return fn()


def eager(n, depth):
    dev = torch.device("cuda")
    x = torch.zeros(16, device=dev)
    result = []

    def loop():
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            x.add_(1)
        torch.cuda.synchronize()
        result.append(n / (time.perf_counter() - t0))
        return 0

    # Run the loop through the real GPUModelRunner.execute_model code object (the phase marker):
    # its _prepare_inputs, block and graph replay are replaced by the timed loop.
    gmr.block = lambda x_, w, d: at_depth(depth, loop)
    runner = gmr.GPUModelRunner.__new__(gmr.GPUModelRunner)
    runner.depth, runner.w = depth, None
    runner._prepare_inputs = lambda ids: None
    runner.graph = type("G", (), {"replay": staticmethod(lambda: None)})()
    runner.static_out = 0
    loop()  # warm-up
    result.clear()
    print("ready", flush=True)
    while sys.stdin.readline().strip() == "go":
        result.clear()
        runner.execute_model(None)
        print("ops %.1f" % result[0], flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "phases":
        phases(int(sys.argv[2]))
    else:
        eager(int(sys.argv[2]), int(sys.argv[3]))
