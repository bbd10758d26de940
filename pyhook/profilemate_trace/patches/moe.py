"""MoE expert counting on the GPU (ENABLE_MOE_EXPERT_TRACKING).

After the model runner's load_model (which runs before CUDA-graph capture in both runners),
every MoE layer's router (an object with select_experts and top_k / global_num_experts,
i.e. vLLM's FusedMoERouter / BaseRouter since 2026-01) gets an instance-level wrapper that
adds graph-capturable tensor ops after routing:
  counts[layer, expert]      += 1 per (valid token, selected expert)     (index_add_)
  coselect[layer, e1*E + e2] += 1 per (valid token, pair e1 < e2)
  hist[layer, bin(weight)]   += 1 per (valid token, selected expert)
Rows beyond the step's real token count are masked with a persistent GPU scalar that is
filled before each forward (as vLLM's EPLB does), so CUDA-graph padding is not counted and
graph replays count, because the ops are captured into the graphs. Counters are cumulative
and never reset on the GPU: every READBACK steps a non-blocking copy into pinned memory is
started and, once its event has completed (checked at a later step, never waited for), the
deltas since the previous read-back are emitted.
"""

import re
import sys

from .. import runtime as rt
from .base import Patch
from . import worker as _worker

_mono = rt._mono
_LAYER_RE = re.compile(r"layers\.(\d+)\.")


class Counters:
    def __init__(self, torch, device, layers, num_experts, top_k, bins, coselect):
        self.torch = torch
        self.device = device
        self.layers = layers            # slot -> layer_idx
        self.E = num_experts
        self.k = top_k
        self.bins = bins
        L = len(layers)
        i64 = torch.int64
        self.counts = torch.zeros((L, num_experts), dtype=i64, device=device)
        self.hist = torch.zeros((L, bins), dtype=i64, device=device)
        self.cosel = torch.zeros((L, num_experts * num_experts), dtype=i64, device=device) if coselect else None
        self.n_valid = torch.zeros((), dtype=i64, device=device)
        self.n_valid.fill_(1 << 62)
        iu = torch.triu_indices(top_k, top_k, 1)
        self.iu = iu[0].to(device)
        self.ju = iu[1].to(device)
        self.prev = None
        self.pending = None
        self.window_start = _mono()
        self.steps = 0

    def record(self, slot, weights, ids):
        torch = self.torch
        T = ids.shape[0]
        k = ids.shape[1] if ids.dim() > 1 else 1
        idl = ids.reshape(T, k).long()
        valid = (torch.arange(T, device=ids.device) < self.n_valid).long()
        vk = valid.unsqueeze(1).expand(T, k).reshape(-1)
        self.counts[slot].index_add_(0, idl.reshape(-1), vk)
        if weights is not None:
            b = (weights.reshape(T, k).float().clamp(0.0, 1.0) * self.bins).long().clamp_(0, self.bins - 1)
            self.hist[slot].index_add_(0, b.reshape(-1), vk)
        if self.cosel is not None and k > 1 and k == self.k:
            s = idl.sort(dim=1).values
            flat = s[:, self.iu] * self.E + s[:, self.ju]
            npairs = flat.shape[1]
            self.cosel[slot].index_add_(0, flat.reshape(-1), valid.unsqueeze(1).expand(T, npairs).reshape(-1))

    def before_forward(self, num_tokens):
        self.n_valid.fill_(int(num_tokens))

    def snapshot_start(self):
        torch = self.torch
        parts = [self.counts, self.hist] + ([self.cosel] if self.cosel is not None else [])
        cuda = self.counts.is_cuda
        host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=cuda) for t in parts]
        for h, t in zip(host, parts):
            h.copy_(t, non_blocking=cuda)
        ev = None
        if cuda:
            ev = torch.cuda.Event()
            ev.record()
        self.pending = (host, ev)

    def snapshot_poll(self, force=False):
        if self.pending is None:
            return False
        host, ev = self.pending
        if ev is not None and not ev.query():
            if not force:
                return False
            ev.synchronize()
        self.pending = None
        cur = [h.numpy().copy() for h in host]
        prev = self.prev
        self.prev = cur
        now = _mono()
        ws = self.window_start
        self.window_start = now
        import numpy as np

        if prev is None:
            prev = [np.zeros_like(c) for c in cur]
        dc = cur[0] - prev[0]
        dh = cur[1] - prev[1]
        E = self.E
        for slot, layer in self.layers.items():
            rt.emit_moe_counts(now, ws, layer, E, self.k, dc[slot].astype("<u8").tobytes())
            rt.emit_moe_hist(now, ws, 0.0, 1.0, layer, self.bins, dh[slot].astype("<u8").tobytes())
            if len(cur) > 2:
                d = (cur[2][slot] - prev[2][slot])
                nz = np.nonzero(d)[0]
                if len(nz):
                    trip = np.empty((len(nz), 3), dtype="<u4")
                    trip[:, 0] = nz // E
                    trip[:, 1] = nz % E
                    trip[:, 2] = np.minimum(d[nz], 0xFFFFFFFF)
                    rt.emit_moe_coselect(now, ws, layer, E, trip.tobytes())
                else:
                    rt.emit_moe_coselect(now, ws, layer, E, b"")
        return True


_COUNTERS = []


def _layer_idx(m, name, fallback):
    lid = getattr(m, "layer_id", None)
    if isinstance(lid, int):
        return lid
    for s in (getattr(m, "layer_name", None), name):
        if isinstance(s, str):
            mm = _LAYER_RE.search(s + ".")
            if mm:
                return int(mm.group(1))
    return fallback


def find_routers(model):
    """[(name, module, router, num_experts, top_k)] for every MoE layer whose router we can count."""
    found = []
    if model is None or not hasattr(model, "named_modules"):
        return found
    for name, m in model.named_modules():
        r = getattr(m, "router", None)
        if r is None or not hasattr(r, "select_experts"):
            continue
        E = getattr(r, "global_num_experts", None) or getattr(m, "global_num_experts", None)
        k = getattr(r, "top_k", None) or getattr(m, "top_k", None)
        if not E or not k:
            continue
        found.append((name, m, r, int(E), int(k)))
    return found


def attach(p, model, found=None):
    """Find MoE routers in model and install the counting wrappers. Returns Counters or None."""
    torch = sys.modules.get("torch")
    if torch is None or model is None or not hasattr(model, "named_modules"):
        return None
    if found is None:
        found = find_routers(model)
    if not found:
        return None
    E = max(f[3] for f in found)
    k = max(f[4] for f in found)
    dev = None
    try:
        dev = next(model.parameters()).device
    except Exception:
        dev = torch.device("cpu")
    layers = {}
    for slot, (name, m, _r, _e, _k) in enumerate(found):
        layers[slot] = _layer_idx(m, name, slot)
    c = Counters(torch, dev, layers, E, k, max(2, rt.CFG.MOE_HIST_BINS if rt.CFG else 20),
                 rt.CFG.MOE_COSELECTION if rt.CFG else True)
    for slot, (name, m, r, _e, _k) in enumerate(found):
        orig = r.select_experts

        def sel(*a, __o=orig, __s=slot, **kw):
            out = __o(*a, **kw)
            if p.on:
                try:
                    c.record(__s, out[0], out[1])
                except Exception as e:
                    p.fail(e)
            return out
        try:
            p.set_attr(r, "select_experts", sel)  # instance attribute: only these routers pay
        except Exception as e:
            rt.report_once("moe-wrap", "cannot wrap router %s: %r" % (name, e))
    _COUNTERS.append(c)
    return c


def model_of(runner):
    model = getattr(runner, "model", None)
    get = getattr(runner, "get_model", None)
    if get is not None:
        try:
            model = get()
        except Exception:
            pass
    return model


_atexit_done = []


def _activate(c):
    if c is not None and _readback not in _worker._listeners:
        _worker._listeners.append(_readback)
        _worker._pre_listeners.append(_before)
        if not _atexit_done:
            import atexit

            atexit.register(flush_all)
            _atexit_done.append(True)


IN_GRAPH_REASON = "expert counts unavailable: MoE layers run inside CUDA graphs captured before attach"


def attach_live(p, runner, graphs_captured, graphs_now=None):
    """Late start: the runner's load_model ran before the hook came. Returns (layers, note).

    With CUDA graphs already captured the routing ops run inside graphs our counters can never
    enter: nothing is installed and ``note`` says why. Otherwise the counters are created at the
    runner's next forward pass, on the runner's own thread (a pre-forward listener), never on
    the attaching thread: allocating or launching on the GPU while another thread captures a
    graph would break that capture. ``graphs_now()`` is asked again at that moment (a capture may
    have happened in between: then the patch reports the note instead)."""
    model = model_of(runner)
    found = find_routers(model)
    if not found:
        return 0, None
    if graphs_captured:
        return len(found), IN_GRAPH_REASON
    if sys.modules.get("torch") is None:
        return len(found), "expert counts unavailable: torch is not imported in this process"
    done = []

    def deferred(r, so):
        if done or r is not runner:
            return
        done.append(True)
        try:
            if graphs_now is not None and graphs_now():
                from .base import UNAVAILABLE

                p.set_status(UNAVAILABLE, IN_GRAPH_REASON)
                rt.emit_log(2, "%s: %s (%d MoE layers; graphs captured between the attach and the first forward)"
                            % (p.name, IN_GRAPH_REASON, len(found)))
                return
            if p.on:
                _activate(attach(p, model, found))  # _before joins the listeners running now
        except Exception as e:
            p.fail(e)

    _worker._pre_listeners.append(deferred)
    return len(found), None


# Counters whose ops may sit inside a CUDA graph captured while they were installed: a graph
# keeps writing into their tensors on every replay, so they must outlive a detach.
_KEEPALIVE = []


def reset(keep_alive):
    """Late detach: drop this session's counters (router wrappers are removed by the patch's
    uninstall). With keep_alive the tensors stay referenced forever (a captured graph may
    still write into them)."""
    if keep_alive:
        _KEEPALIVE.extend(_COUNTERS)
    del _COUNTERS[:]


def _readback(runner, step):
    for c in _COUNTERS:
        c.snapshot_poll()
        every = (rt.CFG.MOE_READBACK_STEPS or rt.CFG.LOG_INTERVAL) if rt.CFG else 100
        c.steps += 1
        if c.pending is None and c.steps % max(1, every) == 0:
            c.snapshot_start()


def flush_all():
    """At exit: start and wait for a last read-back (only place that waits)."""
    for c in _COUNTERS:
        try:
            if c.pending is None:
                c.snapshot_start()
            c.snapshot_poll(force=True)
        except Exception:
            pass


def install(p, mod):
    cls = getattr(mod, "GPUModelRunner", None)
    if cls is None or not hasattr(cls, "load_model"):
        return "%s has no GPUModelRunner.load_model" % mod.__name__

    def make(orig):
        def w(self, *a, **kw):
            r = orig(self, *a, **kw)
            if p.on:
                try:
                    model = getattr(self, "model", None)
                    get = getattr(self, "get_model", None)
                    if get is not None:
                        try:
                            model = get()
                        except Exception:
                            pass
                    _activate(attach(p, model))
                except Exception as e:
                    p.fail(e)
            return r
        return w
    p.wrap(cls, "load_model", make)
    return None


def _before(runner, so):
    n = getattr(so, "total_num_scheduled_tokens", None)
    if n is None:
        return
    for c in _COUNTERS:
        c.before_forward(n)


def patches():
    S = "ENABLE_MOE_EXPERT_TRACKING"
    return [Patch("moe.v1_runner", "vllm.v1.worker.gpu_model_runner", S, install),
            Patch("moe.v2_runner", "vllm.v1.worker.gpu.model_runner", S, install)]
