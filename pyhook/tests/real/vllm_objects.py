"""Real vLLM serving objects on the CPU (a V1 Scheduler with its KVCacheManager / BlockPool, and
requests), built from a tiny local model config (no download). Imports nothing of the repo, so a
target that must start with nothing of ours (inject_target_vllm.py) can use it as well as the
hook's own drivers (drive_real_vllm.py, late_real_vllm.py)."""
import json
import os
import tempfile


def tiny_model_dir():
    d = tempfile.mkdtemp(prefix="pm-tiny-llama-")
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
           "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 4,
           "num_hidden_layers": 2, "vocab_size": 1024, "max_position_embeddings": 32768,
           "rms_norm_eps": 1e-5, "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": 2}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    return d


def _params(f):
    import inspect

    try:
        return set(inspect.signature(f).parameters)
    except (TypeError, ValueError):
        return set()


def build(num_blocks, block_size, max_tokens, max_seqs, prefix_caching, max_model_len=512):
    import torch
    from vllm.config import CacheConfig, DeviceConfig, ModelConfig, SchedulerConfig, VllmConfig
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.structured_output import StructuredOutputManager

    md = tiny_model_dir()
    model_config = ModelConfig(model=md, tokenizer=md, skip_tokenizer_init=True, dtype="float32",
                               max_model_len=max_model_len, seed=0)
    scheduler_config = SchedulerConfig(max_num_seqs=max_seqs, max_num_batched_tokens=max_tokens,
                                       max_model_len=max_model_len, is_encoder_decoder=False,
                                       enable_chunked_prefill=True)
    cache_config = CacheConfig(block_size=block_size, enable_prefix_caching=prefix_caching)
    vllm_config = VllmConfig(model_config=model_config, scheduler_config=scheduler_config,
                             cache_config=cache_config, device_config=DeviceConfig(device="cpu"))
    spec_kw = dict(block_size=block_size, num_kv_heads=1, head_size=8, dtype=torch.float32)
    if "use_mla" in _params(FullAttentionSpec):  # vLLM <= late 2025
        spec_kw["use_mla"] = False
    kv_cache_config = KVCacheConfig(
        num_blocks=num_blocks, kv_cache_tensors=[],
        kv_cache_groups=[KVCacheGroupSpec(["layer.0"], FullAttentionSpec(**spec_kw))])
    cache_config.num_gpu_blocks = num_blocks
    kw = dict(vllm_config=vllm_config, kv_cache_config=kv_cache_config,
              structured_output_manager=StructuredOutputManager(vllm_config), log_stats=True)
    if "block_size" in _params(Scheduler.__init__):  # added in 2026
        kw["block_size"] = block_size
    s = Scheduler(**kw)
    return vllm_config, s


def request_factory(block_size=16):
    """make(i, n_prompt, max_tokens) -> a Request with a deterministic prompt, ignoring EOS. vLLM's
    NONE_HASH global (prefix-caching block hashes) is initialised once, by this call."""
    from vllm.sampling_params import SamplingParams
    from vllm.v1.request import Request

    kw = {}
    if "eos_token_id" in _params(Request.__init__):  # vLLM <= 2025
        kw["eos_token_id"] = 2
    try:
        try:
            from vllm.utils.hashing import sha256
        except ImportError:  # vLLM 2025
            from vllm.utils import sha256
        from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash

        init_none_hash(sha256)
        kw["block_hasher"] = get_request_block_hasher(block_size, sha256)
    except Exception:
        pass

    def make(i, n_prompt, max_tokens):
        sp = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
        return Request("req-%d" % i, [10 + (i * 7 + j) % 900 for j in range(n_prompt)], sp, None, **kw)

    return make


def make_request(i, n_prompt, max_tokens):
    """One request of request_factory(), which re-initialises vLLM's NONE_HASH global each time."""
    return request_factory()(i, n_prompt, max_tokens)


def runner_output():
    """out(s, so) -> the ModelRunnerOutput a model runner would return to scheduler s for its
    output so: one sampled token for every scheduled request whose prompt is done, and the
    fields older vLLM versions require (logprobs, prompt_logprobs_dict, pooler_output)."""
    import dataclasses

    from vllm.v1.outputs import ModelRunnerOutput

    required = {f.name for f in dataclasses.fields(ModelRunnerOutput)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}

    def out(s, so):
        ids = list(so.num_scheduled_tokens)
        sampled = [[5] if s.requests[r].num_computed_tokens >= s.requests[r].num_tokens else [] for r in ids]
        kw = dict(req_ids=ids, req_id_to_index={r: i for i, r in enumerate(ids)}, sampled_token_ids=sampled)
        for opt, val in (("logprobs", None), ("prompt_logprobs_dict", {}), ("pooler_output", [])):
            if opt in required:  # required fields in vLLM 2025
                kw[opt] = val
        return ModelRunnerOutput(**kw)

    return out
