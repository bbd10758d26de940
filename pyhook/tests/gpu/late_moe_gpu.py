"""Late start and MoE counters on a real GPU (CUDA tensors, real torch.cuda.CUDAGraph captures),
with the vLLM-shaped fake for the runner (real vLLM does not install on the GPU machine; see
docs/h100-environment.md). Run: python late_moe_gpu.py SCRATCH_DIR; prints RESULT json.

1. eager: a runner whose model has MoE routers on the GPU is attached late; the counters are
   made at its next forward (its own thread) and count what a CPU recount says;
2. a CUDA graph captured AFTER the attach holds the counting ops: replays count; at detach the
   counters are kept allocated (the graph keeps writing into them) and replays after the detach
   run without error;
3. a second attach, now with a captured graph: no counters, the in-graph note instead.
"""
import json
import os
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
sys.path[:0] = [os.path.dirname(TESTS), os.path.join(TESTS, "fakevllm"), TESTS]

import torch  # noqa: E402

from late_helpers import Tracer, pm_threads  # noqa: E402

# vLLM counts every capture in vllm.compilation.counter.compilation_counter (the fake has none)
import vllm.compilation  # noqa: E402,F401  (the package, before its counter submodule)

_cnt = types.ModuleType("vllm.compilation.counter")
_cnt.compilation_counter = types.SimpleNamespace(num_cudagraph_captured=0)
sys.modules["vllm.compilation.counter"] = _cnt

from vllm.v1.core.sched.output import CachedRequestData, SchedulerOutput  # noqa: E402
from vllm.v1.worker.gpu_model_runner import GPUModelRunner  # noqa: E402

E, K, H = 16, 2, 32


class Router:
    def __init__(self, seed):
        g = torch.Generator(device="cuda").manual_seed(seed)
        self.global_num_experts, self.top_k = E, K
        self.w = torch.randn(H, E, device="cuda", generator=g)

    def select_experts(self, hidden_states, router_logits=None, topk_indices_dtype=None, *, input_ids=None):
        w, ids = torch.topk(torch.softmax(hidden_states @ self.w, -1), K, dim=-1)
        return w, ids.to(torch.int32)


class Experts(torch.nn.Module):
    def __init__(self, i):
        super().__init__()
        self.router = Router(i)
        self.layer_name = "model.layers.%d.mlp.experts" % i
        self.lin = torch.nn.Linear(2, 2, device="cuda")


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([Experts(0), Experts(1)])
        self.x = torch.randn(64, H, device="cuda", generator=torch.Generator(device="cuda").manual_seed(9))

    def route(self, n):
        for m in self.layers:
            m.router.select_experts(self.x[:n])  # attribute looked up per call, as vLLM does

    def forward_tokens(self, n):
        self.route(n)


def expected(model, ns):
    out = [[0] * E for _ in model.layers]
    for n in ns:
        for li, m in enumerate(model.layers):
            _w, ids = torch.topk(torch.softmax(model.x[:n] @ m.router.w, -1), K, dim=-1)
            for e in ids.flatten().tolist():
                out[li][e] += 1
    return out


def so(n):
    return SchedulerOutput([], CachedRequestData(), {"r%d" % i: 1 for i in range(n)}, n)


def counts(recs):
    out = {}
    for r in recs:
        if r["_name"] == "py_moe_expert_counts":
            c = list(memoryview(r["counts"]).cast("Q"))
            prev = out.setdefault(r["layer_idx"], [0] * len(c))
            out[r["layer_idx"]] = [a + b for a, b in zip(prev, c)]
    return [out.get(i, [0] * E) for i in range(2)]


def main(scratch):
    from profilemate_trace import late
    import profilemate_trace.runtime as rt
    from profilemate_trace.patches import moe

    conf = os.path.join(scratch, "inject.conf")
    log = conf + ".log"
    with open(conf, "w") as f:
        f.write("start=graph\nlog=%s\norphan_timeout_s=120\n" % log)
    res = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    runner = GPUModelRunner(model_factory=Model)
    runner.load_model()
    model = runner.model
    # more tokens than the fake dispatcher's largest capture size (16): eager steps, no
    # (fake) graph is captured by the runner itself
    for n in (17, 19):
        runner.execute_model(so(n))  # served before the attach
    torch.cuda.synchronize()

    # 1. eager, attached late
    t0 = time.monotonic()
    res["rc"] = late.start(conf)
    res["start_ms"] = (time.monotonic() - t0) * 1e3
    tr = Tracer()
    tr.heartbeat()
    res["wrapped_at_start"] = ["select_experts" in vars(m.router) for m in model.layers]
    ns = [20, 24, 18, 30]
    for n in ns:
        runner.execute_model(so(n))
    res["wrapped_after_forward"] = ["select_experts" in vars(m.router) for m in model.layers]
    res["counters_device"] = str(moe._COUNTERS[0].counts.device) if moe._COUNTERS else None
    if not moe._COUNTERS:
        print("RESULT " + json.dumps(dict(res, patches=[(p.name, p.status, p.reason) for p in rt._patches],
                                          graphs=rt.late_graphs)))
        return
    moe.flush_all()
    got = counts(tr.read())
    res["eager_match"] = got == expected(model, ns)
    res["eager_total"] = [sum(x) for x in got]

    # 2. a graph captured after the attach: the counting ops are inside it
    c = moe._COUNTERS[0]
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        c.before_forward(8)
        model.route(8)  # warm-up (counted: 8 valid rows)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        model.route(8)
    _cnt.compilation_counter.num_cudagraph_captured += 1
    for _ in range(3):
        g.replay()
    torch.cuda.synchronize()
    moe.flush_all()
    got2 = counts(tr.read())
    res["graph_match"] = got2 == expected(model, [8] * 4)  # warm-up + 3 replays
    seq = tr.control(3, 0)
    res["detached"] = tr.wait(lambda: tr.ack == seq and tr.state == 5 and not pm_threads(), timeout=5)
    res["kept_alive"] = len(moe._KEEPALIVE)
    res["restored"] = ["select_experts" not in vars(m.router) for m in model.layers]
    for _ in range(5):
        g.replay()  # the graph still writes into the kept counters
    torch.cuda.synchronize()
    res["replay_after_detach_ok"] = True
    res["kept_counts_total"] = int(moe._KEEPALIVE[0].counts.sum().item()) if moe._KEEPALIVE else None
    tr.mm.close()

    # 3. second attach: graphs exist now -> no counters, the note
    assert late.start(conf) == 0
    tr = Tracer()
    tr.heartbeat()
    runner.execute_model(so(20))
    g.replay()
    torch.cuda.synchronize()
    recs = tr.read()
    res["second"] = [(p.status, p.reason) for p in rt._patches if p.name == "moe.v1_runner"]
    res["second_wrapped"] = ["select_experts" in vars(m.router) for m in model.layers]
    res["second_moe_records"] = sum(1 for r in recs if r["_name"].startswith("py_moe"))
    res["second_logs"] = [r["text"].decode() for r in recs if r["_name"] == "log"]
    assert late.stop()
    res["threads_end"] = len(pm_threads())
    res["log"] = open(log).read()[-1500:]
    print("RESULT " + json.dumps(res))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp")
