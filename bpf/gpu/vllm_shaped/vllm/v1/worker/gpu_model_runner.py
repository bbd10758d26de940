import torch

from vllm.v1.sample.sampler import Sampler


def block(x, w, depth):
    # eager layers, some frames below execute_model like torch modules in a model forward
    if depth:
        return block(x, w, depth - 1)
    h = torch.relu(x @ w)  # GEMM (cuLaunchKernelEx via cuBLAS) + elementwise (cuLaunchKernel)
    return h + 1.0


class GPUModelRunner:
    def __init__(self, dev, depth=10, hidden=256):
        self.dev = dev
        self.depth = depth
        self.w = torch.randn(hidden, hidden, device=dev) / hidden**0.5
        self.x = torch.randn(8, hidden, device=dev)
        self.static_in = torch.randn(8, hidden, device=dev)
        self.sampler = Sampler()
        # one CUDA graph, replayed once per step (cuGraphLaunch)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                self.static_out = torch.relu(self.static_in @ self.w)
        torch.cuda.current_stream().wait_stream(s)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_out = torch.relu(self.static_in @ self.w)
        torch.cuda.synchronize()

    def _prepare_inputs(self, ids):
        return self.x + ids[:8].float().unsqueeze(1)

    def execute_model(self, ids):
        x = self._prepare_inputs(ids)
        h = block(x, self.w, self.depth)
        self.graph.replay()
        return h + self.static_out

    def sample_tokens(self, h):
        tok = self.sampler.forward(h)
        return tok.cpu()  # D2H + stream sync
