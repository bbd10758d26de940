from dataclasses import dataclass
from typing import Any

from vllm.config.compilation import CUDAGraphMode
from vllm.forward_context import get_forward_context, is_forward_context_available


@dataclass
class CUDAGraphEntry:
    batch_descriptor: Any
    cudagraph: Any = None
    output: Any = None


@dataclass
class CUDAGraphOptions:
    debug_log_enable: bool = True
    gc_disable: bool = False
    weak_ref_output: bool = True


class _FakeGraph:
    def __init__(self):
        self.replays = 0

    def replay(self):
        self.replays += 1


class CUDAGraphWrapper:
    def __init__(self, runnable, vllm_config, runtime_mode, cudagraph_options=None):
        self.runnable = runnable
        self.runtime_mode = runtime_mode
        self.cudagraph_options = cudagraph_options or CUDAGraphOptions()
        self.concrete_cudagraph_entries = {}

    def __call__(self, *args, **kwargs):
        if not is_forward_context_available():
            return self.runnable(*args, **kwargs)
        fc = get_forward_context()
        desc = fc.batch_descriptor
        mode = fc.cudagraph_runtime_mode
        if mode == CUDAGraphMode.NONE or mode != self.runtime_mode:
            return self.runnable(*args, **kwargs)
        if desc not in self.concrete_cudagraph_entries:
            self.concrete_cudagraph_entries[desc] = CUDAGraphEntry(desc)
        entry = self.concrete_cudagraph_entries[desc]
        if entry.cudagraph is None:
            entry.output = self.runnable(*args, **kwargs)
            entry.cudagraph = _FakeGraph()
            return entry.output
        entry.cudagraph.replay()
        return entry.output
