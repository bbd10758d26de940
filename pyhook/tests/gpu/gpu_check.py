"""GPU validation of the pyhook against real vLLM serving (for the lead's batched GPU runs;
NOT run in CI and NOT yet run by the pyhook worker: no GPU here).

Needs a machine with a GPU and vLLM importable (no network: the models are tiny local configs
loaded with load_format="dummy", prompts are token ids, no tokenizer).

    PYTHONPATH=$PWD/pyhook VLLM_PROFILING_DIR=$OUT/prof python pyhook/tests/gpu/gpu_check.py run dense
    PYTHONPATH=$PWD/pyhook VLLM_PROFILING_DIR=$OUT/prof python pyhook/tests/gpu/gpu_check.py run moe
    python pyhook/tests/gpu/gpu_check.py verify $OUT/prof        # prints a JSON report, exit 1 on failure

What it exercises that the CPU tests cannot: GPUModelRunner.execute_model (V1 or V2, whichever
vLLM picks), the runner's dispatch decision, CUDAGraphWrapper capture + replay, capture_model,
EngineCore.step in its own process (spawned/forked engine core), the MoE counting ops captured
into CUDA graphs (decode replays must be counted), and Option 2 spill from every process.
"""
import glob
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def model_dir(kind):
    d = tempfile.mkdtemp(prefix="pm-gpu-%s-" % kind)
    if kind == "moe":
        cfg = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 256,
               "intermediate_size": 512, "num_attention_heads": 4, "num_key_value_heads": 4,
               "num_hidden_layers": 2, "vocab_size": 2048, "max_position_embeddings": 2048,
               "num_local_experts": 8, "num_experts_per_tok": 2, "rms_norm_eps": 1e-5,
               "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2}
    else:
        cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
               "intermediate_size": 512, "num_attention_heads": 4, "num_key_value_heads": 4,
               "num_hidden_layers": 2, "vocab_size": 2048, "max_position_embeddings": 2048,
               "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    return d


def run(kind):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PROFILEMATE_PYHOOK_MOE_READBACK_STEPS", "4")
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    md = model_dir(kind)
    llm = LLM(model=md, tokenizer=md, skip_tokenizer_init=True, load_format="dummy", max_model_len=512,
              gpu_memory_utilization=0.3, max_num_seqs=8, max_num_batched_tokens=512,
              compilation_config={"cudagraph_capture_sizes": [1, 2, 4, 8]}, enable_prefix_caching=True)
    prompts = [TokensPrompt(prompt_token_ids=[10 + (i * 13 + j) % 1900 for j in range(40 + 5 * i)])
               for i in range(12)]
    outs = llm.generate(prompts, SamplingParams(max_tokens=48, ignore_eos=True, detokenize=False))
    n_out = sum(len(o.outputs[0].token_ids) for o in outs)
    n_prompt = sum(len(p["prompt_token_ids"]) for p in prompts)
    print("GENERATED " + json.dumps({"kind": kind, "output_tokens": n_out, "prompt_tokens": n_prompt}))
    del llm


def verify(prof):
    sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
    from profilemate_trace.decode import decode

    rep = {"sessions": [], "ok": True, "failures": []}
    for sess in sorted(glob.glob(os.path.join(prof, "session_*"))):
        recs = []
        per_pid = {}
        for f in glob.glob(os.path.join(sess, "raw", "*.pyhook.pmr")):
            b = open(f, "rb").read()
            mlen = int.from_bytes(b[12:16], "little")
            r = decode(b[16 + mlen + (8 - mlen % 8) % 8:])
            per_pid[os.path.basename(f)] = len(r)
            recs += r

        def n(name, **kw):
            return sum(1 for r in recs if r["_name"] == name and all(r.get(k) == v for k, v in kw.items()))

        s = {"session": sess, "files": per_pid,
             "captures": n("py_graph_capture"), "dispatch_replay": n("py_graph_dispatch", exec_kind=2),
             "dispatch_capture": n("py_graph_dispatch", exec_kind=3), "dispatch_eager": n("py_graph_dispatch", exec_kind=1),
             "forward_prefill": n("py_forward", phase=1), "forward_decode": n("py_forward", phase=2),
             "forward_mixed": n("py_forward", phase=3), "sched_steps": n("py_sched_step"),
             "kv_alloc": n("py_kv_blocks", op=1), "kv_free": n("py_kv_blocks", op=2),
             "engine_steps": n("py_cpu_scope", scope=7), "finished": n("py_request_event", event=7),
             "moe_count_records": n("py_moe_expert_counts"),
             "patch_status": sorted({(r["text"].split(b"\0")[0].decode(), r["status"]) for r in recs
                                     if r["_name"] == "py_patch_status"}),
             "dropped": sum(r["records_dropped"] for r in recs if r["_name"] == "stream_stats")}
        moe_total = 0
        for r in recs:
            if r["_name"] == "py_moe_expert_counts":
                moe_total += sum(memoryview(r["counts"]).cast("Q"))
        s["moe_selections_counted"] = moe_total
        steps = {r["step_id"] for r in recs if r["_name"] == "py_forward"}
        disp_steps = {r["step_id"] for r in recs if r["_name"] == "py_graph_dispatch" and r["step_id"]}
        s["forward_steps_with_dispatch"] = len(steps & disp_steps)
        rep["sessions"].append(s)
        for key in ("captures", "dispatch_replay", "forward_prefill", "forward_decode", "sched_steps", "kv_alloc",
                    "finished"):
            if not s[key]:
                rep["ok"] = False
                rep["failures"].append("%s: %s == 0" % (sess, key))
        if s["finished"] != 12:
            rep["ok"] = False
            rep["failures"].append("%s: finished %d != 12" % (sess, s["finished"]))
    print(json.dumps(rep, indent=1, default=str))
    return 0 if rep["ok"] and rep["sessions"] else 1


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(sys.argv[2] if len(sys.argv) > 2 else "dense")
    else:
        sys.exit(verify(sys.argv[2]))
