"""Identity snapshot of every vLLM module and class dictionary, for the tests that check that a
detached hook left every original object in place. Imports nothing of ours: the injection target
(real/inject_target_vllm.py), which must start with nothing of ours, uses it, as late_helpers does."""
import sys
import types


def snapshot(prefix="vllm"):
    """{(module, class or None, attr): object} for every class and module dict under prefix."""
    snap = {}
    for name, mod in list(sys.modules.items()):
        if mod is None or not (name == prefix or name.startswith(prefix + ".")):
            continue
        for k, v in list(vars(mod).items()):
            snap[(name, None, k)] = v
            if isinstance(v, type) and getattr(v, "__module__", None) == name:
                for ak, av in list(vars(v).items()):
                    snap[(name, k, ak)] = av
    return snap


def changed(before, after):
    """Entries whose object is not the same (identity), or that appeared or vanished."""
    mods = {k[0] for k in before}
    diff = [k for k in before if k in after and after[k] is not before[k]]
    diff += [("added",) + k for k in after if k not in before and k[0] in mods
             and not isinstance(after[k], types.ModuleType)]  # submodules imported meanwhile
    diff += [("removed",) + k for k in before if k not in after]
    return diff
