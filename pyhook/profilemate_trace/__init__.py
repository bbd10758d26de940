"""profilemate-trace Python hook: vLLM's meaning (BatchDescriptors, KV blocks, experts,
scheduler decisions) as framed records in a per-process ring. See pyhook/README.md."""

from .runtime import VERSION as __version__  # noqa: F401
