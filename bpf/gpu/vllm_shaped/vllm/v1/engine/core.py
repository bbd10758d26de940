import torch

from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.worker.gpu_model_runner import GPUModelRunner


class EngineCore:
    def __init__(self, dev, depth=10):
        self.scheduler = Scheduler(dev)
        self.runner = GPUModelRunner(dev, depth)

    def step(self):
        ids = self.scheduler.schedule()
        h = self.runner.execute_model(ids)
        tok = self.runner.sample_tokens(h)
        self.scheduler.update_from_output(ids)
        torch.cuda.synchronize()
        return tok
