"""A small deterministic torch workload for a first check of the agent on real CUDA:
eager elementwise kernels, a cuBLAS matmul, CUDA-graph replays and copies of known sizes.
Prints the expected counts as JSON on the last line."""
import json
import sys

import torch

n_eager, n_replay = 200, 50
x = torch.randn(1 << 20, device="cuda")
a = torch.randn(512, 512, device="cuda")
torch.cuda.synchronize()
for _ in range(n_eager):
    x = torch.sin(x)
for _ in range(10):
    a = a @ a
    a = a / a.norm()
g = torch.cuda.CUDAGraph()
static = torch.randn(4096, device="cuda")
s = torch.cuda.Stream()
with torch.cuda.stream(s):
    for _ in range(3):
        static.mul_(1.0001)
torch.cuda.current_stream().wait_stream(s)
with torch.cuda.graph(g):
    static.mul_(1.0001)
    static.add_(1.0)
for _ in range(n_replay):
    g.replay()
host = torch.ones(1 << 18, dtype=torch.float32)  # 1 MiB
for _ in range(5):
    d = host.to("cuda")
    back = d.cpu()
torch.cuda.synchronize()
print(json.dumps({"eager_sin": n_eager, "replays": n_replay, "h2d_bytes": 5 * (1 << 20), "d2h_bytes": 5 * (1 << 20)}))
sys.stdout.flush()
