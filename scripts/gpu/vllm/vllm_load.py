#!/usr/bin/env python3
"""Drive a real vLLM engine with dummy weights and report its own statistics.

    vllm_load.py --model dense|moe --out RESULT.json [--requests 300] [--torch-profiler DIR]
                 [--tp 1] [--wait-attach FILE] [--hold S]

Builds a tiny local model directory (config.json only: Llama-style dense, or Mixtral-style
MoE), starts `vllm.LLM` with `load_format="dummy"`, no tokenizer (token-id prompts), the
Triton attention backend and CUDA graphs (FULL, no torch.compile: one startup must fit the
device tool's budget), then runs a warm-up and one measured load of mixed prompt lengths
with a KV cache small enough to preempt. Writes what vLLM itself says about the run:
output tokens/s, p50/p90 time per output token (from each request's own RequestStateStats),
preemptions and KV-cache usage (from `LLM.get_metrics()`), CUDA-graph capture sizes.

`--wait-attach FILE`: after warm-up, print `READY <pid>` and wait until FILE exists before
the measured load (the attach test starts the tracer in between). `--hold S`: keep running
the load for at least S seconds (repeating it), for an attach window.
"""
import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time

DENSE = {  # TinyLlama-1.1B shape
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
    "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "bos_token_id": 1, "eos_token_id": 2,
}
MOE = {  # a small Mixtral: 8 experts, top-2
    "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
    "hidden_size": 1024, "intermediate_size": 2048, "num_hidden_layers": 8,
    "num_attention_heads": 16, "num_key_value_heads": 4, "vocab_size": 32000,
    "num_local_experts": 8, "num_experts_per_tok": 2, "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5, "rope_theta": 1e6, "hidden_act": "silu", "router_aux_loss_coef": 0.0,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2,
}


def model_dir(kind):
    d = os.path.join(tempfile.gettempdir(), f"pm-vllm-model-{kind}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(DENSE if kind == "dense" else MOE, f)
    return d


def requests(n, seed):
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        plen = rnd.choice([16, 48, 128, 384, 1024]) + rnd.randint(0, 15)
        out.append(([rnd.randint(10, 31000) for _ in range(plen)], rnd.choice([32, 64, 128, 256])))
    return out


def metric_values(llm):
    vals = {}
    try:
        for m in llm.get_metrics():
            v = getattr(m, "value", None)
            if isinstance(v, (int, float)):
                vals[m.name] = vals.get(m.name, 0) + v if m.name.endswith("_total") or "preempt" in m.name else v
    except Exception as e:  # metrics are a nice-to-have; the load result is not
        vals["error"] = repr(e)
    return vals


def summarize(outs, wall, after, before):
    gen = sum(len(o.outputs[0].token_ids) for o in outs)
    tpot = []
    for o in outs:
        m = o.metrics
        n = getattr(m, "num_generation_tokens", 0) if m else 0
        if n > 1 and m.last_token_ts > m.first_token_ts:
            tpot.append((m.last_token_ts - m.first_token_ts) / (n - 1))
    tpot.sort()
    return {
        "requests": len(outs), "wall_s": round(wall, 3),
        "output_tokens": gen, "output_tokens_per_s": round(gen / wall, 1),
        "tpot_p50_ms": round(1e3 * statistics.median(tpot), 3) if tpot else None,
        "tpot_p90_ms": round(1e3 * tpot[int(0.9 * (len(tpot) - 1))], 3) if tpot else None,
        "preemptions": after.get("vllm:num_preemptions", 0) - before.get("vllm:num_preemptions", 0),
        "metrics_after": {k: v for k, v in after.items() if "kv_cache" in k or "preempt" in k or "num_requests" in k},
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["dense", "moe"], default="dense")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--max-num-seqs", type=int, default=128)
    ap.add_argument("--num-gpu-blocks", type=int, default=600,
                    help="KV blocks (16 tokens each): small on purpose, so the load preempts")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--torch-profiler", default="", help="profile the measured load with vLLM's torch profiler into DIR")
    ap.add_argument("--wait-attach", default="")
    ap.add_argument("--hold", type=float, default=0)
    ap.add_argument("--rounds", type=int, default=0,
                    help="overhead mode: N measured loads, each gated by --round-sync DIR (go.I before, res.I.json after; "
                         "with --torch-profiler, a go.I holding 'torchprof' profiles that load)")
    ap.add_argument("--round-sync", default="")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    from vllm import LLM, SamplingParams
    import vllm

    kw = dict(
        model=model_dir(a.model), load_format="dummy", skip_tokenizer_init=True,
        dtype="bfloat16", max_model_len=2048, max_num_seqs=a.max_num_seqs,
        num_gpu_blocks_override=a.num_gpu_blocks, gpu_memory_utilization=0.5,
        tensor_parallel_size=a.tp, attention_backend="TRITON_ATTN",
        compilation_config={"mode": 0, "cudagraph_mode": "FULL"},
        disable_log_stats=False, seed=0, enable_prefix_caching=False,
    )
    try:
        kw["cudagraph_metrics"] = True
        if a.torch_profiler:
            kw["profiler_config"] = {"profiler": "torch", "torch_profiler_dir": os.path.abspath(a.torch_profiler),
                                     "torch_profiler_with_stack": False, "torch_profiler_use_gzip": False}
        t0 = time.monotonic()
        llm = LLM(**kw)
    except TypeError as e:
        sys.exit(f"vLLM {vllm.__version__} rejected an engine argument: {e}")
    startup = time.monotonic() - t0
    cfg = llm.llm_engine.vllm_config
    cc = cfg.compilation_config

    def load(reqs):
        prompts = [{"prompt_token_ids": p} for p, _ in reqs]
        params = [SamplingParams(max_tokens=m, ignore_eos=True, detokenize=False, temperature=0.8, seed=i)
                  for i, (_, m) in enumerate(reqs)]
        t = time.monotonic()
        outs = llm.generate(prompts, params, use_tqdm=False)
        return outs, time.monotonic() - t

    load(requests(32, 1))  # warm-up
    if a.rounds:
        # One engine, N identical loads; the driver changes the tracing mode between them
        # (attach at graph or nodes, or nothing), so modes are compared inside one process.
        per = []
        for i in range(a.rounds):
            print(f"ROUND {i}", flush=True)
            go = os.path.join(a.round_sync, f"go.{i}")
            deadline = time.monotonic() + 300
            while not os.path.exists(go) and time.monotonic() < deadline:
                time.sleep(0.05)
            # with --torch-profiler, only the loads whose go file says "torchprof" are profiled
            prof = a.torch_profiler and open(go).read().strip() == "torchprof"
            if prof:
                llm.start_profile()
            b = metric_values(llm)
            o, w = load(requests(a.requests, 2))
            if prof:
                llm.stop_profile()
            r = summarize(o, w, metric_values(llm), b)
            r["round"] = i
            per.append(r)
            with open(os.path.join(a.round_sync, f"res.{i}.json"), "w") as f:
                json.dump(r, f)
            print("ROUNDRESULT " + json.dumps(r), flush=True)
        with open(a.out, "w") as f:
            json.dump({"vllm": vllm.__version__, "rounds": per, "startup_s": round(startup, 2)}, f, indent=1)
        return
    if a.wait_attach:
        print(f"READY {os.getpid()}", flush=True)
        deadline = time.monotonic() + 600
        while not os.path.exists(a.wait_attach) and time.monotonic() < deadline:
            time.sleep(0.1)
    if a.torch_profiler:
        llm.start_profile()
    before = metric_values(llm)
    outs, wall = load(requests(a.requests, 2))
    rounds = 1
    while a.hold and wall < a.hold:
        o2, w2 = load(requests(a.requests, 2 + rounds))
        outs += o2
        wall += w2
        rounds += 1
    after = metric_values(llm)
    if a.torch_profiler:
        llm.stop_profile()

    res = summarize(outs, wall, after, before)
    res.update({
        "vllm": vllm.__version__, "model": a.model, "rounds": rounds, "startup_s": round(startup, 2),
        "cudagraph_mode": str(cc.cudagraph_mode), "cudagraph_capture_sizes": cc.cudagraph_capture_sizes,
        "num_gpu_blocks": cfg.cache_config.num_gpu_blocks, "block_size": cfg.cache_config.block_size,
        "pid": os.getpid(),
    })
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
