"""Activation. ``activate()`` runs at interpreter start (sitecustomize / .pth) and only
installs a meta-path finder; the ring, threads and patches start when a targeted vLLM
module is first imported. Nothing here may raise."""

import os
import sys

STARTUP_LINE = "[sitecustomize] vLLM Comprehensive Instrumentation Loaded"

_activated = False
_started_by = "import"
_cfg = None


def activate(started_by="import", quiet=None):
    global _activated, _started_by, _cfg
    if _activated:
        return
    _activated = True
    _started_by = started_by
    try:
        from . import config

        _cfg = config.load()
        if _cfg.DISABLE:
            _line("disabled by PROFILEMATE_PYHOOK_DISABLE", quiet)
            return
        from .patches import base

        base.install_finder()
        if "vllm" in sys.modules:
            start_runtime()
            _line(_summary(), quiet)
        else:
            _line("profilemate-trace pyhook; patches install when vllm is imported", quiet)
        for e in _cfg.errors:
            sys.stderr.write("[profilemate] pyhook: %s\n" % e)
    except Exception as e:  # never break interpreter start
        try:
            sys.stderr.write("[profilemate] pyhook: activation failed: %r\n" % (e,))
        except Exception:
            pass


def _line(detail, quiet):
    if quiet is None:
        quiet = os.environ.get("PROFILEMATE_PYHOOK_QUIET", "") not in ("", "0")
    if quiet:
        return
    try:
        sys.stderr.write("%s (%s)\n" % (STARTUP_LINE, detail))
        sys.stderr.flush()
    except Exception:
        pass


def _summary():
    from . import runtime as rt

    inst = [p.name for p in rt._patches if p.status == 1]
    unav = ["%s: %s" % (p.name, p.reason) for p in rt._patches if p.status in (2, 4)]
    s = "profilemate-trace pyhook, %s mode, %d patches installed" % (rt.mode(), len(inst))
    if unav:
        s += "; unavailable: " + "; ".join(unav)
    return s


def start_runtime():
    """First vLLM import seen: create the ring (and session dir in spill mode), register
    all patches (modules already imported are patched at once)."""
    from . import runtime as rt

    if rt._started:
        return
    from . import config

    cfg = _cfg or config.load()
    rt.start(cfg, _started_by)
    if rt.RING is None:
        return
    from .patches import all_patches, base

    for p in all_patches():
        base.add(p)


def report_unavailable():
    """One stderr line listing patches whose target is missing (called at exit in verbose
    mode and by tests); the same facts are in the ring as py_patch_status records."""
    from . import runtime as rt

    for p in rt._patches:
        if p.status == 2:
            rt.report_once("unavail:" + p.name, "patch %s unavailable: %s" % (p.name, p.reason))
