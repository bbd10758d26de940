from dataclasses import dataclass

from vllm.config.compilation import CUDAGraphMode


@dataclass(frozen=True)
class BatchExecutionDescriptor:
    cg_mode: CUDAGraphMode
    num_tokens: int
    num_reqs: int | None
    uniform_token_count: int | None = None
    max_query_len: int | None = None
    num_active_loras: int = 0
    num_ubatches: int = 1


class CudaGraphManager:
    def __init__(self, sizes=(1, 2, 4, 8)):
        self.sizes = sizes
        self.graphs = {}

    def dispatch(self, num_reqs, num_tokens, uniform_token_count, num_active_loras, max_query_len=None,
                 num_ubatches=1):
        for s in self.sizes:
            if s >= num_tokens:
                if uniform_token_count is not None:
                    return BatchExecutionDescriptor(CUDAGraphMode.FULL, s, s // uniform_token_count,
                                                    uniform_token_count, max_query_len, num_active_loras)
                return BatchExecutionDescriptor(CUDAGraphMode.PIECEWISE, s, None, None, None, num_active_loras)
        return BatchExecutionDescriptor(CUDAGraphMode.NONE, num_tokens, None)

    def capture(self, create_forward_fn, progress_bar_desc="Capturing CUDA graphs"):
        descs = getattr(self, "capture_descs", None) or [
            BatchExecutionDescriptor(CUDAGraphMode.FULL, s, s, 1) for s in self.sizes[:2]]
        for desc in descs:
            forward_fn = create_forward_fn(desc, warmup=True)
            forward_fn(CUDAGraphMode.NONE)  # warmup
            if desc.cg_mode == CUDAGraphMode.PIECEWISE:
                forward_fn(CUDAGraphMode.PIECEWISE)  # pieces capture through CUDAGraphWrapper
            else:
                forward_fn = create_forward_fn(desc, warmup=False)
                forward_fn(CUDAGraphMode.NONE)  # inside torch.cuda.graph(...) in vLLM
                self.graphs[desc] = object()


class ModelCudaGraphManager(CudaGraphManager):
    def capture(self, model, model_state=None, input_buffers=None, *args, progress_bar_desc="x", **kwargs):
        def create_forward_fn(desc, warmup=False):
            def fwd(mode):
                return model(desc, mode)
            return fwd
        super().capture(create_forward_fn, progress_bar_desc)
