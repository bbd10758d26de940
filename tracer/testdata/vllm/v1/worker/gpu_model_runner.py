import fakecuda
from vllm.v1.sample.sampler import Sampler


def layer(depth):
    # A deep eager stack below execute_model, like torch modules inside the model forward. The
    # locals make each frame ~300 bytes, as a module's forward: 20 frames fit the 8 KiB data-stack
    # block the BPF walk reads in one go, 45 do not (tracer_test.go TestWalkBeyondTheBlock).
    p0 = p1 = p2 = p3 = p4 = p5 = p6 = p7 = p8 = p9 = p10 = p11 = None  # noqa: F841
    p12 = p13 = p14 = p15 = p16 = p17 = p18 = p19 = p20 = p21 = p22 = p23 = None  # noqa: F841
    if depth:
        return layer(depth - 1)
    fakecuda.launch(5)
    fakecuda.launch_ex()
    fakecuda.graph()


class GPUModelRunner:
    def __init__(self, depth=20):
        self.depth = depth
        self.sampler = Sampler()

    def _prepare_inputs(self):
        for _ in range(3):
            fakecuda.memset32(256)

    def execute_model(self):
        self._prepare_inputs()
        layer(self.depth)

    def sample_tokens(self):
        self.sampler.forward()
        fakecuda.d2h(64)
        fakecuda.stream_sync()
