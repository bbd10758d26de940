"""profilemate-trace Python hook, activated by ``export PYTHONPATH=<repo>/pyhook:$PYTHONPATH``.

Prints ``[sitecustomize] vLLM Comprehensive Instrumentation Loaded (...)`` on stderr, installs
a lazy import hook (patches vLLM only when it is imported) and then runs the next
``sitecustomize`` found later on sys.path (e.g. Debian's), so chaining is preserved.
"""


def _pm_activate():
    try:
        from profilemate_trace import _boot

        _boot.activate("sitecustomize")
    except Exception as e:  # never break interpreter start
        import sys

        try:
            sys.stderr.write("[profilemate] pyhook: activation failed: %r\n" % (e,))
        except Exception:
            pass


def _pm_chain():
    """Execute the next sitecustomize on sys.path after this file's directory."""
    import importlib.machinery
    import importlib.util
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    seen = False
    rest = []
    for p in sys.path:
        try:
            ap = os.path.abspath(p or os.getcwd())
        except Exception:
            continue
        if ap == here:
            seen = True
            continue
        if seen:
            rest.append(p)
    if not seen:
        return
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.origin is None or os.path.abspath(spec.origin) == os.path.abspath(__file__):
        return
    try:
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules["_profilemate_chained_sitecustomize"] = mod
    except Exception as e:
        try:
            sys.stderr.write("[profilemate] pyhook: chained sitecustomize %s failed: %r\n" % (spec.origin, e))
        except Exception:
            pass


_pm_activate()
_pm_chain()
