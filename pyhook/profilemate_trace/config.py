"""Configuration: defaults < config file (PROFILEMATE_PYHOOK_CONFIG) < environment.

Switches keep the names of the original ProfilingConfig. Each can be set in the environment
either bare (``ENABLE_KV_CACHE_TRACKING=0``) or prefixed (``VLLM_PROFILING_ENABLE_KV_CACHE_TRACKING=0``,
which wins over the bare name). The config file is JSON (``*.json``) or TOML (``*.toml``): a flat
object whose keys are the same names, e.g. ``{"ENABLE_MOE_EXPERT_TRACKING": false}``; keys may also
be given in lower case.
"""

import json
import os

SWITCHES = (
    "ENABLE_CUDA_GRAPH_TRACKING",
    "ENABLE_KV_CACHE_TRACKING",
    "ENABLE_MOE_EXPERT_TRACKING",
    "ENABLE_FORWARD_PASS_TIMING",
    "ENABLE_CPU_TIMING",
    "ENABLE_BATCH_UTILIZATION_TRACKING",
    "ENABLE_PREEMPTION_TRACKING",
    "ENABLE_ENCODER_DECODER_TIMING",
    "USE_CUDA_EVENTS",
)

# name: (default, parser, environment names in precedence order)
_INT = int


def _bool(v):
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on", "y", "t"):
        return True
    if s in ("0", "false", "no", "off", "n", "f", ""):
        return False
    raise ValueError("not a boolean: %r" % (v,))


OPTIONS = {
    # original ProfileMate variables
    "PROFILING_DIR": ("/tmp/vllm_profiling", str, ("VLLM_PROFILING_DIR",)),
    "VERBOSE": (False, _bool, ("VLLM_PROFILING_VERBOSE",)),
    "LOG_INTERVAL": (100, _INT, ("VLLM_PROFILING_LOG_INTERVAL",)),
    "CUDA_EVENT_BATCH_SIZE": (100, _INT, ("VLLM_PROFILING_CUDA_EVENT_BATCH_SIZE", "CUDA_EVENT_BATCH_SIZE")),
    # profilemate additions
    "DISABLE": (False, _bool, ("PROFILEMATE_PYHOOK_DISABLE",)),
    "RING_MB": (8, _INT, ("PROFILEMATE_PYHOOK_RING_MB",)),
    "SPILL": (True, _bool, ("PROFILEMATE_PYHOOK_SPILL",)),
    "SPILL_INTERVAL_MS": (200, _INT, ("PROFILEMATE_PYHOOK_SPILL_MS",)),
    "AUTO_EXPORT": (True, _bool, ("PROFILEMATE_PYHOOK_AUTO_EXPORT",)),
    "VLLM_SCOPES": (False, _bool, ("PROFILEMATE_PYHOOK_VLLM_SCOPES",)),
    "MOE_HIST_BINS": (20, _INT, ("PROFILEMATE_PYHOOK_MOE_HIST_BINS",)),
    "MOE_READBACK_STEPS": (0, _INT, ("PROFILEMATE_PYHOOK_MOE_READBACK_STEPS",)),  # 0: LOG_INTERVAL
    "MOE_COSELECTION": (True, _bool, ("PROFILEMATE_PYHOOK_MOE_COSELECTION",)),
    "ORPHAN_TIMEOUT_S": (30, _INT, ("PROFILEMATE_ORPHAN_TIMEOUT",)),
}
for _s in SWITCHES:
    OPTIONS[_s] = (True, _bool, ("VLLM_PROFILING_" + _s, _s))


class Config:
    """Plain attribute bag; ``errors`` lists problems (reported once on the startup line)."""

    def __init__(self, values, errors, source_file):
        self.__dict__.update(values)
        self.errors = errors
        self.source_file = source_file

    def as_dict(self):
        return {k: getattr(self, k) for k in OPTIONS}


def _read_file(path):
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith(".toml"):
        import tomllib  # Python 3.11+

        data = tomllib.loads(raw.decode("utf-8"))
    else:
        data = json.loads(raw.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError("config file must hold an object/table")
    # accept [profilemate] / [pyhook] sections in TOML
    for sect in ("profilemate", "pyhook", "ProfilingConfig"):
        if isinstance(data.get(sect), dict):
            data = dict(data, **data[sect])
    return data


def load(environ=None):
    env = os.environ if environ is None else environ
    values = {k: d for k, (d, _p, _e) in OPTIONS.items()}
    errors = []
    path = env.get("PROFILEMATE_PYHOOK_CONFIG") or None
    if path:
        try:
            data = _read_file(path)
            for key, v in data.items():
                if isinstance(v, dict):
                    continue
                name = str(key).upper()
                if name.startswith("VLLM_PROFILING_"):
                    name = name[len("VLLM_PROFILING_"):]
                    name = {"DIR": "PROFILING_DIR"}.get(name, name)
                if name not in OPTIONS:
                    errors.append("config %s: unknown key %r" % (path, key))
                    continue
                try:
                    values[name] = OPTIONS[name][1](v)
                except (TypeError, ValueError) as e:
                    errors.append("config %s: %s: %s" % (path, key, e))
        except Exception as e:  # unreadable file: keep defaults, say so once
            errors.append("config %s: %s" % (path, e))
    for name, (_d, parse, envs) in OPTIONS.items():
        for ev in envs:
            if ev in env:
                try:
                    values[name] = parse(env[ev])
                except (TypeError, ValueError) as e:
                    errors.append("%s: %s" % (ev, e))
                break
    return Config(values, errors, path)
