import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PYHOOK = os.path.dirname(HERE)
FAKE = os.path.join(HERE, "fakevllm")
if PYHOOK not in sys.path:
    sys.path.insert(0, PYHOOK)


from profilemate_trace.decode import decode  # noqa: E402,F401


def pytest_configure(config):
    config.addinivalue_line("markers", "real_vllm: needs a real vLLM venv (pyhook/tests/install_vllm_cpu.sh)")


class Hook:
    def __init__(self, rt):
        self.rt = rt

    def drain(self, names=None):
        self.rt.flush()
        recs = decode(self.rt.RING.read_available())
        if names is not None:
            recs = [r for r in recs if r["_name"] in names]
        return recs


@pytest.fixture(scope="session")
def hook():
    """Activate the hook in this process against the vLLM-shaped fake package, collecting
    (PROFILEMATE_START=graph) into the ring without spilling to disk."""
    os.environ["PROFILEMATE_START"] = "graph"
    os.environ["PROFILEMATE_PYHOOK_SPILL"] = "0"
    os.environ["PROFILEMATE_PYHOOK_QUIET"] = "1"
    os.environ["PROFILEMATE_PYHOOK_VLLM_SCOPES"] = "1"
    os.environ.pop("PROFILEMATE_CONTROL_SOCKET", None)
    if FAKE not in sys.path:
        sys.path.insert(0, FAKE)
    from profilemate_trace import _boot
    from profilemate_trace import runtime as rt

    _boot.activate("test", quiet=True)
    import vllm.v1.core.block_pool  # noqa: F401  (first watched import starts the runtime)
    import vllm.v1.core.sched.scheduler  # noqa: F401
    import vllm.v1.engine.core  # noqa: F401
    import vllm.v1.worker.gpu_model_runner  # noqa: F401
    import vllm.v1.worker.gpu.model_runner  # noqa: F401
    import vllm.compilation.breakable_cudagraph  # noqa: F401
    import vllm.v1.utils  # noqa: F401
    assert rt.RING is not None and rt.ON
    h = Hook(rt)
    h.drain()
    return h
