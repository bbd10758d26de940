from vllm.config.compilation import CUDAGraphMode
from vllm.forward_context import BatchDescriptor


class CudagraphDispatcher:
    def __init__(self, vllm_config=None, capture_sizes=(1, 2, 4, 8, 16)):
        self.capture_sizes = sorted(capture_sizes)
        self.uniform_decode_query_len = 1

    def _pad(self, n):
        for s in self.capture_sizes:
            if s >= n:
                return s
        return None

    def dispatch(self, num_tokens, uniform_decode=False, has_lora=False, num_active_loras=0,
                 valid_modes=None, invalid_modes=None):
        p = self._pad(num_tokens)
        if p is None:
            return CUDAGraphMode.NONE, BatchDescriptor(num_tokens)
        if uniform_decode and (invalid_modes is None or CUDAGraphMode.FULL not in invalid_modes):
            return CUDAGraphMode.FULL, BatchDescriptor(p, num_reqs=p, uniform=True, has_lora=has_lora,
                                                       num_active_loras=num_active_loras)
        return CUDAGraphMode.PIECEWISE, BatchDescriptor(p, None, False, has_lora, num_active_loras)
