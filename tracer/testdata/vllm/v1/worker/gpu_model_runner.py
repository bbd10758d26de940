import fakecuda
from vllm.v1.sample.sampler import Sampler


def layer(depth):
    # A deep eager stack below execute_model, like torch modules inside the model forward.
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
