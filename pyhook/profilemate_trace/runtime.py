"""Per-process runtime: ring, emit helpers, control/spill thread, fork and exit handling.

Nothing here imports vLLM. ``start()`` is called once vLLM is imported (lazily, from the
import hook); until then the hook costs one dict lookup per import.
"""

import array
import atexit
import json
import os
import sys
import threading
import time

from . import _records as R
from . import ring as _ring

VERSION = "0.1.0"

# ---- global fast-path state (read by every wrapper) ------------------------------------
ON = False            # collect records now (tracer enabled us, PROFILEMATE_START, or spill mode)
RING = None           # ring.Ring
CFG = None            # config.Config
sched_step = 0        # scheduler step id in this process
worker_step = 0       # worker step id in this process
errors_total = 0

_mono = time.monotonic_ns

_started = False
_mode = "off"         # "spill" | "tracer" | "dormant" | "off"
_spill = None         # _Spill
_thread = None
_stop = threading.Event()
_patches = []         # list of patches.base.Patch (all known)
_session_dir = None
_session_root = False
_started_by = "import"
_startup_notes = []
_reported = set()
_late = False         # started by profilemate_trace.late (injected): detaches on control_enable=3
_log_path = None      # late start: warnings go to this file (the target's stderr is not ours)
_on_detach = None     # late start: callable(reason, seq) run by the hook thread to detach
_late_started_ns = 0
late_graphs = ""      # late start: evidence that CUDA graphs were captured before attach ("" none)


def log_to_file(path, msg):
    """One timestamped, prefixed line appended to path (an injected hook's log); never raises."""
    try:
        with open(path, "a") as f:
            f.write("%s pid %d [profilemate] pyhook: %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), os.getpid(), msg))
    except Exception:
        pass


def log(msg):
    """One line on stderr (or, when injected, in the configured log file), prefixed; never raises."""
    if _log_path:
        log_to_file(_log_path, msg)
        return
    line = "[profilemate] pyhook: %s\n" % msg
    try:
        sys.stderr.write(line)
        sys.stderr.flush()
    except Exception:
        pass


def report_once(key, msg):
    if key in _reported:
        return
    _reported.add(key)
    log(msg)


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode("utf-8", "replace") if isinstance(s, str) else bytes(s):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


_hash_cache = {}


def req_hash(req_id):
    h = _hash_cache.get(req_id)
    if h is None:
        if len(_hash_cache) > 65536:
            _hash_cache.clear()
        h = _hash_cache[req_id] = fnv1a64(str(req_id))
    return h


def u32(v):
    try:
        v = int(v)
    except Exception:
        return 0
    return v & 0xFFFFFFFF if v >= 0 else 0


def i32(v):
    if v is None:
        return -1
    try:
        v = int(v)
    except Exception:
        return -1
    return max(-0x80000000, min(0x7FFFFFFF, v))


def ids_tail(ids):
    return array.array("I", ids).tobytes()


# ---- emit helpers: one per record --------------------------------------------------------
def _spec(s):
    return s._struct, s.type, s.size


_S_PROC = _spec(R.PY_PROCESS)
_S_PATCH = _spec(R.PY_PATCH_STATUS)
_S_DISP = _spec(R.PY_GRAPH_DISPATCH)
_S_CAP = _spec(R.PY_GRAPH_CAPTURE)
_S_KV = _spec(R.PY_KV_BLOCKS)
_S_KVCFG = _spec(R.PY_KV_CONFIG)
_S_SCHED = _spec(R.PY_SCHED_STEP)
_S_PREEMPT = _spec(R.PY_PREEMPT)
_S_REQ = _spec(R.PY_REQUEST_EVENT)
_S_SCOPE = _spec(R.PY_CPU_SCOPE)
_S_FWD = _spec(R.PY_FORWARD)
_S_MOE_C = _spec(R.PY_MOE_EXPERT_COUNTS)
_S_MOE_P = _spec(R.PY_MOE_COSELECT)
_S_MOE_H = _spec(R.PY_MOE_WEIGHT_HIST)
_S_ENC = _spec(R.PY_ENCODER)
_S_STATS = _spec(R.PY_HOOK_STATS)
_S_PINFO = _spec(R.PROCESS_INFO)
_S_CTL = _spec(R.CONTROL_CHANGE)


PENDING = []          # framed records not yet copied into the ring (list.append is atomic)
_PENDING_MAX = 128
_ZEROS = bytes(8)


def _w(spec, vals, tail=None):
    """Frame one record and queue it; the hot path takes no lock. The queue is copied into
    the ring in batches by flush(): when it holds _PENDING_MAX records, every 50 ms by the
    hook thread, before any drain, at fork and at exit."""
    if RING is None:
        return
    st, t, size = spec
    if tail:
        n = (size + len(tail) + 7) & ~7
        b = st.pack(t, 0, n, *vals) + tail
        if n - size - len(tail):
            b += _ZEROS[:n - size - len(tail)]
    else:
        b = st.pack(t, 0, size, *vals)
    PENDING.append(b)
    if len(PENDING) >= _PENDING_MAX:
        flush()


def flush():
    """Copy queued records into the ring (serialised by the ring's lock; writers that append
    meanwhile land behind the prefix taken here)."""
    r = RING
    if r is None or not PENDING:
        return
    with r.lock:
        n = len(PENDING)
        if not n:
            return
        chunk = PENDING[:n]
        del PENDING[:n]
        r.write_many_locked(chunk)


_tids = {}
_get_ident = threading.get_ident


def _tid():
    """Native thread id, cached per Python thread (get_native_id costs ~0.4 µs)."""
    i = _get_ident()
    t = _tids.get(i)
    if t is None:
        t = _tids[i] = threading.get_native_id()
    return t


def emit_kv(op, pool_id, num_free, aux, ids):
    t = ids_tail(ids) if ids else b""
    _w(_S_KV, (_mono(), _tid(), op, pool_id, num_free, aux, len(t)), t)


def emit_kv_config(pool_id, num_gpu_blocks, block_size, enable_caching, info):
    t = json.dumps(info, default=str).encode()
    _w(_S_KVCFG, (_mono(), _tid(), pool_id, u32(num_gpu_blocks), u32(block_size), 1 if enable_caching else 0, len(t)), t)


def emit_dispatch(step, mode, ntok, nreal, nreqs, nlora, utc, mql, flags, kind, source, desc_b):
    _w(_S_DISP, (_mono(), step, _tid(), mode, ntok, nreal, nreqs, nlora, utc, mql, flags, kind, source, len(desc_b)), desc_b)


def emit_capture(start, end, mode, ntok, nreqs, nlora, flags, source, desc_b, tid=None):
    _w(_S_CAP, (start, end, tid or _tid(), mode, ntok, nreqs, nlora, flags, source, len(desc_b)), desc_b)


def emit_sched(vals):
    _w(_S_SCHED, vals)


def emit_preempt(ts, step, req_id, reason, ncomp, npre):
    b = str(req_id).encode()
    _w(_S_PREEMPT, (ts, step, req_hash(req_id), _tid(), reason, u32(ncomp), u32(npre), len(b), 0), b)


def emit_req(ts, step, req_id, event, detail, nprompt, nout):
    b = str(req_id).encode()
    _w(_S_REQ, (ts, step, req_hash(req_id), _tid(), event, detail, u32(nprompt), u32(nout), len(b)), b)


def emit_scope(start, end, step, scope, name_b):
    _w(_S_SCOPE, (start, end, step, _tid(), scope, len(name_b), 0), name_b)


def emit_forward(vals):
    _w(_S_FWD, vals)


def emit_encoder(start, end, gpu_ns, step, nitems, runner):
    _w(_S_ENC, (start, end, gpu_ns, step, _tid(), nitems, runner, 0))


def emit_moe_counts(ts, ws, layer, nexp, topk, counts_bytes):
    _w(_S_MOE_C, (ts, ws, _tid(), layer, nexp, topk, len(counts_bytes), 0), counts_bytes)


def emit_moe_coselect(ts, ws, layer, nexp, pairs_bytes):
    _w(_S_MOE_P, (ts, ws, _tid(), layer, nexp, len(pairs_bytes)), pairs_bytes)


def emit_moe_hist(ts, ws, lo, hi, layer, nbins, bins_bytes):
    _w(_S_MOE_H, (ts, ws, lo, hi, _tid(), layer, nbins, len(bins_bytes)), bins_bytes)


def emit_patch_status(name, status, errors, reason=""):
    t = name.encode() + b"\0" + str(reason).encode("utf-8", "replace")[:2000]
    _w(_S_PATCH, (_mono(), _tid(), status, errors, len(t)), t)


def emit_control(enable, detail, seq, reason):
    _w(_S_CTL, (_mono(), enable, detail, seq, 0, reason, 0))


_S_LOG = _spec(R.LOG)


def emit_log(level, text):
    """A `log` record (type 194): 0 debug, 1 info, 2 warning, 3 error."""
    t = str(text).encode("utf-8", "replace")[:4000]
    _w(_S_LOG, (_mono(), level, len(t)), t)


def emit_hook_stats():
    r = RING
    if r is None:
        return
    flush()
    n_inst = sum(1 for p in _patches if p.status == 1)
    # counters reflect the state before this record
    _w(_S_STATS, (_mono(), r.written, r.dropped, errors_total, _tid(), n_inst))


# ---- process identity ---------------------------------------------------------------
def _proc_info():
    try:
        import multiprocessing

        mp_name = multiprocessing.current_process().name
    except Exception:
        mp_name = ""
    vv = ""
    m = sys.modules.get("vllm")
    if m is not None:
        vv = str(getattr(m, "__version__", ""))
    comm = ""
    try:
        with open("/proc/self/comm") as f:
            comm = f.read().strip()
    except OSError:
        pass
    return {
        "python": sys.version.split()[0],
        "vllm_version": vv,
        "argv": list(sys.argv)[:32],
        "mp_name": mp_name,
        "comm": comm,
        "hook_version": VERSION,
        "started_by": _started_by,
        "mode": _mode,
        "config": CFG.as_dict() if CFG else {},
    }


def _emit_stream_start(flags, agent_flags=0):
    info = _proc_info()
    t = json.dumps(info, default=str).encode()
    now = _mono()
    _w(_S_PINFO, (now, os.getpid(), os.getppid(), 2, 0, 0, agent_flags, len(t), 0), t)
    _w(_S_PROC, (now, _tid(), os.getppid(), flags, len(t)), t)


# ---- session directory and spill (Option 2) --------------------------------------------
def _safe_mkdir(path):
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    import stat as _st

    if not _st.S_ISDIR(st.st_mode):
        raise OSError("%s exists and is not a directory (symlinks are not followed)" % path)


def session_dir():
    """Create (root process) or reuse (children: PROFILEMATE_SESSION_DIR) the session dir."""
    global _session_dir, _session_root
    if _session_dir:
        return _session_dir
    d = os.environ.get("PROFILEMATE_SESSION_DIR")
    if d:
        _session_dir = d
        _safe_mkdir(d)
    else:
        base = CFG.PROFILING_DIR
        os.makedirs(base, mode=0o700, exist_ok=True)
        _safe_mkdir(base)
        name = "session_" + time.strftime("%Y%m%d_%H%M%S")
        d = os.path.join(base, name)
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            d = "%s_%d" % (d, os.getpid())
            os.mkdir(d, 0o700)
        _session_dir = d
        _session_root = True
        os.environ["PROFILEMATE_SESSION_DIR"] = d  # children (fork and spawn) write here too
    _safe_mkdir(os.path.join(_session_dir, "raw"))
    return _session_dir


class _Spill:
    """Drains the ring into raw/<pid>.pyhook.pmr (docs/record-format.md, raw stream)."""

    def __init__(self):
        d = session_dir()
        path = os.path.join(d, "raw", "%d.pyhook.pmr" % os.getpid())
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:  # pid reuse inside one session
            path = path[:-4] + ".%d.pmr" % _mono()
            fd = os.open(path, flags, 0o600)
        self.path = path
        self.f = os.fdopen(fd, "wb", buffering=0)
        comm = ""
        try:
            with open("/proc/self/comm") as fc:
                comm = fc.read().strip()
        except OSError:
            pass
        meta = {"source": "pyhook", "pid": os.getpid(), "ppid": os.getppid(), "comm": comm,
                "cmdline": list(sys.argv)[:64], "start_ns": _mono(),
                "extra": {"writer": "pyhook-spill", "hook_version": VERSION}}
        m = json.dumps(meta).encode()
        import struct

        hdr = b"PMRAW\x00\x00\x01" + struct.pack("<II", 1, len(m)) + m + bytes((8 - len(m) % 8) % 8)
        self.f.write(hdr)
        self.lock = threading.Lock()
        self.broken = False
        self.closed = False

    def drain(self):
        if self.broken or self.closed or RING is None:
            return
        with self.lock:
            try:
                flush()
                b = RING.read_available()
                if b:
                    self.f.write(b)
            except Exception as e:
                self.broken = True
                report_once("spill", "cannot write %s (%s); records stay in the ring and are dropped when it is full" % (self.path, e))

    def close(self):
        if self.closed:
            return
        self.drain()
        with self.lock:
            try:
                if not self.broken:
                    c = RING.counters()
                    self.f.write(R.STREAM_STATS.pack(ts_ns=_mono(), records_written=c["written"],
                                                     records_dropped=c["dropped"], bytes_dropped=c["bytes_dropped"],
                                                     source_dropped=0))
                self.f.close()
            except Exception:
                pass
            self.closed = True


# ---- control thread ------------------------------------------------------------------
def _apply_start_env():
    s = os.environ.get("PROFILEMATE_START", "").strip().lower()
    return {"graph": 1, "nodes": 2}.get(s, 0)


# ---- snapshots of the state established while dormant ------------------------------------
_snapshots = {}       # name -> callable(): emits records describing live state (kv pools, captures)


def add_snapshot(name, fn):
    """Register ``fn`` (called with no argument) to describe state built while nothing was
    collected: run at every dormant -> collecting transition, at a spill -> tracer handover
    and at a late start. One entry per name (a re-install replaces it)."""
    _snapshots[name] = fn


def emit_snapshot():
    """Run every registered snapshot; each is wrapped (an error is reported once, never raised).
    Returns the number of snapshot functions that ran without error."""
    n = 0
    for name, fn in list(_snapshots.items()):
        try:
            fn()
            n += 1
        except Exception as e:
            report_once("snapshot:" + name, "snapshot %s failed: %r" % (name, e))
    return n


def _loop(stop):
    global ON, _mode
    last_seq = -1
    hb_seen = 0
    spill_every = max(0.02, CFG.SPILL_INTERVAL_MS / 1000.0)
    next_spill = time.monotonic() + spill_every
    status_at = time.monotonic() + 2.0
    while not stop.wait(0.05):
        if status_at and time.monotonic() >= status_at:
            status_at = 0
            _status_line()
        r = RING
        if r is None:
            continue
        try:
            flush()
            enable, detail, seq, hb = r.control()
            if _mode == "spill" and hb and hb != hb_seen and hb_seen:
                # a tracer attached and is consuming: hand the ring over, stop spilling
                _mode = "tracer"
                if _spill is not None:
                    _spill.drain()
                emit_snapshot()  # what went to the spill file is not in the tracer's view
                log("tracer attached to pid %d; spilling stops" % os.getpid())
            if hb:
                hb_seen = hb
            if _late and _late_check(enable, seq, last_seq, hb):
                return  # detached: ring closed, patches removed
            if _mode == "tracer":
                if seq != last_seq:
                    last_seq = seq
                    # 3 (detach) is for injected producers; an import-time hook goes dormant
                    new_on = bool(enable) and enable != _ring.CONTROL_DETACH
                    if new_on != ON:
                        if new_on:
                            # dormant -> collecting: describe what was built meanwhile (block
                            # pools, captured graphs) before any record that refers to it
                            emit_control(enable, detail, seq, 0)
                            emit_snapshot()
                            ON = True
                        else:
                            ON = False
                            emit_control(enable, detail, seq, 0)
                    r.ack(seq)
                if ON and hb and (_mono() - hb) > CFG.ORPHAN_TIMEOUT_S * 1e9:
                    ON = False
                    r.set_control(0, detail)
                    emit_control(0, detail, seq, 2)
            if _mode == "spill" and time.monotonic() >= next_spill:
                next_spill = time.monotonic() + spill_every
                _spill.drain()
        except Exception as e:
            report_once("loop", "control thread error: %r" % (e,))


def _late_check(enable, seq, last_seq, hb):
    """Late start: detach on control_enable=3 (a new seq) or on an orphaned tracer (heartbeat
    older than ORPHAN_TIMEOUT_S, or never set that long after the start). True once detached."""
    reason = None
    if enable == _ring.CONTROL_DETACH and seq != last_seq:
        reason = 0
    else:
        limit = CFG.ORPHAN_TIMEOUT_S * 1e9
        if (hb and _mono() - hb > limit) or (not hb and _mono() - _late_started_ns > limit):
            reason = 2
    if reason is None or _on_detach is None:
        return False
    _on_detach(reason, seq)
    return True


def _start_thread():
    global _thread, _stop
    _stop = threading.Event()  # one event per thread: a late restart never revives an old loop
    _thread = threading.Thread(target=_loop, args=(_stop,), name="pm-pyhook", daemon=True)
    _thread.start()


def _send_fd():
    sock_path = os.environ.get("PROFILEMATE_CONTROL_SOCKET")
    if not sock_path or RING is None or RING.fd < 0:
        return False
    import socket

    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(1.0)
        s.connect(sock_path)
        socket.send_fds(s, [("pyhook %d\n" % os.getpid()).encode()], [RING.fd])
        s.close()
        return True
    except Exception:
        return False  # silent by contract


def _create_ring(flags):
    global RING, ON, _mode, _spill
    RING = _ring.Ring(CFG.RING_MB << 20)
    start_lvl = _apply_start_env()
    tracer = bool(os.environ.get("PROFILEMATE_CONTROL_SOCKET"))
    if tracer or start_lvl or not CFG.SPILL:
        _mode = "tracer"
        if start_lvl:
            RING.set_control(1, start_lvl)
            flags |= 4
    else:
        _mode = "spill"
        flags |= 8
        RING.set_control(1, 1)
    RING.set_flags(0)
    _emit_stream_start(flags)
    if _mode == "spill":
        try:
            _spill = _Spill()
        except Exception as e:
            _spill = None
            _mode = "tracer"  # keep the ring for a later attach; nothing is written to disk
            report_once("spill-open", "cannot create the session directory under %s (%s); no files will be written"
                        % (CFG.PROFILING_DIR, e))
    if tracer:
        _send_fd()
    RING.set_state(_ring.STATE_RUNNING)
    if start_lvl:
        emit_control(1, start_lvl, 0, 1)
    ON = (_mode == "spill") or bool(start_lvl)
    _start_thread()


def start_late(cfg, level, log_path):
    """Injected start (profilemate_trace.late): a ring in tracer mode (never spilling), late-start
    flag set, collecting at once when the configuration says start=graph|nodes, else dormant
    until the tracer's control word. The caller installs the patches, then calls
    ``_start_thread``."""
    global CFG, _started, _started_by, _late, _log_path, RING, ON, _mode, _spill, _late_started_ns
    global sched_step, worker_step
    CFG = cfg
    _log_path = log_path or os.devnull  # injected: never the target's stderr
    _started_by = "inject"
    _late = True
    _spill = None
    _mode = "tracer"
    ON = False
    sched_step = 0
    worker_step = 0
    del PENDING[:]
    _reported.clear()
    _late_started_ns = _mono()
    RING = _ring.Ring(CFG.RING_MB << 20)
    RING.set_flags(2)  # producer_flags bit 1: late start
    flags = 2 if "vllm" in sys.modules else 0
    if level:
        RING.set_control(1, level)
        flags |= 4
    _emit_stream_start(flags, agent_flags=2)
    RING.set_state(_ring.STATE_RUNNING)
    if level:
        emit_control(1, level, 0, 1)
        ON = True
    _started = True


def end_late(state, ack_seq=None):
    """Injected stop: flush, publish ``state`` (5 detached), then acknowledge ``ack_seq`` (so a
    tracer that sees the ack also sees the state), close the ring and forget it."""
    global RING, ON, _started, _late, _mode, _thread
    ON = False
    r = RING
    try:
        if r is not None:
            emit_hook_stats()
            flush()
            r.set_state(state)
            if ack_seq is not None:
                r.ack(ack_seq)
    finally:
        RING = None
        del PENDING[:]
        _started = False
        _late = False
        _mode = "off"
        _thread = None
        _tids.clear()
        _hash_cache.clear()
        if r is not None:
            r.close()


def start(cfg, started_by):
    """Create the ring and threads. Idempotent. Called when vLLM is first imported."""
    global CFG, _started, _started_by
    if _started:
        return
    _started = True
    CFG = cfg
    _started_by = started_by
    try:
        _create_ring(2 if "vllm" in sys.modules else 0)
    except Exception as e:
        report_once("start", "could not start (%r); vLLM runs untraced" % (e,))
        return
    atexit.register(shutdown)
    _mp_finalizer()
    try:
        import multiprocessing.util as mpu

        # multiprocessing clears inherited finalizers at the start of a forked child and then
        # runs its after-fork callbacks: re-register there (fork children leave via os._exit)
        mpu.register_after_fork(_AFTER_FORK_KEY, lambda _o: _mp_finalizer())
    except Exception:
        pass
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_child)


class _Key:
    pass


_AFTER_FORK_KEY = _Key()


def _mp_finalizer():
    try:
        import multiprocessing.util as mpu

        mpu.Finalize(None, shutdown, exitpriority=-100)
    except Exception:
        pass


def _after_fork_child():
    """A forked child must not write into its parent's ring: make a fresh ring and threads."""
    global RING, ON, _spill, sched_step, worker_step, _session_root, _shutdown_pid
    _session_root = False  # the parent prints / exports the session once
    _shutdown_pid = None
    old = RING
    RING = None
    ON = False
    del PENDING[:]  # the parent's queued records are the parent's
    _tids.clear()
    _spill = None
    sched_step = 0
    worker_step = 0
    try:
        if old is not None:
            old.lock = threading.Lock()
            old.close()
    except Exception:
        pass
    try:
        _create_ring(1 | (2 if "vllm" in sys.modules else 0))
        for p in _patches:
            p.reemit_status()
        _mp_finalizer()  # plain os.fork() children that exit through sys.exit / atexit
    except Exception as e:
        report_once("fork", "could not re-create the ring after fork (%r); this child runs untraced" % (e,))


_shutdown_pid = None


def shutdown():
    """Flush at exit (atexit and multiprocessing finalizers). Idempotent per process."""
    global _shutdown_pid
    if _shutdown_pid == os.getpid() or RING is None:
        return
    _shutdown_pid = os.getpid()
    try:
        emit_hook_stats()
        flush()
        RING.set_state(_ring.STATE_EXITED)
        if _spill is not None:
            _spill.close()
        _stop.set()
    except Exception:
        pass
    if _spill is not None and _session_root:
        _finish_session()


def _find_cli():
    import shutil

    exe = os.environ.get("PROFILEMATE_TRACE_BIN") or shutil.which("profilemate-trace")
    if not exe:
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        cand = os.path.join(here, "bin", "profilemate-trace")
        if os.access(cand, os.X_OK):
            exe = cand
    return exe


def _finish_session():
    """Option 2 ending, in the process that created the session: turn raw/ into the documented
    files with the CLI (`export -o` into a sibling temp dir, then swapped in under the session's
    name, so `session_*/` ends up holding metadata.json, the CSV/JSON files and raw/), or print
    the command when the CLI is not available."""
    import shutil
    import subprocess

    d = _session_dir.rstrip("/")
    parent, name = os.path.split(d)
    exe = _find_cli()
    if exe and CFG.AUTO_EXPORT:
        tmp = os.path.join(parent, ".%s.export-%d" % (name, os.getpid()))
        old = os.path.join(parent, ".%s.raw-%d" % (name, os.getpid()))
        try:
            time.sleep(0.3)  # let sibling processes finish their last spill
            p = subprocess.run([exe, "export", "-o", tmp, d], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               timeout=300)
            if p.returncode == 0 and os.path.isdir(tmp):
                os.rename(d, old)
                os.rename(tmp, d)
                shutil.rmtree(old, ignore_errors=True)
                log("session written: %s" % d)
                return
            log("'%s export' failed (exit %d): %s" % (exe, p.returncode, p.stderr.decode(errors="replace")[-500:]))
        except Exception as e:
            log("'%s export' failed: %r" % (exe, e))
        shutil.rmtree(tmp, ignore_errors=True)
    log("raw hook streams in %s/raw; write the ProfileMate files with: profilemate-trace export -o %s.files %s"
        % (d, d, d))


def _status_line():
    """Once per process, 2 s after the hook started (off the critical path): the startup
    line's follow-up naming patches whose target is missing in this vLLM (always), or the
    whole patch summary with VLLM_PROFILING_VERBOSE=1."""
    try:
        bad = ["%s (%s)" % (p.name, p.reason) for p in _patches if p.status in (2, 4)]
        if bad or (CFG is not None and CFG.VERBOSE):
            n = sum(1 for p in _patches if p.status == 1)
            log("pid %d: %d patches installed%s" % (os.getpid(), n, "; unavailable: " + "; ".join(bad) if bad else ""))
    except Exception:
        pass


def register_patch(p):
    _patches.append(p)


def mode():
    return _mode
