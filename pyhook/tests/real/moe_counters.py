"""MoE counting ops with REAL torch (CPU tensors; the same ops run on CUDA and are captured into
graphs there). The router is a stand-in with vLLM's router shape (select_experts -> (weights,
ids), top_k, global_num_experts) inside a module named like vLLM's MoE runner; vLLM's own
routers call CUDA kernels and cannot run on the CPU. Prints RESULT json."""
import json


import torch

import profilemate_trace.runtime as rt
from profilemate_trace.decode import decode
from profilemate_trace.patches import base, moe


class Router:
    def __init__(self, E, k):
        self.global_num_experts = E
        self.top_k = k

    def select_experts(self, hidden_states, router_logits, topk_indices_dtype=None, *, input_ids=None):
        w, ids = torch.topk(torch.softmax(router_logits, -1), self.top_k, dim=-1)
        return w, ids.to(torch.int32)


class Runner(torch.nn.Module):
    def __init__(self, E, k, name):
        super().__init__()
        self.router = Router(E, k)
        self.layer_name = name
        self.lin = torch.nn.Linear(4, 4)


class Model(torch.nn.Module):
    def __init__(self, E, k):
        super().__init__()
        self.layers = torch.nn.ModuleList()
        for i in range(3):
            blk = torch.nn.Module()
            blk.mlp = torch.nn.Module()
            blk.mlp.experts = Runner(E, k, "model.layers.%d.mlp.experts" % i) if i != 1 else torch.nn.Linear(2, 2)
            self.layers.append(blk)


def main():
    from profilemate_trace import _boot

    _boot.start_runtime()  # normally started by the first vLLM import
    E, k = 8, 2
    model = Model(E, k)
    p = base.Patch("moe.test", "x", None, None)
    p.on = True
    c = moe.attach(p, model)
    assert c is not None and sorted(c.layers.values()) == [0, 2]
    (rt.flush(), rt.RING.read_available())[1]
    torch.manual_seed(0)
    expect = torch.zeros((2, E), dtype=torch.int64)
    pairs = {}
    hist = torch.zeros((2, c.bins), dtype=torch.int64)
    r0 = model.layers[0].mlp.experts.router
    r2 = model.layers[2].mlp.experts.router
    for step in range(5):
        T_real, T_pad = 5 + step, 8 + step  # padded rows (CUDA-graph padding) must not count
        c.before_forward(T_real)
        for slot, r in ((0, r0), (1, r2)):
            logits = torch.randn(T_pad, E)
            w, ids = r.select_experts(None, logits)
            wr, ir = torch.topk(torch.softmax(logits, -1), k, dim=-1)
            for t in range(T_real):
                for j in range(k):
                    expect[slot, ir[t, j]] += 1
                    hist[slot, min(int(wr[t, j] * c.bins), c.bins - 1)] += 1
                a, b = sorted(int(x) for x in ir[t])
                pairs[(slot, a, b)] = pairs.get((slot, a, b), 0) + 1
    c.snapshot_start()
    c.snapshot_poll(force=True)
    recs = decode((rt.flush(), rt.RING.read_available())[1])
    counts = {r["layer_idx"]: list(memoryview(r["counts"]).cast("Q")) for r in recs
              if r["_name"] == "py_moe_expert_counts"}
    hists = {r["layer_idx"]: list(memoryview(r["bins"]).cast("Q")) for r in recs if r["_name"] == "py_moe_weight_hist"}
    cos = {}
    for r in recs:
        if r["_name"] == "py_moe_coselect":
            t = list(memoryview(r["pairs"]).cast("I"))
            for i in range(0, len(t), 3):
                cos[(0 if r["layer_idx"] == 0 else 1, t[i], t[i + 1])] = t[i + 2]
    ok = (counts == {0: expect[0].tolist(), 2: expect[1].tolist()}
          and hists == {0: hist[0].tolist(), 2: hist[1].tolist()} and cos == pairs)
    # second window: deltas only
    c.before_forward(3)
    r0.select_experts(None, torch.randn(4, E))
    c.snapshot_start()
    c.snapshot_poll(force=True)
    recs2 = decode((rt.flush(), rt.RING.read_available())[1])
    d0 = [list(memoryview(r["counts"]).cast("Q")) for r in recs2
          if r["_name"] == "py_moe_expert_counts" and r["layer_idx"] == 0][0]
    d2 = [list(memoryview(r["counts"]).cast("Q")) for r in recs2
          if r["_name"] == "py_moe_expert_counts" and r["layer_idx"] == 2][0]
    print("RESULT " + json.dumps({"match": ok, "delta_layer0": sum(d0), "delta_layer2": sum(d2),
                                  "total_layer0": sum(counts[0]), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
