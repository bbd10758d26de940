"""Late start: the hook in a process that is already serving (docs/injection.md §4 and §5).

``start(conf_path)`` runs either on the agent's own C thread under ``PyGILState_Ensure`` or
from a PEP 768 script at a safe point. It creates the hook's ``profilemate-pyhook`` ring as the
import-time hook does (tracer mode, producer_flags bit 1), applies every patch to the vLLM
modules already imported (modules imported later are patched by the import hook, as before),
and then reaches the live objects that import-time patching would have caught:

* bound methods stored on instances before the attach (``EngineCore.step_fn = self.step``,
  callbacks in lists or dicts of vLLM objects) are re-bound to the patched functions;
* each live ``BlockPool`` gets its ``py_kv_config`` record (normally written by ``__init__``),
  with ``num_free_blocks_at_attach`` (the snapshot a dormant -> collecting transition also writes);
* each live model runner's MoE routers get counters when no CUDA graph was captured yet, and
  otherwise the ``moe.*`` patch says why there are no counts (``py_patch_status`` unavailable +
  a ``log`` record) instead of reporting zeros;
* the per-piece capture wrapper is not installed when graphs were already captured.

Live objects are found from every thread's stack (``self`` and the other locals of each frame),
``CUDAGraphWrapper._all_instances``, and the objects the collector tracks (vLLM freezes its
startup heap with ``gc.freeze()``, which hides frozen objects from ``gc.get_objects()``: the
stacks reach those), followed through the ``__dict__`` of vLLM objects within fixed bounds.

One daemon thread (``pm-pyhook``) polls the ring's control word every 50 ms: ``control_enable=3``
or an orphaned tracer (heartbeat older than ``orphan_timeout_s``, or never set that long after
the start) removes every patch (the original objects are put back), acknowledges, sets
``producer_state=5``, stops the thread and closes the ring. A later ``start`` works again.

Nothing here raises into the target: errors go to the configuration's ``log`` file.
"""

import collections
import gc
import os
import sys
import threading
import time
import types

from . import runtime as rt

__all__ = ["start", "stop", "active", "read_conf"]

LEVELS = {"none": 0, "graph": 1, "nodes": 2}
DEFAULT_ORPHAN_TIMEOUT_S = 30

# bounds of the live-object search (start holds the GIL on the agent's thread: keep it short)
WALK_MAX_OBJECTS = 100000
WALK_MAX_DEPTH = 10
WALK_MAX_CONTAINER = 512
WALK_BUDGET_S = 0.25

# (module, class, kind): the objects import-time patching would have caught at construction
TARGETS = (
    ("vllm.v1.engine.core", "EngineCore", "engine"),
    ("vllm.v1.core.sched.scheduler", "Scheduler", "scheduler"),
    ("vllm.v1.core.kv_cache_manager", "KVCacheManager", "kv_manager"),
    ("vllm.v1.core.block_pool", "BlockPool", "block_pool"),
    ("vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "runner_v1"),
    ("vllm.v1.worker.gpu.model_runner", "GPUModelRunner", "runner_v2"),
    ("vllm.v1.cudagraph_dispatcher", "CudagraphDispatcher", "dispatcher"),
    ("vllm.v1.worker.gpu.cudagraph_utils", "CudaGraphManager", "cg_manager"),
    ("vllm.compilation.cuda_graph", "CUDAGraphWrapper", "cg_wrapper"),
    ("vllm.compilation.breakable_cudagraph", "BreakableCUDAGraphWrapper", "breakable"),
    ("vllm.v1.worker.gpu_ubatch_wrapper", "UBatchWrapper", "ubatch"),
    ("vllm.v1.worker.gpu.mm.encoder_runner", "EncoderRunner", "encoder_runner"),
)

# kinds whose presence means the stacks reached the serving objects (no gc scan needed)
OWNERS = ("engine", "scheduler", "block_pool", "runner_v1", "runner_v2")

_lock = threading.RLock()
_session = None       # _Session while attached
_once = set()         # process-wide registrations done once (atexit, fork)


class _Session:
    def __init__(self, conf_path, log_path):
        self.conf_path = conf_path
        self.log_path = log_path
        self.inst_restore = []   # (container, key, original, replacement): re-bound methods
        self.live_counts = {}
        self.graph_count = 0
        self.graph_sources = []  # V2 managers / wrappers seen at start (for the MoE keep-alive)
        self.start_ms = 0.0


class Live:
    """Objects found by ``discover``: ``by[kind]`` lists, ``scan`` the objects whose
    ``__dict__`` may hold bound methods captured before the attach."""

    def __init__(self):
        self.by = collections.defaultdict(list)
        self.scan = []
        self.visited = 0
        self.truncated = False
        self.gc_scan = False


# ---- configuration -----------------------------------------------------------------------
def read_conf(path):
    """``key=value`` per line, ``#`` comment lines, unknown keys kept (and ignored)."""
    conf = {}
    with open(path, "r", errors="replace") as f:
        for line in f:
            s = line.strip()
            if not s or s.startswith("#") or "=" not in s:
                continue
            k, v = s.split("=", 1)
            conf[k.strip()] = v.strip()
    return conf


def _log_to(path, msg):
    if path:
        rt.log_to_file(path, msg)


# ---- public API ----------------------------------------------------------------------------
def start(conf_path):
    """Start the hook in this running process. Returns 0 when started, 1 when already running
    in this process (a late session, or the import-time hook), a negative value on error
    (-1 failure, -2 disabled by PROFILEMATE_PYHOOK_DISABLE). Never raises."""
    log_path = None
    try:
        conf = read_conf(conf_path)
        log_path = conf.get("log") or None
        with _lock:
            return _start(conf_path, conf, log_path)
    except Exception as e:
        _log_to(log_path, "late start failed: %r; the process runs untraced" % (e,))
        try:
            with _lock:
                if rt._late or _session is not None:  # never touch an import-time hook
                    _detach(None, None, failed=True)
        except Exception:
            pass
        return -1


def stop(timeout=2.0):
    """Detach from inside the process (tests, scripts): the same as control_enable=3. Returns
    True when a session was running. Waits up to ``timeout`` for the hook thread to end."""
    th = None
    with _lock:
        if _session is None:
            return False
        th = rt._thread
        rt._stop.set()
        _detach(0, rt.RING.control()[2] if rt.RING is not None else None)
    if th is not None and th is not threading.current_thread():
        th.join(timeout)
    return True


def active():
    return _session is not None


# ---- start ---------------------------------------------------------------------------------
def _start(conf_path, conf, log_path):
    global _session
    if _session is not None:
        return 1
    if rt._started and not rt._late:
        _log_to(log_path, "the import-time hook is already active in this process (%s mode, ring fd %s); "
                          "late start does nothing" % (rt.mode(), getattr(rt.RING, "fd", -1)))
        return 1
    t0 = time.monotonic()
    from . import config
    from .patches import all_patches, base

    cfg = config.load()
    if cfg.DISABLE:
        _log_to(log_path, "disabled by PROFILEMATE_PYHOOK_DISABLE in the target's environment")
        return -2
    notes = list(cfg.errors)
    cfg.SPILL = False  # injected: the tracer consumes; never write session files
    try:
        cfg.ORPHAN_TIMEOUT_S = float(conf.get("orphan_timeout_s", DEFAULT_ORPHAN_TIMEOUT_S))
        if cfg.ORPHAN_TIMEOUT_S <= 0:
            raise ValueError("must be > 0")
    except ValueError as e:
        notes.append("orphan_timeout_s=%r: %s; using %d" % (conf.get("orphan_timeout_s"), e, DEFAULT_ORPHAN_TIMEOUT_S))
        cfg.ORPHAN_TIMEOUT_S = DEFAULT_ORPHAN_TIMEOUT_S
    lvl = conf.get("start", "none").strip().lower() or "none"
    level = LEVELS.get(lvl)
    if level is None:
        notes.append("start=%r is not none, graph or nodes; staying dormant" % lvl)
        level = 0

    sess = _Session(conf_path, log_path)
    _session = sess
    rt.start_late(cfg, level, log_path)
    for n in notes:
        rt.log(n)

    # what was already built decides how some patches install (captures, MoE)
    live = discover()
    sess.graph_count, rt.late_graphs, sess.graph_sources = graph_evidence(live)
    sess.live_counts = {k: len(v) for k, v in live.by.items() if v}

    base.LATE_ONLY = True
    base.install_finder()
    for p in all_patches():
        base.add(p)  # imported modules now, the others when they are imported

    nbound = rebind_methods(live, sess)
    _live_kv(live)
    _live_moe(live)
    del live

    rt._on_detach = _detach_from_thread
    _register_once()
    rt._start_thread()
    sess.start_ms = (time.monotonic() - t0) * 1e3
    inst = sum(1 for p in rt._patches if p.status == 1)
    summary = ("late start in %.1f ms: %d patches installed; live objects %s; %d bound method(s) re-bound; "
               "CUDA graphs captured before attach: %s" % (
                   sess.start_ms, inst, ", ".join("%s %d" % kv for kv in sorted(sess.live_counts.items())) or "none",
                   nbound, rt.late_graphs or "none"))
    rt.emit_log(1, summary)
    rt.flush()
    rt.log(summary)
    return 0


def _register_once():
    if "atexit" not in _once:
        import atexit

        atexit.register(rt.shutdown)
        _once.add("atexit")
    if "fork" not in _once and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_child)
        _once.add("fork")


# ---- live objects --------------------------------------------------------------------------
def _target_classes():
    out = []
    for mod, name, kind in TARGETS:
        cls = getattr(sys.modules.get(mod), name, None)
        if isinstance(cls, type):
            out.append((cls, kind))
    return out


_ATOMIC = (str, bytes, bytearray, int, float, complex, bool, type(None), range, slice, memoryview)
_SEQ = (list, tuple, set, frozenset, collections.deque)


def discover(max_objects=WALK_MAX_OBJECTS, budget_s=WALK_BUDGET_S):
    """Find the live vLLM objects of interest, within fixed bounds."""
    live = Live()
    targets = _target_classes()
    if not targets:
        return live
    kinds = {}  # every target class and its subclasses (live: __subclasses__ is complete now)
    for cls, kd in targets:
        todo = [cls]
        while todo:
            c = todo.pop()
            if c not in kinds:
                kinds[c] = kd
                try:
                    todo.extend(type.__subclasses__(c))
                except Exception:
                    pass
    kind_of = kinds.get

    roots = []
    # 1. every thread's stack: `self` and the other locals of each frame
    try:
        frames = list(sys._current_frames().values())
    except Exception:
        frames = []
    for f in frames:
        depth = 0
        while f is not None and depth < 200:
            try:
                loc = f.f_locals
                roots.extend(v for v in loc.values() if not isinstance(v, _ATOMIC))
            except Exception:
                pass
            f = f.f_back
            depth += 1
    del frames
    # 2. registries vLLM keeps itself
    for cls, _k in targets:
        reg = cls.__dict__.get("_all_instances")
        if reg is not None:
            try:
                roots.extend(list(reg))
            except Exception:
                pass
    deadline = time.monotonic() + budget_s
    _walk(roots, kind_of, live, max_objects, deadline)
    # 3. nothing reachable from a stack (a process holding vLLM objects only in globals or
    #    closures): the objects the collector tracks, filtered by type at C speed. Objects frozen
    #    by gc.freeze() (vLLM freezes its startup heap) are not listed; the stacks reach those.
    if not any(live.by.get(k) for k in OWNERS):
        try:
            objs = gc.get_objects()
            found = [o for o in objs if type(o) in kinds]
            del objs
            _walk(found, kind_of, live, max_objects, deadline + budget_s)
            live.gc_scan = True
        except Exception:
            pass
    return live


def _walk(roots, kind_of, live, max_objects, deadline):
    nn_mod = getattr(getattr(sys.modules.get("torch"), "nn", None), "Module", None)
    seen = set()
    stack = [(o, 0) for o in reversed(roots)]
    while stack:
        o, d = stack.pop()
        i = id(o)
        if i in seen:
            continue
        seen.add(i)
        if len(seen) > max_objects or not len(seen) & 1023 and time.monotonic() > deadline:
            live.truncated = True
            break
        t = type(o)
        if t in _SEQ:
            if d < WALK_MAX_DEPTH and len(o) <= WALK_MAX_CONTAINER:
                stack.extend((x, d + 1) for x in o if not isinstance(x, _ATOMIC))
            continue
        if t is dict:
            if d < WALK_MAX_DEPTH and len(o) <= WALK_MAX_CONTAINER:
                stack.extend((x, d + 1) for x in o.values() if not isinstance(x, _ATOMIC))
            continue
        k = kind_of(t)
        if k is not None:
            live.by[k].append(o)
        elif not str(getattr(t, "__module__", "") or "").startswith("vllm"):
            continue
        if nn_mod is not None and k is None and isinstance(o, nn_mod):
            continue  # a model: routers are found through the runner, not by walking layers
        try:
            dct = object.__getattribute__(o, "__dict__")
        except Exception:
            continue
        if type(dct) is not dict:
            continue
        live.scan.append(o)
        if d < WALK_MAX_DEPTH:
            stack.extend((v, d + 1) for v in dct.values() if not isinstance(v, _ATOMIC))
    live.visited += len(seen)


_GRAPH_KINDS = (("cg_wrapper", "CUDAGraphWrapper"), ("breakable", "BreakableCUDAGraphWrapper"),
                ("cg_manager", "CudaGraphManager (V2)"), ("ubatch", "UBatchWrapper"))


def _n_graphs(o, kind):
    """Graphs an object holds: CUDAGraphWrapper entries with a graph, the other holders' dicts."""
    try:
        if kind == "cg_wrapper":
            entries = getattr(o, "concrete_cudagraph_entries", None) or {}
            return sum(1 for e in list(entries.values()) if getattr(e, "cudagraph", None) is not None)
        attr = {"breakable": "entries", "cg_manager": "graphs", "ubatch": "cudagraphs"}[kind]
        return len(getattr(o, attr, None) or ())
    except Exception:
        return 0


def _counter():
    cc = getattr(sys.modules.get("vllm.compilation.counter"), "compilation_counter", None)
    try:
        return int(getattr(cc, "num_cudagraph_captured", 0) or 0)
    except Exception:
        return 0


def graph_evidence(live):
    """(count, text, sources): CUDA graphs already captured in this process, and by what."""
    ev = []
    total = n = _counter()
    if n:
        ev.append("compilation_counter.num_cudagraph_captured=%d" % n)
    sources = []
    for kind, label in _GRAPH_KINDS:
        n = 0
        for o in {id(x): x for x in live.by.get(kind, ())}.values():
            n += _n_graphs(o, kind)
            sources.append((o, kind))
        if n:
            ev.append("%d %s graph(s)" % (n, label))
            total += n
    return total, ", ".join(ev), sources


def _graph_count_now(sess):
    return _counter() + sum(_n_graphs(o, kind) for o, kind in sess.graph_sources)


def _graphs_since_start():
    sess = _session
    return sess is not None and _graph_count_now(sess) != sess.graph_count


def rebind_methods(live, sess):
    """Bound methods stored before the attach still point at the original functions (e.g.
    ``EngineCore.step_fn = self.step``): re-bind those whose function we patched, in the
    instance's ``__dict__`` and in lists / dicts held there. Each is undone at detach."""
    fmap = {}
    for p in rt._patches:
        for ent in p.restore:
            if len(ent) > 4 and isinstance(ent[0], type) and isinstance(ent[2], types.FunctionType) \
                    and isinstance(ent[4], types.FunctionType):
                fmap[id(ent[2])] = (ent[2], ent[4])
    if not fmap:
        return 0
    n = 0

    def fix(container, key, v):
        nonlocal n
        if type(v) is not types.MethodType:
            return
        ent = fmap.get(id(v.__func__))
        if ent is None or ent[0] is not v.__func__:
            return
        nb = types.MethodType(ent[1], v.__self__)
        container[key] = nb
        sess.inst_restore.append((container, key, v, nb))
        n += 1

    for o in live.scan:
        try:
            dct = object.__getattribute__(o, "__dict__")
            for k, v in list(dct.items()):
                t = type(v)
                if t is types.MethodType:
                    fix(dct, k, v)
                elif t is list and len(v) <= WALK_MAX_CONTAINER:
                    for i, x in enumerate(list(v)):
                        fix(v, i, x)
                elif t is dict and len(v) <= WALK_MAX_CONTAINER:
                    for kk, x in list(v.items()):
                        fix(v, kk, x)
        except Exception as e:
            rt.report_once("rebind", "could not re-bind methods of a %s: %r" % (type(o).__name__, e))
    return n


def _patch(name):
    for p in rt._patches:
        if p.name == name:
            return p
    return None


def _live_kv(live):
    """py_kv_config for every BlockPool built before the attach (its __init__ ran unpatched):
    the pools are tracked like those built later, and the same snapshot that a dormant ->
    collecting transition writes is written now (``num_free_blocks_at_attach``; captures kept
    while dormant: none yet in a fresh late session)."""
    p = _patch("kv.block_pool")
    if p is not None and p.on:
        from .patches import kv

        for pool in live.by.get("block_pool", ()):
            kv.track(pool)
    rt.emit_snapshot()


def _live_moe(live):
    """MoE counters for runners whose load_model ran before the attach, or the reason there are none."""
    from .patches import base, moe

    for kind, name in (("runner_v1", "moe.v1_runner"), ("runner_v2", "moe.v2_runner")):
        p = _patch(name)
        if p is None or not p.on:
            continue
        for runner in live.by.get(kind, ()):
            try:
                nlayers, note = moe.attach_live(p, runner, bool(rt.late_graphs), _graphs_since_start)
            except Exception as e:
                p.fail(e)
                continue
            if note:
                p.set_status(base.UNAVAILABLE, note)
                rt.emit_log(2, "%s: %s (%d MoE layers; graphs: %s)" % (name, note, nlayers, rt.late_graphs or "none"))
                rt.log("%s: %s" % (name, note))
                break


# ---- detach ----------------------------------------------------------------------------------
def _detach_from_thread(reason, seq):
    with _lock:
        _detach(reason, seq)


def _detach(reason, seq, failed=False):
    """Remove every patch (originals back), acknowledge, producer_state=5, close the ring.
    reason: 0 tracer (control_enable=3), 2 orphaned, None failed start."""
    global _session
    sess = _session
    if sess is None and not failed:
        return
    _session = None
    from . import ring as _ring
    from .patches import base, reset_state

    rt.ON = False
    rt._on_detach = None
    rt._stop.set()
    for p in rt._patches:
        p.on = False  # calls already inside a wrapper finish as if untraced
    if sess is not None:
        for container, key, orig, new in reversed(sess.inst_restore):
            try:
                if container[key] is new:
                    container[key] = orig
            except Exception:
                pass
        sess.inst_restore = []
    for p in reversed(rt._patches):
        p.uninstall()
    base.remove_finder()
    base.LATE_ONLY = True
    from .patches import moe

    keep = bool(moe._COUNTERS) and (sess is None or _graph_count_now(sess) != sess.graph_count)
    reset_state(moe_keep_alive=keep)
    if rt.RING is not None:
        detail = rt.RING.control()[1]
        # control_change reason: 2 orphaned, 6 detach (as the agent writes it)
        rt.emit_control(_ring.CONTROL_DETACH, detail, seq or 0, 2 if reason == 2 else 6)
    rt.late_graphs = ""
    rt.end_late(_ring.STATE_DETACHED if not failed else _ring.STATE_FAILED, seq if reason == 0 else None)
    del rt._patches[:]
    if sess is not None:
        why = {0: "the tracer asked (control_enable=3)", 2: "orphaned: no tracer heartbeat for %ss"
               % (rt.CFG.ORPHAN_TIMEOUT_S if rt.CFG else "?")}.get(reason, "stopped")
        rt.log("detached: %s; every patch removed%s" % (why, "; MoE counters kept alive (a graph captured "
                                                           "since the attach may still write into them)" if keep else ""))
    rt._log_path = None


def _after_fork_child():
    """A forked child of an attached process was not injected: remove the patches there
    without touching the parent's ring (its header is shared memory)."""
    global _lock
    _lock = threading.RLock()
    if _session is None:
        return
    r = rt.RING
    rt.RING = None
    if r is not None:
        r.lock = threading.Lock()
    try:
        _detach(None, None)
    except Exception:
        pass
    if r is not None:
        r.close()  # this process's mapping and fd copy only
