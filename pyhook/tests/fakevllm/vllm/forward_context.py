"""vLLM-shaped fake: BatchDescriptor (frozen dataclass form, Feb 2026+) and forward context."""
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

from vllm.config.compilation import CUDAGraphMode


@dataclass(frozen=True)
class BatchDescriptor:
    num_tokens: int
    num_reqs: int | None = None
    uniform: bool = False
    has_lora: bool = False
    num_active_loras: int = 0


class BatchDescriptorNT(NamedTuple):
    """The pre-Feb-2026 NamedTuple form (uniform_decode before #28579)."""
    num_tokens: int
    uniform_decode: bool = False
    has_lora: bool = False


@dataclass
class ForwardContext:
    attn_metadata: Any = None
    cudagraph_runtime_mode: CUDAGraphMode = CUDAGraphMode.NONE
    batch_descriptor: BatchDescriptor | None = None


_forward_context = None


def get_forward_context():
    assert _forward_context is not None
    return _forward_context


def is_forward_context_available():
    return _forward_context is not None


@contextmanager
def set_forward_context(attn_metadata, vllm_config, num_tokens=None, num_tokens_across_dp=None,
                        cudagraph_runtime_mode=CUDAGraphMode.NONE, batch_descriptor=None, ubatch_slices=None,
                        slot_mapping=None, skip_compiled=False, is_padding=None):
    global _forward_context
    prev = _forward_context
    _forward_context = ForwardContext(attn_metadata, cudagraph_runtime_mode, batch_descriptor)
    try:
        yield
    finally:
        _forward_context = prev
