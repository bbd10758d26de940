"""Patch bookkeeping and the lazy import hook.

A Patch names the vLLM module it needs; when that module finishes executing (or at once if
it is already imported) ``install(module)`` runs. Installers return None on success or a
reason string when the target is missing. Wrappers call ``p.fail(exc)`` on any exception in
hook code: the patch disables itself, is reported once (stderr and a py_patch_status record)
and vLLM continues as if untraced.
"""

import functools
import sys

from .. import runtime as rt

INSTALLED, UNAVAILABLE, DISABLED, FAILED = 1, 2, 3, 4
STATUS_NAMES = {INSTALLED: "installed", UNAVAILABLE: "unavailable", DISABLED: "disabled", FAILED: "failed"}


class Patch:
    __slots__ = ("name", "module", "switch", "installer", "status", "reason", "errors", "on", "restore")

    def __init__(self, name, module, switch, installer):
        self.name = name
        self.module = module
        self.switch = switch
        self.installer = installer
        self.status = 0
        self.reason = ""
        self.errors = 0
        self.on = False
        self.restore = []  # (owner, attr, original, owned, replacement) for uninstall

    def set_status(self, status, reason=""):
        self.status = status
        self.reason = reason
        self.on = status == INSTALLED
        rt.emit_patch_status(self.name, status, self.errors, reason)
        if status in (UNAVAILABLE, FAILED) and rt.CFG is not None and rt.CFG.VERBOSE:
            rt.log("patch %s %s: %s" % (self.name, STATUS_NAMES[status], reason))

    def reemit_status(self):
        if self.status:
            rt.emit_patch_status(self.name, self.status, self.errors, self.reason)

    def fail(self, exc):
        self.errors += 1
        rt.errors_total += 1
        if self.on:
            self.on = False
            self.status = FAILED
            self.reason = "%s: %s" % (type(exc).__name__, exc)
            rt.emit_patch_status(self.name, FAILED, self.errors, self.reason)
            rt.report_once("fail:" + self.name, "patch %s disabled after an error: %s (vLLM continues untraced by it)"
                           % (self.name, self.reason))

    def wrap(self, owner, attr, make):
        """Replace owner.attr by make(original). Returns False when owner has no attr."""
        orig = owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr, None)
        if orig is None:
            orig = getattr(owner, attr, None)
            if orig is None:
                return False
        if getattr(orig, "__pm_wrapped__", False):
            return True
        new = make(orig)
        try:
            functools.update_wrapper(new, orig)
        except Exception:
            pass
        new.__pm_wrapped__ = True
        new.__pm_original__ = orig
        own = attr in owner.__dict__ if hasattr(owner, "__dict__") else True
        self.restore.append((owner, attr, orig, own, new))
        setattr(owner, attr, new)
        return True

    def set_attr(self, owner, attr, value):
        """Replace owner.attr by value (an instance or module attribute), reversibly."""
        d = getattr(owner, "__dict__", None)
        own = d is None or attr in d
        orig = d.get(attr) if d is not None else getattr(owner, attr, None)
        setattr(owner, attr, value)
        self.restore.append((owner, attr, orig, own, value))

    def uninstall(self):
        """Put every replaced attribute back exactly (the original object itself; an attribute
        that was inherited is deleted again). An attribute that someone else replaced after
        us is left alone: theirs wins."""
        for ent in reversed(self.restore):
            owner, attr, orig, own = ent[:4]
            try:
                if len(ent) > 4:
                    d = getattr(owner, "__dict__", None)
                    cur = d.get(attr) if d is not None else getattr(owner, attr, None)
                    if cur is not ent[4]:
                        continue
                if own:
                    setattr(owner, attr, orig)
                else:
                    delattr(owner, attr)
            except Exception:
                pass
        self.restore = []
        self.on = False


# ---- import hook ------------------------------------------------------------------------
_pending = {}   # module name -> [Patch]
# modules whose import starts the runtime (patches register lazily at that moment)
WATCH = {
    "vllm.v1.core.block_pool", "vllm.v1.core.sched.scheduler", "vllm.v1.engine.core",
    "vllm.v1.worker.gpu_model_runner", "vllm.v1.worker.gpu.model_runner", "vllm.v1.cudagraph_dispatcher",
    "vllm.v1.worker.gpu.cudagraph_utils", "vllm.compilation.cuda_graph", "vllm.compilation.breakable_cudagraph",
    "vllm.v1.worker.gpu.mm.encoder_runner", "vllm.v1.utils",
}


LATE_ONLY = False  # set by profilemate_trace.late: the import hook never starts the runtime itself


def _run(modname, module):
    for p in _pending.pop(modname, ()):
        _install(p, module)


def _install(p, module):
    cfg = rt.CFG
    if p.switch and cfg is not None and not getattr(cfg, p.switch, True):
        p.set_status(DISABLED, "%s=0" % p.switch)
        return
    try:
        reason = p.installer(p, module)
    except Exception as e:  # an installer must never break the import of vLLM
        p.uninstall()
        p.set_status(UNAVAILABLE, "%s: %s" % (type(e).__name__, e))
        return
    if isinstance(reason, tuple):  # (status, reason), e.g. disabled by an option
        p.uninstall()
        p.set_status(reason[0], reason[1])
    elif reason:
        p.uninstall()
        p.set_status(UNAVAILABLE, reason)
    else:
        p.set_status(INSTALLED)


class _Finder:
    """Meta-path finder that only reacts to the vLLM modules that patches target."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in WATCH:
            return None
        spec = None
        for f in sys.meta_path:
            if f is self:
                continue
            fs = getattr(f, "find_spec", None)
            if fs is None:
                continue
            try:
                spec = fs(fullname, path, target)
            except Exception:
                spec = None
            if spec is not None:
                break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        orig_exec = loader.exec_module

        def exec_module(module, _orig=orig_exec, _name=fullname):
            _orig(module)
            try:
                if not rt._started:
                    if LATE_ONLY:
                        return  # an injected hook that has detached: nothing to patch
                    from .. import _boot

                    _boot.start_runtime()
                _run(_name, module)
            except Exception as e:  # never break vLLM's import
                rt.report_once("hook:" + _name, "post-import hook for %s failed: %r" % (_name, e))

        try:
            loader.exec_module = exec_module
        except Exception:
            return spec
        return spec


FINDER = _Finder()


def add(p):
    rt.register_patch(p)
    mod = sys.modules.get(p.module)
    # a module still executing (its import triggered ours) is patched when it finishes
    if mod is not None and not getattr(getattr(mod, "__spec__", None), "_initializing", False):
        _install(p, mod)
    else:
        WATCH.add(p.module)
        _pending.setdefault(p.module, []).append(p)


def install_finder():
    if FINDER not in sys.meta_path:
        sys.meta_path.insert(0, FINDER)


def remove_finder():
    """Late detach: forget pending patches and take the finder off sys.meta_path."""
    _pending.clear()
    try:
        while FINDER in sys.meta_path:
            sys.meta_path.remove(FINDER)
    except Exception:
        pass
